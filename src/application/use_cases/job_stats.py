"""JobStats: what the operator's dashboard shows, read from the table with bounded reads
(the newest jobs of each status, at most `per_status` each, through the status index)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from src.application.ports.job_queries import JobQueries
from src.domain.export_job import ExportJob
from src.domain.job_status import CallbackStatus, JobStatus

_PAGE = 200


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (share in 0..1); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Stats:
    jobs_by_status: dict[str, int]
    complete: bool  # False: some status had more jobs than were read (counts are at least)
    files_by_status: dict[str, int]
    answers: dict[str, int]  # "DELIVERED", "FAILED:TaskTimedOut", ...
    jobs_with_token: int
    jobs_read: int
    duration_ms_p50: float | None
    duration_ms_p95: float | None
    answer_latency_ms_p50: float | None
    answer_latency_ms_p95: float | None
    per_status_limit: int = field(default=0)

    @property
    def token_share(self) -> float | None:
        return self.jobs_with_token / self.jobs_read if self.jobs_read else None


@dataclass(frozen=True, slots=True)
class JobStats:
    queries: JobQueries
    per_status: int = 1000

    async def execute(self) -> Stats:
        jobs: list[ExportJob] = []
        by_status: dict[str, int] = {}
        complete = True
        for status in JobStatus:
            read, more = await self._newest(status)
            by_status[status.value] = len(read)
            complete = complete and not more
            jobs += read
        files = Counter[str]()
        answers = Counter[str]()
        durations, latencies = [], []
        for job in jobs:
            files["COMPLETED"] += job.completed_tasks
            files["FAILED"] += job.failed_tasks
            files["PENDING"] += job.pending_tasks
            record = job.callback
            if record.status is not CallbackStatus.NOT_REQUIRED:
                key = record.status.value
                if record.status in (CallbackStatus.FAILED, CallbackStatus.RETRYING):
                    key += f":{record.last_error or 'unknown'}"
                answers[key] += 1
            if job.is_terminal and job.completed_at is not None:
                durations.append(float(job.duration_ms()))
                if record.status is CallbackStatus.DELIVERED and record.at is not None:
                    latency = (record.at - job.completed_at).total_seconds() * 1000
                    latencies.append(max(0.0, latency))
        return Stats(
            jobs_by_status=by_status,
            complete=complete,
            files_by_status=dict(files),
            answers=dict(answers),
            jobs_with_token=sum(1 for job in jobs if job.has_task_token()),
            jobs_read=len(jobs),
            duration_ms_p50=percentile(durations, 0.5),
            duration_ms_p95=percentile(durations, 0.95),
            answer_latency_ms_p50=percentile(latencies, 0.5),
            answer_latency_ms_p95=percentile(latencies, 0.95),
            per_status_limit=self.per_status,
        )

    async def _newest(self, status: JobStatus) -> tuple[list[ExportJob], bool]:
        read: list[ExportJob] = []
        cursor = None
        while len(read) < self.per_status:
            page = await self.queries.list_jobs(
                status=status, limit=min(_PAGE, self.per_status - len(read)), cursor=cursor
            )
            read += page.jobs
            cursor = page.cursor
            if cursor is None:
                return read, False
        return read, cursor is not None
