"""DispatchDownloadTasks: one task record and one work item per file of a ready export."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog

from src.application.commands import CompleteJobCommand
from src.application.ports.clock import Clock
from src.application.ports.export_api import ExportFile
from src.application.ports.job_repository import JobRepository
from src.application.ports.task_repository import TaskRepository
from src.application.ports.work_queue import TaskRef, WorkQueue
from src.application.use_cases.complete_job import CompleteJob
from src.domain.download_task import DownloadTask, task_id_for
from src.domain.export_job import ExportJob
from src.domain.file_names import object_key

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchDownloadTasks:
    """Order matters for crash safety: task records first (idempotent), then the work
    items, then the job's move to DOWNLOADING. A crash anywhere leaves the job POLLING
    under an expiring lease, so it is polled and dispatched again; the same task ids are
    reused and a repeated work item is harmless because results are recorded once.
    A zero-file export completes at once."""

    jobs: JobRepository
    tasks: TaskRepository
    queue: WorkQueue
    complete_job: CompleteJob
    clock: Clock
    s3_prefix: str

    async def execute(self, job: ExportJob, files: tuple[ExportFile, ...]) -> ExportJob:
        if not files:
            log.info("export has no files")
            return (await self.complete_job.execute(CompleteJobCommand(job.job_id))).job
        now = self.clock.now()
        records = [self._task(job, index, file, now) for index, file in enumerate(files)]
        created = await self.tasks.add_all(records)
        await self.queue.publish([TaskRef(t.job_id, t.task_id, t.index, t) for t in records])
        job = await self.jobs.save(job.start_downloading(len(records), self.clock.now()))
        log.info("download tasks dispatched", total_tasks=len(records), new_records=created)
        return job

    def _task(self, job: ExportJob, index: int, file: ExportFile, now: datetime) -> DownloadTask:
        return DownloadTask(
            job_id=job.job_id,
            task_id=task_id_for(index),
            index=index,
            url=file.url,
            file_name=file.file_name,
            output_key=object_key(self.s3_prefix, job.job_id, index, file.file_name),
            created_at=now,
            expected_size=file.size,
            expected_sha256=file.sha256,
            url_expires_at=file.expires_at,
        )
