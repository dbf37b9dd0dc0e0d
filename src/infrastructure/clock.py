"""SystemClock: real time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


class SystemClock:  # implements Clock
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
