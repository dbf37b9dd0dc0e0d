"""The fault-injection suite prints one table row per scenario at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.workload import RESULTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    header = f"{'scenario':<34}{'jobs':>6}{'faults injected':>17}{'jobs lost':>11}{'duplicate callbacks':>21}{'refused extra sends':>21}"
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line(header)
    for r in RESULTS:
        terminalreporter.write_line(
            f"{r.scenario:<34}{r.jobs:>6}{r.faults:>17}{r.lost:>11}{r.duplicates:>21}{r.refused_sends:>21}"
        )


@pytest.fixture(autouse=True)
def _fault_free(embedded_stack: Any) -> Any:
    """Whatever a scenario injected, the next one starts clean."""
    yield
    embedded_stack.aws.set_fault(None)
    embedded_stack.sandbox.set_fault(None)
