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
    """`attempts` counts claims: one is added when a replica takes the job to poll it
    (or to dispatch it), so an attempt that dies or fails the same way every time still
    counts and the job ends within its bounds. `last_error` says why the last one failed."""

    attempts: int
    next_at: datetime
    deadline: datetime
    last_error: str | None = None

    @classmethod
    def start(cls, now: datetime, policy: PollPolicy) -> PollState:
        return cls(attempts=0, next_at=now, deadline=now + policy.deadline)

    def claimed(self) -> PollState:
        return PollState(self.attempts + 1, self.next_at, self.deadline, self.last_error)

    def rescheduled(self, now: datetime, policy: PollPolicy, error: str | None = None) -> PollState:
        """The claimed attempt is over: the next one backs off from it."""
        return PollState(
            self.attempts, now + policy.interval_after(self.attempts), self.deadline, error
        )

    @property
    def polls_after_first(self) -> int:
        return max(0, self.attempts - 1)

    def exhausted(self, now: datetime, policy: PollPolicy) -> bool:
        return self.polls_after_first >= policy.max_attempts or now >= self.deadline

    def overrun(self, policy: PollPolicy) -> bool:
        """Just claimed, yet the attempts were used up: the earlier ones never concluded
        (they failed or their replica died). (Past the deadline it is still polled once:
        an export that is ready by now is taken.)"""
        return self.polls_after_first > policy.max_attempts
