"""Helpers for the adapter tests: aioboto3 clients built the way the service builds them
(`open_client`, same retry config), an aiohttp session, sync boto3 clients for arranging
and asserting, and one isolated set of resources per test module."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import aiohttp
import boto3
import pytest

from src.infrastructure.aws.clients import open_client
from src.infrastructure.config.settings import Settings
from src.local.provision import Resources
from src.local.stack import EmbeddedStack

REGION = "us-east-1"
_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def unique_prefix(name: str) -> str:
    """`it-<name>-<8 hex>-`: resources of one module never meet another's."""
    return f"it-{name}-{uuid.uuid4().hex[:8]}-"


def provision_for(stack: EmbeddedStack, name: str) -> Resources:
    return stack.provision(unique_prefix(name))


@functools.cache
def _aioboto3_session() -> aioboto3.Session:
    """One session for the whole run, like the service's one session per process (its
    loaded service models make each new client cheap). Clients stay per test: they belong
    to the test's event loop."""
    return aioboto3.Session(region_name=REGION, **_CREDENTIALS)


@asynccontextmanager
async def service_client(stack: EmbeddedStack, service: str) -> AsyncIterator[Any]:
    """An aioboto3 client from the service's own `open_client` (its retry config and
    endpoint handling); the credentials are explicit because the test process has none."""
    settings = Settings(aws_endpoint=stack.aws.endpoint_url, aws_region=REGION)
    clients = open_client(_aioboto3_session(), service, settings)
    client = await anext(clients)
    try:
        yield client
    finally:
        await clients.aclose()


def sync_client(stack: EmbeddedStack, service: str) -> Any:
    """boto3 client for arranging and asserting state."""
    return boto3.client(
        service, endpoint_url=stack.aws.endpoint_url, region_name=REGION, **_CREDENTIALS
    )


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def new_tag() -> Callable[[], str]:
    """Unique first token of a sandbox export id, so counters never mix between tests."""
    return lambda: f"t{uuid.uuid4().hex[:10]}"
