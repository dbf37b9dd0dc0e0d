"""A job's file counters, on a small item of their own in the tasks table.

Each recorded file adds to these counters, not to the job item: the job item carries the
workflow's metadata (up to 192 KiB) and is projected into the original's two ALL indexes,
so counting there would rewrite all of that three times per file (a write unit per KB
each). This item stays about 150 bytes whatever the job carries. `pending` starts at the
job's total and falls by one per file; the write that takes it to 0 is the last file's,
which is how its recorder knows, without reading anything, that the job is done.
The job repository shows these counters on the job while it is DOWNLOADING; CompleteJob
copies them onto the job item when it finishes the job."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.domain.time import iso_ms, parse_iso

TASK_ID = "#progress"  # never a task id (those are digits), sorts before them
_RETENTION_SECONDS = 7 * 24 * 3600


def key(job_id: str) -> dict[str, Any]:
    return {"jobId": {"S": job_id}, "taskId": {"S": TASK_ID}}


def new_item(job_id: str, total: int, now: datetime) -> dict[str, Any]:
    return {
        **key(job_id),
        "total": {"N": str(total)},
        "pending": {"N": str(total)},
        "completed": {"N": "0"},
        "failed": {"N": "0"},
        "updatedAt": {"S": iso_ms(now)},
        "ttl": {"N": str(int(now.timestamp()) + _RETENTION_SECONDS)},
    }


def count(table: str, job_id: str, succeeded: bool, at: datetime, *, last: bool) -> dict[str, Any]:
    """One file counted. Not the last (`last` False): only while more than one is pending,
    so the write that would finish the job fails and says so (ALL_OLD), instead of
    needing a read afterwards. The last: only while exactly one is pending."""
    return {
        "TableName": table,
        "Key": key(job_id),
        "UpdateExpression": "ADD #c :one, pending :minus SET updatedAt = :at",
        "ConditionExpression": "pending = :one" if last else "pending > :one",
        "ExpressionAttributeNames": {"#c": "completed" if succeeded else "failed"},
        "ExpressionAttributeValues": {
            ":one": {"N": "1"},
            ":minus": {"N": "-1"},
            ":at": {"S": iso_ms(at)},
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def reopen(table: str, job_id: str, files: int) -> dict[str, Any]:
    """`files` failed files pending again (an operator's retry)."""
    return {
        "TableName": table,
        "Key": key(job_id),
        "UpdateExpression": "ADD pending :n, failed :minus",
        "ConditionExpression": "failed >= :n",
        "ExpressionAttributeValues": {":n": {"N": str(files)}, ":minus": {"N": str(-files)}},
    }


def pending(item: dict[str, Any] | None) -> int | None:
    """`pending` of a raw item (attribute values), None when there is no item."""
    if not item or "pending" not in item:
        return None
    return int(item["pending"]["N"])


def counters(item: dict[str, Any]) -> tuple[int, int, datetime | None]:
    """(completed, failed, updatedAt) of a plain item."""
    at = item.get("updatedAt")
    return int(item.get("completed", 0)), int(item.get("failed", 0)), parse_iso(at) if at else None


def counts(item: dict[str, Any]) -> tuple[int, int]:
    """(completed, failed) of a raw item (attribute values)."""
    return int(item.get("completed", {}).get("N", 0)), int(item.get("failed", {}).get("N", 0))
