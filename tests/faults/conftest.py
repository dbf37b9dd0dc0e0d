"""The fault-injection suite's rows go on each test's report; tests/conftest.py prints
them as one table at the end of the run (under xdist the rows are made on a worker)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.workload import RESULTS, ROW_PROPERTY


@pytest.fixture(autouse=True)
def _report_rows(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever rows the test added (after its own changes to them) go on its report."""
    first = len(RESULTS)
    yield
    for result in RESULTS[first:]:
        request.node.user_properties.append((ROW_PROPERTY, dataclasses.asdict(result)))


@pytest.fixture(autouse=True)
def _fault_free(embedded_stack: Any) -> Any:
    """Whatever a scenario injected, the next one starts clean."""
    yield
    embedded_stack.aws.set_fault(None)
    embedded_stack.sandbox.set_fault(None)
