"""StepFunctionsCallbacks: SendTaskSuccess / Failure / Heartbeat, errors translated."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from src.application.ports.workflow_callbacks import (
    CallbackRejected,
    CallbackUnavailable,
    TaskClosed,
)
from src.domain.task_token import TaskToken
from src.observability.metrics import CALLBACKS

# As AWS documents them: the task is closed (the workflow stopped waiting) ...
CLOSED = frozenset({"TaskDoesNotExist", "TaskTimedOut"})
# ... or the request can never succeed ("InvalidToken: the provided token is not valid"),
# which says nothing about whether anyone still waits. Neither is worth retrying.
PERMANENT = CLOSED | {"InvalidToken", "InvalidOutput", "ValidationException"}


class StepFunctionsCallbacks:  # implements WorkflowCallbacks
    """Throttling, 5xx and connection errors are retried by botocore's standard retry
    mode (exponential backoff with jitter) before they surface as CallbackUnavailable."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def send_success(self, token: TaskToken, output: Mapping[str, object]) -> None:
        await self._call(
            "success",
            self._client.send_task_success,
            taskToken=token.reveal(),
            output=json.dumps(output),
        )

    async def send_failure(self, token: TaskToken, error: str, cause: str) -> None:
        await self._call(
            "failure",
            self._client.send_task_failure,
            taskToken=token.reveal(),
            error=error,
            cause=cause,
        )

    async def send_heartbeat(self, token: TaskToken) -> None:
        await self._call("heartbeat", self._client.send_task_heartbeat, taskToken=token.reveal())

    @staticmethod
    async def _call(kind: str, operation: Callable[..., Awaitable[Any]], **kwargs: Any) -> None:
        """Every outcome is counted: delivered, rejected (permanent) or unavailable."""
        try:
            await operation(**kwargs)
        except ClientError as err:
            # Never pass botocore's message on: it may echo request parameters.
            code = err.response.get("Error", {}).get("Code", "Unknown")
            if code in PERMANENT:
                CALLBACKS.labels(kind, "rejected", code).inc()
                raise (TaskClosed if code in CLOSED else CallbackRejected)(code) from None
            CALLBACKS.labels(kind, "unavailable", code).inc()
            raise CallbackUnavailable(code) from None
        except BotoCoreError as err:
            CALLBACKS.labels(kind, "unavailable", type(err).__name__).inc()
            raise CallbackUnavailable(type(err).__name__) from None
        CALLBACKS.labels(kind, "delivered", "").inc()
