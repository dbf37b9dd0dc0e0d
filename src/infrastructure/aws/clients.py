"""aioboto3 clients: one session, each client opened once and closed on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aioboto3
from botocore.config import Config

from src.infrastructure.config.settings import Settings

# botocore's standard mode retries throttling, 5xx and connection errors with
# exponential backoff and jitter; permanent errors are raised at once.
_RETRIES = {"mode": "standard", "max_attempts": 5}


def new_session(settings: Settings) -> aioboto3.Session:
    return aioboto3.Session(region_name=settings.aws_region)


async def open_client(
    session: aioboto3.Session, service: str, settings: Settings
) -> AsyncIterator[Any]:
    """A dependency-injector Resource: yields the client, closes it at shutdown.
    AWS_ENDPOINT, when set, is used by every client (LocalStack, the emulator)."""
    # read_timeout above SQS's 20 s long poll; bounded so a hung call cannot outlive
    # the leases that guard the work it belongs to.
    config = Config(
        retries=_RETRIES,  # type: ignore[arg-type]
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=30,
    )
    async with session.client(  # type: ignore[call-overload]
        service, endpoint_url=settings.aws_endpoint, region_name=settings.aws_region, config=config
    ) as client:
        yield client
