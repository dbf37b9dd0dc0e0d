"""The sparse `due-index`: jobs with periodic work, keyed by kind and when it is due.

A job is on it only while a poller or a dispatcher has something to do with it, with
`dueAt` the moment a replica may take it (the next poll, or the end of the lease that
holds it). A round reads at most its batch of due entries (keys only, a few bytes each)
instead of every job in flight. All entries of a kind share one index partition: about
1,000 schedule writes per second, i.e. some 60,000 jobs polled a minute, before it would
need sharding."""

from __future__ import annotations

from typing import Any

from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.time import iso_ms

NAME = "due-index"
# Jobs with a workflow to keep alive, by nextHeartbeatAt (moved by heartbeat and poll claims).
HEARTBEAT_INDEX = "heartbeat-index"
HEARTBEAT_DUE = "HB"
DUE_AT_ONCE = "1970-01-01T00:00:00.000Z"  # a nextHeartbeatAt before any other: due now
DISPATCH = "DISPATCH"  # an unfinished dispatch, due when its dispatcher's lease runs out
POLL = "POLL"  # due at the next poll, or when the poller's lease runs out if later


def keys(job: ExportJob) -> dict[str, Any]:
    """`dueKind` and `dueAt` for the job as it is; both None (absent) when nothing is due."""
    if job.status is JobStatus.DOWNLOADING and job.dispatch is not None:
        return {"dueKind": DISPATCH, "dueAt": iso_ms(job.lease_expires_at or job.updated_at)}
    polled = job.status is JobStatus.PROCESSING and job.poll is not None  # first poll due
    if job.status is JobStatus.POLLING or polled:
        at = job.next_poll_at
        if at is None:  # left POLLING by the original service: due now, or when leased out
            at = max(job.updated_at, job.lease_expires_at or job.updated_at)
        return {"dueKind": POLL, "dueAt": iso_ms(at)}
    return {"dueKind": None, "dueAt": None}


def heartbeat_due(job: ExportJob) -> str | None:
    """`heartbeatDue` for the job: present while it is unfinished and a workflow waits."""
    return HEARTBEAT_DUE if not job.is_terminal and job.has_task_token() else None


async def due(client: Any, table: str, kind: str, now: Any, limit: int) -> list[str]:
    """Ids of jobs of `kind` due by `now`, the longest due first, at most `limit` (the
    index entries may lag a write by a moment: the conditional claim that follows decides)."""
    return await _due(client, table, NAME, "dueKind", "dueAt", kind, now, limit)


async def heartbeats_due(client: Any, table: str, now: Any, limit: int) -> list[str]:
    """Ids of jobs whose heartbeat is due by `now`, the longest due first, at most `limit`."""
    return await _due(
        client, table, HEARTBEAT_INDEX, "heartbeatDue", "nextHeartbeatAt", HEARTBEAT_DUE, now,
        limit,
    )  # fmt: skip


async def _due(
    client: Any, table: str, index: str, hash_key: str, range_key: str, value: str, now: Any,
    limit: int,
) -> list[str]:  # fmt: skip
    response = await client.query(
        TableName=table,
        IndexName=index,
        KeyConditionExpression="#h = :value AND #r <= :now",
        ExpressionAttributeNames={"#h": hash_key, "#r": range_key},
        ExpressionAttributeValues={":value": {"S": value}, ":now": {"S": iso_ms(now)}},
        Limit=limit,
    )
    return [item["jobId"]["S"] for item in response.get("Items", [])]
