"""Fixtures the e2e modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.service_process import ServiceProcess


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Replicas a test starts go in this list; all are stopped at the end."""
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.stop()
