"""ExportJob <-> the job item, attribute names exactly as the original service wrote them."""

from __future__ import annotations

from typing import Any

from src.domain.dispatch_progress import DispatchProgress
from src.domain.export_job import CallbackRecord, ExportJob, JobError
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.polling import PollState
from src.domain.task_token import TaskToken
from src.domain.time import iso_ms, parse_iso
from src.infrastructure.dynamodb import due_index


def to_item(job: ExportJob) -> dict[str, Any]:
    """Plain values; None means 'attribute absent'."""
    return {
        "jobId": job.job_id,
        "exportId": job.export_id,
        "userId": job.user_id,
        "status": job.status.value,
        "totalTasks": job.total_tasks,
        "completedTasks": job.completed_tasks,
        "failedTasks": job.failed_tasks,
        "createdAt": iso_ms(job.created_at),
        "updatedAt": iso_ms(job.updated_at),
        "completedAt": iso_ms(job.completed_at) if job.completed_at else None,
        "error": {"code": job.error.code, "message": job.error.message} if job.error else None,
        "metadata": dict(job.metadata),
        "executionArn": job.execution_arn,
        "ttl": int(job.expires_at.timestamp()),
        "taskToken": job.task_token.reveal() if job.task_token else None,
        "callbackStatus": job.callback.status.value,
        "callbackAttempts": job.callback.attempts,
        "callbackError": job.callback.last_error,
        "callbackAt": iso_ms(job.callback.at) if job.callback.at else None,
        "nextPollAt": iso_ms(job.poll.next_at) if job.poll else None,
        "pollAttempts": job.poll.attempts if job.poll else None,
        "pollDeadline": iso_ms(job.poll.deadline) if job.poll else None,
        "pollLastError": job.poll.last_error if job.poll else None,
        "dispatchCursor": job.dispatch.cursor if job.dispatch else None,
        "dispatchAttempts": job.dispatch.attempts if job.dispatch else None,
        "dispatchLastError": job.dispatch.last_error if job.dispatch else None,
        "dispatchSent": sorted(job.dispatch.sent) if job.dispatch and job.dispatch.sent else None,
        "leaseOwner": job.lease_owner,
        "leaseExpiresAt": iso_ms(job.lease_expires_at) if job.lease_expires_at else None,
        # Sparse index key: present only while a finished job still owes its workflow an
        # answer (the winner crashed before answering, or delivery is being retried).
        "callbackDue": "DUE" if owes_callback(job) else None,
        "version": job.version,
        **due_index.keys(job),
        "heartbeatDue": due_index.heartbeat_due(job),
    }


def owes_callback(job: ExportJob) -> bool:
    return job.is_terminal and job.callback.status in (
        CallbackStatus.PENDING,
        CallbackStatus.RETRYING,
    )


def _dispatch(item: dict[str, Any]) -> DispatchProgress | None:
    if item.get("dispatchCursor") is None:
        return None
    return DispatchProgress(
        cursor=int(item["dispatchCursor"]),
        attempts=int(item.get("dispatchAttempts", 0)),
        last_error=item.get("dispatchLastError"),
        sent=frozenset(int(i) for i in item.get("dispatchSent") or ()),
    )


def _poll_state(item: dict[str, Any]) -> PollState | None:
    if not item.get("nextPollAt"):
        return None
    return PollState(
        attempts=int(item.get("pollAttempts", 0)),
        next_at=parse_iso(item["nextPollAt"]),
        deadline=parse_iso(item["pollDeadline"]),
        last_error=item.get("pollLastError"),
    )


# Written only by their own targeted ADD updates (attach, answers, heartbeats), never by
# save(): a set grows concurrently and a stale snapshot must not shrink it.
WAITING_TOKENS = "waitingTokens"
ANSWERED_TOKENS = "answeredTokens"
HEARTBEAT_STOPPED = "heartbeatStopped"


def _strings(item: dict[str, Any], name: str) -> frozenset[str]:
    return frozenset(str(v) for v in item.get(name) or ())


def from_item(item: dict[str, Any]) -> ExportJob:
    error = item.get("error")
    token = item.get("taskToken")
    callback_at = item.get("callbackAt")
    return ExportJob(
        job_id=item["jobId"],
        export_id=item["exportId"],
        user_id=item["userId"],
        status=JobStatus(item["status"]),
        created_at=parse_iso(item["createdAt"]),
        updated_at=parse_iso(item["updatedAt"]),
        metadata=item.get("metadata") or {},
        execution_arn=item.get("executionArn"),
        task_token=TaskToken(token) if token else None,
        total_tasks=int(item.get("totalTasks", 0)),
        completed_tasks=int(item.get("completedTasks", 0)),
        failed_tasks=int(item.get("failedTasks", 0)),
        completed_at=parse_iso(item["completedAt"]) if item.get("completedAt") else None,
        error=JobError(error["code"], error["message"]) if error else None,
        callback=CallbackRecord(
            status=CallbackStatus(item.get("callbackStatus", CallbackStatus.NOT_REQUIRED)),
            attempts=int(item.get("callbackAttempts", 0)),
            last_error=item.get("callbackError"),
            at=parse_iso(callback_at) if callback_at else None,
        ),
        poll=_poll_state(item),
        dispatch=_dispatch(item),
        lease_owner=item.get("leaseOwner"),
        lease_expires_at=parse_iso(item["leaseExpiresAt"]) if item.get("leaseExpiresAt") else None,
        version=int(item.get("version", 0)),
        # Sorted: a set has no order, and answers should go out in a stable one.
        waiting_tokens=tuple(TaskToken(t) for t in sorted(_strings(item, WAITING_TOKENS))),
        answered=_strings(item, ANSWERED_TOKENS),
        heartbeat_stopped=_strings(item, HEARTBEAT_STOPPED),
    )
