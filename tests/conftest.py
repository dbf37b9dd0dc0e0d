"""Fixtures shared by the integration and e2e layers: one embedded stack per session, and
one plain-moto emulator child for the tests that prove the service without our patches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from src.local.stack import EmbeddedStack
from tests.support.plain_emulator import PlainEmulator


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(name_prefix="session-").start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def plain_emulator() -> Iterator[PlainEmulator]:
    """moto without our Step Functions patches, in a child process (the patches are global
    to this process). Resources on it need their own `name_prefix`: the session shares it."""
    with PlainEmulator() as emulator:
        yield emulator
