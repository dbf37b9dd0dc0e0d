"""Fixtures the e2e modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from src.local.stack import EmbeddedStack
from tests.support.service_process import ServiceProcess

# Quick polls and receives: e2e flows wait on them.
FAST = {"POLLING_INTERVAL_MS": "200", "POLLER_TICK_MS": "200", "SQS_WAIT_TIME_SECONDS": "1"}


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Replicas a test starts go in this list; all are stopped at the end."""
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def module_env(embedded_stack: EmbeddedStack, request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of one isolated set of resources, named after the test module."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    return {**embedded_stack.env(embedded_stack.provision(f"{name}-")), **FAST}


@pytest.fixture(scope="module")
def module_service(
    module_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """One replica of the service on the module's resources, for the whole module."""
    process = ServiceProcess(module_env, tmp_path_factory.mktemp("service") / "service.log")
    yield process.start()
    process.stop()
