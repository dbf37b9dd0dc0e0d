"""What operators read: jobs newest first through the indexes, a job's files a page at
a time. Reads only; every page is bounded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from src.domain.download_task import DownloadTask
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus


class BadCursor(ValueError):
    """A cursor this service did not hand out (or from another query)."""


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[ExportJob]
    cursor: str | None  # None: no more


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[DownloadTask]
    cursor: str | None


class JobQueries(Protocol):
    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        user_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first (by createdAt), filtered by status and/or user, through the
        indexes (never a scan); `cursor` continues the previous page. Raises BadCursor."""
        ...

    async def list_tasks(
        self, job_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> TaskPage:
        """A job's recorded files in file order. A file is recorded once a worker took it
        or its result is written: until then it is only counted as pending."""
        ...
