"""One file of an export: where it comes from, where it goes, and how it went."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from src.domain.errors import DomainError
from src.domain.upload_checkpoint import UploadCheckpoint


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


def task_id_for(index: int) -> str:
    """Deterministic, so dispatching the same export twice names the same tasks."""
    return f"{index:05d}"


@dataclass(frozen=True, slots=True)
class DownloadTask:
    job_id: str
    task_id: str
    index: int
    url: str
    file_name: str
    output_key: str
    created_at: datetime
    expected_size: int | None = None
    expected_sha256: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    finished_at: datetime | None = None
    url_expires_at: datetime | None = None  # the Export API's expiresAt for `url`
    upload: UploadCheckpoint | None = None  # a big file's copy in progress

    def url_expires_within(self, now: datetime, margin: timedelta) -> bool:
        return self.url_expires_at is not None and self.url_expires_at <= now + margin

    def with_url(self, url: str, expires_at: datetime | None) -> DownloadTask:
        return replace(self, url=url, url_expires_at=expires_at)

    def checkpointed(self, upload: UploadCheckpoint | None) -> DownloadTask:
        return replace(self, upload=upload)

    def __repr__(self) -> str:  # the URL may be presigned: keep it out of reprs
        return f"DownloadTask({self.job_id}/{self.task_id} #{self.index} {self.status})"

    def is_leased(self, now: datetime) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def start(self, owner: str | None, until: datetime | None) -> DownloadTask:
        """RUNNING under `owner` until `until`; or, both None, without a lease: for a small
        file the work item's visibility and the conditional result write are protection
        enough (a duplicate copy writes the same bytes to the same key, and only one
        result is recorded)."""
        if self.status.is_terminal:
            raise DomainError(f"task {self.task_id} already {self.status}")
        return replace(
            self,
            status=TaskStatus.RUNNING,
            attempts=self.attempts + 1,
            lease_owner=owner,
            lease_expires_at=until,
        )

    def retried(self, now: datetime) -> DownloadTask:
        """A failed file to be copied again (an operator's retry): PENDING, its attempts,
        error, result and copy in progress forgotten. `created_at` becomes now: the work
        item is a fresh dispatch."""
        if self.status is TaskStatus.COMPLETED:
            raise DomainError(f"task {self.task_id} is COMPLETED: nothing to retry")
        return replace(
            self,
            status=TaskStatus.PENDING,
            attempts=0,
            bytes=None,
            sha256=None,
            error=None,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=None,
            upload=None,
            created_at=now,
        )

    def start_unleased(self) -> DownloadTask:
        return self.start(None, None)

    def succeed(self, *, size: int, sha256: str, now: datetime) -> DownloadTask:
        return replace(
            self._finish(TaskStatus.COMPLETED, now), bytes=size, sha256=sha256, error=None
        )

    def fail(self, error: str, now: datetime) -> DownloadTask:
        return replace(self._finish(TaskStatus.FAILED, now), error=error)

    def _finish(self, status: TaskStatus, now: datetime) -> DownloadTask:
        if self.status is not TaskStatus.RUNNING:
            raise DomainError(f"task {self.task_id} is {self.status}, not RUNNING")
        return replace(
            self,
            status=status,
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
            upload=None,  # finished either way: nothing left to resume
        )
