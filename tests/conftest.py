"""Fixtures shared by the integration and e2e layers: one embedded stack per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from src.local.stack import EmbeddedStack


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(name_prefix="session-").start()
    yield stack
    stack.stop()
