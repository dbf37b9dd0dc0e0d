"""One aiohttp ClientSession for the process, closed on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


async def open_http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=128, ttl_dns_cache=60)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        yield session
