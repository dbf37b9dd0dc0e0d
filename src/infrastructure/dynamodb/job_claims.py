"""Claims on a job found through the due-index, and the dispatch cursor its dispatcher moves.

Targeted updates, not save(): the index holds keys only, and a claim must not depend on
a snapshot read just before (another replica's claim, an attached workflow, or a legacy
job's file counts move `version` meanwhile). Each write moves `version` too, so a stale snapshot saved elsewhere cannot undo
a claim or move the cursor back. `dueAt` moves with the lease: a held job is not due."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from src.domain.dispatch_progress import DispatchProgress
from src.domain.job_status import JobStatus
from src.domain.time import iso_ms
from src.infrastructure.dynamodb.codec import to_attr
from src.infrastructure.dynamodb.due_index import DISPATCH
from src.infrastructure.dynamodb.errors import lost_race

_HELD = "#s = :downloading AND leaseOwner = :owner AND dispatchCursor = :cursor"


async def advance(
    client: Any,
    table: str,
    job_id: str,
    owner: str,
    cursor: int,
    to: int | None,
    until: datetime,
    now: datetime | None = None,
) -> bool:
    values: dict[str, Any] = {
        ":downloading": {"S": JobStatus.DOWNLOADING.value},
        ":owner": {"S": owner},
        ":cursor": {"N": str(cursor)},
        ":one": {"N": "1"},
    }
    sets: list[str] = []
    removes = ["dispatchLastError", "dispatchSent"]
    if to == cursor:  # a renewal
        sets, removes = ["leaseExpiresAt = :until", "dueAt = :until"], []
        values[":until"] = {"S": iso_ms(until)}
    elif to is None:  # every file dispatched: nothing left to lease
        removes += ["dispatchCursor", "dispatchAttempts", "leaseOwner", "leaseExpiresAt"]
        removes += ["dueKind", "dueAt"]
    else:
        sets = ["dispatchCursor = :to", "dispatchAttempts = :zero"]
        sets += ["leaseExpiresAt = :until", "dueAt = :until"]
        values |= {":to": {"N": str(to)}, ":zero": {"N": "0"}, ":until": {"S": iso_ms(until)}}
    if now is not None and to != cursor:  # a move is progress: the reaper's quiet starts here
        sets.append("updatedAt = :now")
        values[":now"] = {"S": iso_ms(now)}
    expression = ("SET " + ", ".join(sets) + " " if sets else "") + (
        "REMOVE " + ", ".join(removes) + " " if removes else ""
    )
    return await _conditional(
        client,
        TableName=table,
        Key={"jobId": {"S": job_id}},
        UpdateExpression=expression + "ADD version :one",
        ConditionExpression=_HELD,
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=values,
    )


async def rewind(
    client: Any,
    table: str,
    job_id: str,
    owner: str,
    cursor: int,
    progress: DispatchProgress,
    retry_at: datetime,
) -> bool:
    values: dict[str, Any] = {
        ":downloading": {"S": JobStatus.DOWNLOADING.value},
        ":owner": {"S": owner},
        ":to": {"N": str(progress.cursor)},
        ":attempts": {"N": str(progress.attempts)},
        ":retry": {"S": iso_ms(retry_at)},
        ":cursor": {"N": str(cursor)},
        ":one": {"N": "1"},
    }
    sets = [
        "dispatchCursor = :to",
        "dispatchAttempts = :attempts",
        "leaseExpiresAt = :retry",
        "dueAt = :retry",
    ]
    removes = []
    for name, value in (
        ("dispatchLastError", to_attr(progress.last_error) if progress.last_error else None),
        ("dispatchSent", to_attr(sorted(progress.sent)) if progress.sent else None),
    ):
        if value is None:
            removes.append(name)
        else:
            sets.append(f"{name} = :{name}")
            values[f":{name}"] = value
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return await _conditional(
        client,
        TableName=table,
        Key={"jobId": {"S": job_id}},
        UpdateExpression=expression + " ADD version :one",
        ConditionExpression=_HELD,
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=values,
    )


async def renew_poll(client: Any, table: str, job_id: str, owner: str, until: datetime) -> bool:
    """The poller's lease moved on (and `dueAt` with it); `version` stays, so the snapshot
    it holds can still be saved."""
    return await _conditional(
        client,
        TableName=table,
        Key={"jobId": {"S": job_id}},
        UpdateExpression="SET leaseExpiresAt = :until, dueAt = :until",
        ConditionExpression="#s = :polling AND leaseOwner = :owner",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":polling": {"S": JobStatus.POLLING.value},
            ":owner": {"S": owner},
            ":until": {"S": iso_ms(until)},
        },
    )


async def record_failure(
    client: Any, table: str, job_id: str, owner: str, cursor: int, error: str, retry_at: datetime
) -> bool:
    return await _conditional(
        client,
        TableName=table,
        Key={"jobId": {"S": job_id}},
        UpdateExpression="SET dispatchLastError = :error, leaseExpiresAt = :retry, "
        "dueAt = :retry ADD version :one",
        ConditionExpression=_HELD,
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":downloading": {"S": JobStatus.DOWNLOADING.value},
            ":owner": {"S": owner},
            ":cursor": {"N": str(cursor)},
            ":error": {"S": error},
            ":retry": {"S": iso_ms(retry_at)},
            ":one": {"N": "1"},
        },
    )


async def restart(client: Any, table: str, job_id: str, now: datetime) -> bool:
    return await _conditional(
        client,
        TableName=table,
        Key={"jobId": {"S": job_id}},
        UpdateExpression="SET dispatchCursor = :zero, dispatchAttempts = :zero, "
        "dueKind = :kind, dueAt = :now REMOVE leaseOwner, leaseExpiresAt, dispatchLastError "
        "ADD version :one",
        ConditionExpression="#s = :downloading AND attribute_not_exists(dispatchCursor)",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":downloading": {"S": JobStatus.DOWNLOADING.value},
            ":zero": {"N": "0"},
            ":kind": {"S": DISPATCH},
            ":now": {"S": iso_ms(now)},
            ":one": {"N": "1"},
        },
    )


_FREE = "(attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now)"


async def claim_dispatch(
    client: Any, table: str, job_id: str, owner: str, until: datetime, now: datetime
) -> dict[str, Any] | None:
    """The job item as claimed (the claim counted), or None when another replica has it."""
    return await _claim(
        client, table, job_id, owner, until, now,
        counter="dispatchAttempts",
        condition=f"#s = :status AND attribute_exists(dispatchCursor) AND {_FREE}",
        status=JobStatus.DOWNLOADING,
    )  # fmt: skip


async def claim_poll(
    client: Any, table: str, job_id: str, owner: str, until: datetime, now: datetime,
    heartbeat_at: datetime | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """A job whose next poll is due, leased with the attempt counted: POLLING, or
    PROCESSING with its first poll scheduled at creation (moved to POLLING here). With
    `heartbeat_at`, nextHeartbeatAt moves there in the same write: the poller sends the
    heartbeats (harmless on a job without workflows: not on the heartbeat-index)."""
    extra = {":processing": {"S": JobStatus.PROCESSING.value}}
    sets = "#s = :status, "
    if heartbeat_at is not None:
        sets += "nextHeartbeatAt = :heartbeat, "
        extra[":heartbeat"] = {"S": iso_ms(heartbeat_at)}
    return await _claim(
        client, table, job_id, owner, until, now,
        counter="pollAttempts",
        # No nextPollAt: left POLLING by the original service (drop-in swap): due now.
        condition=f"(#s = :status OR (#s = :processing AND attribute_exists(nextPollAt))) "
        f"AND {_FREE} AND (attribute_not_exists(nextPollAt) OR nextPollAt <= :now)",
        status=JobStatus.POLLING,
        sets=sets,
        extra=extra,
    )  # fmt: skip


async def _claim(
    client: Any, table: str, job_id: str, owner: str, until: datetime, now: datetime,
    *, counter: str, condition: str, status: JobStatus, sets: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    try:
        response = await client.update_item(
            TableName=table,
            Key={"jobId": {"S": job_id}},
            UpdateExpression=f"SET {sets}leaseOwner = :owner, leaseExpiresAt = :until, "
            "dueAt = :until ADD #c :one, version :one",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": "status", "#c": counter},
            ExpressionAttributeValues={
                ":status": {"S": status.value},
                ":owner": {"S": owner},
                ":until": {"S": iso_ms(until)},
                ":now": {"S": iso_ms(now)},
                ":one": {"N": "1"},
                **(extra or {}),
            },
            ReturnValues="ALL_NEW",
        )
    except ClientError as err:
        if lost_race(err):
            return None
        raise
    attributes: dict[str, Any] = response["Attributes"]
    return attributes


async def _conditional(client: Any, **request: Any) -> bool:
    try:
        await client.update_item(**request)
    except ClientError as err:
        if lost_race(err):
            return False
        raise
    return True
