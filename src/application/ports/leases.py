"""Named leases: one replica at a time does a given periodic chore."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class LeaseLost(Exception):
    """A renewal was refused: someone else holds the work now. Stop, keep nothing."""


class Leases(Protocol):
    """`acquire` is one conditional write: it succeeds when the lease is free, expired,
    or already held by `owner` (renewal)."""

    async def acquire(self, name: str, owner: str, until: datetime, now: datetime) -> bool: ...
