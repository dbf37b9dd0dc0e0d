"""How far the files of a ready export have been handed to the workers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DispatchProgress:
    """The cursor is written ahead: a chunk's work items go out only after the cursor
    has moved past it, so a dispatcher that dies never leaves a chunk to be sent twice
    (at worst its items stay unsent: the reaper sends them once the job stalls). Files
    [0, cursor) are handed out, but for `sent`: when some of a chunk's work items could
    not be queued, the cursor goes back to the chunk and `sent` keeps the ones that
    went out, so whoever takes it up sends only the others. `attempts` counts the claims
    made since the cursor last moved (the dispatcher that starts is the first), so a
    chunk that fails, or whose replica dies, the same way every time ends the job
    instead of being taken up forever; a dispatch that keeps moving is never cut short."""

    cursor: int = 0
    attempts: int = 1
    last_error: str | None = None
    sent: frozenset[int] = frozenset()

    def claimed(self) -> DispatchProgress:
        return DispatchProgress(self.cursor, self.attempts + 1, self.last_error, self.sent)

    def advanced(self, to: int) -> DispatchProgress:
        return DispatchProgress(to, 0, None)

    def failed(self, error: str) -> DispatchProgress:
        return DispatchProgress(self.cursor, self.attempts, error, self.sent)

    def overrun(self, max_attempts: int) -> bool:
        return self.attempts > max_attempts
