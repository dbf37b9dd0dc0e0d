"""aioboto3 clients: one session, each client opened once and closed on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import structlog
from botocore.config import Config

from src.infrastructure.config.settings import Settings
from src.observability.metrics import AWS_CALLS

log = structlog.get_logger(__name__)

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
        client.meta.events.register("before-parameter-build", _count_call)
        yield client


def _count_call(params: Any, model: Any, **_: Any) -> None:
    """Every API call is counted (export_aws_calls_total: the bill, and the bench's
    figures; SDK retries are not counted again). At debug level each DynamoDB call is
    logged with its table and key, never other parameters (a task token or a presigned
    URL may be among them)."""
    AWS_CALLS.labels(model.service_model.service_id, model.name).inc()
    if isinstance(params, dict) and "TableName" in params:
        log.debug(
            "aws call",
            operation=model.name,
            table=params.get("TableName"),
            index=params.get("IndexName"),
            key=params.get("Key"),
        )
