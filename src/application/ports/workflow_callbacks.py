"""Answers the Step Functions workflow waiting on a task token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from src.domain.task_token import TaskToken


class CallbackError(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class CallbackRejected(CallbackError):
    """The workflow will never accept this token again (used, timed out, unknown)."""


class TaskClosed(CallbackRejected):
    """The task is closed (TaskTimedOut, TaskDoesNotExist): its workflow stopped waiting.
    Unlike InvalidToken ("the provided token is not valid"), this means someone gave up."""


class CallbackUnavailable(CallbackError):
    """Throttling, 5xx or network trouble that outlasted the adapter's retries."""


class WorkflowCallbacks(Protocol):
    """Implementations retry what is retryable and raise CallbackRejected for what
    never will be, CallbackUnavailable when retries ran out."""

    async def send_success(self, token: TaskToken, output: Mapping[str, object]) -> None: ...

    async def send_failure(self, token: TaskToken, error: str, cause: str) -> None: ...

    async def send_heartbeat(self, token: TaskToken) -> None: ...
