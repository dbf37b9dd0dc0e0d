"""Fixtures shared by the integration and e2e layers: one embedded stack per session (per
xdist worker), and one plain-moto emulator child for the tests that prove the service
without our patches. Also the order in which test files are handed to xdist workers, and
the fault suite's table (its rows are made on the workers, printed by the controller)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from src.local.stack import EmbeddedStack
from tests.faults.workload import ROW_PROPERTY, table_lines
from tests.support.plain_emulator import PlainEmulator

# The files that take longest (mostly waiting on default leases and timeouts), longest
# first. `make test` hands whole files to xdist workers in collection order, so these go
# first: a long file started last would hold up the end of the run.
LONGEST_FIRST = (
    "tests/e2e/test_field_recovery.py",
    "tests/bench/test_bench_smoke.py",
    "tests/faults/test_fault_injection.py",
    "tests/e2e/test_resilience.py",
    "tests/e2e/test_admin_api.py",
    "tests/e2e/test_api_schema.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault-injection table, one row per scenario, in the order they ran."""
    rows = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "teardown"
        for key, value in getattr(report, "user_properties", ())
        if key == ROW_PROPERTY
    ]
    if rows:
        terminalreporter.write_sep("=", "fault injection")
        for line in table_lines(rows):
            terminalreporter.write_line(line)
