"""Job and task statuses, and the moves allowed between them."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    POLLING = "POLLING"
    DOWNLOADING = "DOWNLOADING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

_ENDINGS = {JobStatus.FAILED, JobStatus.CANCELLED}

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.PROCESSING, *_ENDINGS}),
    JobStatus.PROCESSING: frozenset({JobStatus.POLLING, *_ENDINGS}),
    # A zero-file export goes straight from POLLING to COMPLETED.
    JobStatus.POLLING: frozenset({JobStatus.DOWNLOADING, JobStatus.COMPLETED, *_ENDINGS}),
    JobStatus.DOWNLOADING: frozenset({JobStatus.COMPLETED, *_ENDINGS}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class CallbackStatus(StrEnum):
    """Whether the waiting workflow has been answered."""

    NOT_REQUIRED = "NOT_REQUIRED"  # no task token
    PENDING = "PENDING"  # the job has not finished yet
    DELIVERED = "DELIVERED"
    RETRYING = "RETRYING"  # throttling/5xx outlasted the retries: the reaper tries again
    FAILED = "FAILED"  # the workflow will never take this token (used, timed out, unknown)
