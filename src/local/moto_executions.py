"""Two moto Step Functions races that concurrent executions run into.

1. An execution is RUNNING before it can be called back.

``Execution.start`` marks the execution RUNNING and starts its worker thread; the worker
builds the execution's environment (``exec_worker.env``) only once that thread runs.
``SendTaskHeartbeat``, ``SendTaskSuccess`` and ``SendTaskFailure`` look for their token
in the environment of every RUNNING execution in turn, so one execution whose thread has
not run yet makes them fail with ``AttributeError`` (an HTTP 500) for every token looked
up after it. Under load (2,000 executions started while 2,000 others wait, all on one
GIL) that happened to dozens of heartbeats, and their workflows timed out (found by
bench/inflight.py). On AWS an execution can be called back from the moment StartExecution
answers; here the environment is built before the thread starts, and the thread uses it.

2. Parsing is not thread-safe. Each execution parses its state machine's definition on its
own thread, and moto's ``Preprocessor`` keeps its query-language scopes in a list that is
a class attribute, shared by every parse: two parses at once push and pop each other's
scopes, and one of them fails (``IndexError``) or reads the other's. The failed execution
stays RUNNING forever without running its first task (bench/inflight.py lost one of 1,000
that way: its message was never sent). Here each ``Preprocessor`` gets its own list.

Only the patched (embedded) emulator applies this; plain moto stays as released."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def apply() -> None:
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
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

    init: Callable[..., None] = Preprocessor.__init__

    @functools.wraps(init)
    def own_scopes(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._query_language_per_scope = []  # not the class's list, shared by every parse

    Preprocessor.__init__ = own_scopes  # type: ignore[method-assign]
