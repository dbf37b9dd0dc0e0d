"""How far the files of a ready export have been handed to the workers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DispatchProgress:
    """Files [0, cursor) have had their work items sent. `attempts` counts the
    claims made since the cursor last moved (the dispatcher that starts is the first), so
    a chunk that fails, or whose replica dies, the same way every time ends the job
    instead of being taken up forever; a dispatch that keeps moving is never cut short."""

    cursor: int = 0
    attempts: int = 1
    last_error: str | None = None

    def claimed(self) -> DispatchProgress:
        return DispatchProgress(self.cursor, self.attempts + 1, self.last_error)

    def advanced(self, to: int) -> DispatchProgress:
        return DispatchProgress(to, 0, None)

    def failed(self, error: str) -> DispatchProgress:
        return DispatchProgress(self.cursor, self.attempts, error)

    def overrun(self, max_attempts: int) -> bool:
        return self.attempts > max_attempts
