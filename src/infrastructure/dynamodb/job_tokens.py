"""The job item's workflow sets: waiting tokens, answered and silenced digests.

Each set grows with one targeted `ADD` (commutative: concurrent writers never lose each
other's entries) and is never written by `save()`, whose snapshot could be stale."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from src.application.ports.job_repository import AttachOutcome
from src.domain.job_status import TERMINAL, CallbackStatus
from src.domain.task_token import TaskToken
from src.infrastructure.dynamodb.due_index import DUE_AT_ONCE, HEARTBEAT_DUE
from src.infrastructure.dynamodb.errors import is_condition_failure, lost_race
from src.infrastructure.dynamodb.job_mapping import (
    ANSWERED_TOKENS,
    HEARTBEAT_STOPPED,
    WAITING_TOKENS,
)


async def attach(
    client: Any, table: str, job_id: str, token: TaskToken, max_waiting: int
) -> AttachOutcome:
    """Add a workflow to a running job. `version` moves too, so a terminal write made
    from a snapshot without this token fails and is redone with it: nobody is missed."""
    terminal = {f":t{i}": {"S": s.value} for i, s in enumerate(TERMINAL)}
    try:
        await client.update_item(
            TableName=table,
            Key={"jobId": {"S": job_id}},
            UpdateExpression="ADD #w :token, version :one SET callbackStatus = :pending, "
            "heartbeatDue = :hb, nextHeartbeatAt = if_not_exists(nextHeartbeatAt, :hb0)",
            ConditionExpression="attribute_exists(jobId) AND NOT #s IN ("
            + ", ".join(terminal)
            + ") AND (attribute_not_exists(#w) OR size(#w) < :max)",
            ExpressionAttributeNames={"#w": WAITING_TOKENS, "#s": "status"},
            ExpressionAttributeValues={
                ":token": {"SS": [token.reveal()]},
                ":one": {"N": "1"},
                ":pending": {"S": CallbackStatus.PENDING.value},
                ":hb": {"S": HEARTBEAT_DUE},
                ":hb0": {"S": DUE_AT_ONCE},
                ":max": {"N": str(max_waiting)},
                **terminal,
            },
        )
    except ClientError as err:
        if lost_race(err):
            return AttachOutcome.REFUSED  # ended or full meanwhile: the caller reads again
        raise
    return AttachOutcome.ATTACHED


async def add_digests(
    client: Any, table: str, job_id: str, name: str, digests: Iterable[str]
) -> None:
    values = sorted(set(digests))
    if not values:
        return
    try:
        await client.update_item(
            TableName=table,
            Key={"jobId": {"S": job_id}},
            UpdateExpression="ADD #n :d",
            ConditionExpression="attribute_exists(jobId)",
            ExpressionAttributeNames={"#n": name},
            ExpressionAttributeValues={":d": {"SS": values}},
        )
    except ClientError as err:
        if not is_condition_failure(err):  # the job item expired: nothing left to mark
            raise


__all__ = ["ANSWERED_TOKENS", "HEARTBEAT_STOPPED", "add_digests", "attach"]
