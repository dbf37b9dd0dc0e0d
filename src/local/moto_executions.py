"""A moto Step Functions race: an execution is RUNNING before it can be called back.

``Execution.start`` marks the execution RUNNING and starts its worker thread; the worker
builds the execution's environment (``exec_worker.env``) only once that thread runs.
``SendTaskHeartbeat``, ``SendTaskSuccess`` and ``SendTaskFailure`` look for their token
in the environment of every RUNNING execution in turn, so one execution whose thread has
not run yet makes them fail with ``AttributeError`` (an HTTP 500) for every token looked
up after it. Under load (2,000 executions started while 2,000 others wait, all on one
GIL) that happened to dozens of heartbeats, and their workflows timed out (found by
bench/inflight.py). On AWS an execution can be called back from the moment StartExecution
answers; here the environment is built before the thread starts, and the thread uses it.

Only the patched (embedded) emulator applies this; plain moto stays as released."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def apply() -> None:
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    build: Callable[[Any], Any] = ExecutionWorker._get_evaluation_environment
    start: Callable[[Any], None] = ExecutionWorker.start

    @functools.wraps(build)
    def environment(self: Any) -> Any:
        return self.env if self.env is not None else build(self)

    @functools.wraps(start)
    def started(self: Any) -> None:
        if self.env is None:
            self.env = build(self)  # callable back from now on, as on AWS
        start(self)

    ExecutionWorker._get_evaluation_environment = environment  # type: ignore[method-assign]
    ExecutionWorker.start = started  # type: ignore[method-assign]
