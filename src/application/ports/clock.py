"""Time, as the use cases see it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Current time (timezone-aware UTC) and waiting."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...
