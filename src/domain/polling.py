"""When to ask the Export API again, and when to stop asking."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Backs off from `first_interval` by `factor` per attempt up to `max_interval`;
    gives up after `max_attempts` polls *after the first status check* (made at intake,
    as the original service did) or once `deadline` has passed since the start."""

    first_interval: timedelta = timedelta(seconds=5)
    max_interval: timedelta = timedelta(seconds=60)
    factor: float = 1.5
    max_attempts: int = 120
    deadline: timedelta = timedelta(hours=1)

    def interval_after(self, attempts: int) -> timedelta:
        seconds = self.first_interval.total_seconds() * self.factor ** max(0, attempts - 1)
        return min(timedelta(seconds=seconds), self.max_interval)


@dataclass(frozen=True, slots=True)
class PollState:
    attempts: int
    next_at: datetime
    deadline: datetime

    @classmethod
    def start(cls, now: datetime, policy: PollPolicy) -> PollState:
        return cls(attempts=0, next_at=now, deadline=now + policy.deadline)

    def after_attempt(self, now: datetime, policy: PollPolicy) -> PollState:
        attempts = self.attempts + 1
        return PollState(attempts, now + policy.interval_after(attempts), self.deadline)

    @property
    def polls_after_first(self) -> int:
        return max(0, self.attempts - 1)

    def exhausted(self, now: datetime, policy: PollPolicy) -> bool:
        return self.polls_after_first >= policy.max_attempts or now >= self.deadline
