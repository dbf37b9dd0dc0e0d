"""RunExport: the walking skeleton's export step, poll → download → complete, in one go.

The pipeline issue replaces this with a persisted poller and fan-out download tasks;
until then one consumer runs a job from start to end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from src.application.commands import CompleteJobCommand, RunExportCommand
from src.application.ports.clock import Clock
from src.application.ports.export_api import (
    ExportApi,
    ExportApiError,
    ExportFile,
    ExportState,
    ExportStatus,
)
from src.application.ports.file_transfer import FileTransfer, TransferFailed
from src.application.ports.job_repository import JobRepository
from src.application.use_cases.complete_job import CompleteJob, CompleteResult, JobNotFound
from src.domain.errors import JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.file_names import object_key

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ExportSettings:
    s3_prefix: str = "exports/"
    poll_interval_seconds: float = 5.0
    max_poll_attempts: int = 120
    max_parallel_files: int = 4


@dataclass(slots=True)
class RunExport:
    """Polls the Export API until the export is ready, streams every file into the
    object store, counts successes and failures, and hands over to CompleteJob, which
    answers the workflow. Export failures end the job FAILED with the original's codes."""

    jobs: JobRepository
    export_api: ExportApi
    transfer: FileTransfer
    complete_job: CompleteJob
    clock: Clock
    settings: ExportSettings

    async def execute(self, command: RunExportCommand) -> CompleteResult:
        job = await self.jobs.get(command.job_id)
        if job is None:
            raise JobNotFound(command.job_id)
        if job.is_terminal:
            return CompleteResult(job, won=False)
        job = await self.jobs.save(job.start_polling(self.clock.now()))
        outcome = await self._wait_until_ready(job)
        if isinstance(outcome, JobError):
            return await self.complete_job.execute(CompleteJobCommand(job.job_id, outcome))
        job = await self.jobs.save(job.start_downloading(len(outcome.files), self.clock.now()))
        await self._download_all(job, outcome.files)
        return await self.complete_job.execute(CompleteJobCommand(job.job_id))

    async def _wait_until_ready(self, job: ExportJob) -> ExportStatus | JobError:
        attempts = self.settings.max_poll_attempts
        for attempt in range(1, attempts + 1):
            try:
                status = await self.export_api.get_export(job.export_id)
            except ExportApiError as err:
                log.warning("export status unavailable", attempt=attempt, reason=str(err))
                if not err.retryable:
                    return JobError(JobErrorCode.EXPORT_API_FAILED, f"Export API: {err}")
            else:
                if status.state is ExportState.READY:
                    return status
                if status.state is ExportState.FAILED:
                    message = status.error_message or "Export failed"
                    return JobError(JobErrorCode.EXPORT_API_FAILED, message)
                if status.state is ExportState.EXPIRED:
                    message = status.error_message or "Export expired"
                    return JobError(JobErrorCode.EXPORT_EXPIRED, message)
            if attempt < attempts:
                await self.clock.sleep(self.settings.poll_interval_seconds)
        message = f"Export not ready after {attempts} polling attempts"
        return JobError(JobErrorCode.POLLING_TIMEOUT, message)

    async def _download_all(self, job: ExportJob, files: tuple[ExportFile, ...]) -> None:
        gate = asyncio.Semaphore(self.settings.max_parallel_files)
        counting = asyncio.Lock()
        state = {"job": job}

        async def one(index: int, file: ExportFile) -> None:
            async with gate:
                ok = await self._download(job.job_id, index, file)
            async with counting:  # one writer of this job's counters at a time
                counted = state["job"].record_file(succeeded=ok, now=self.clock.now())
                state["job"] = await self.jobs.save(counted)

        await asyncio.gather(*(one(i, f) for i, f in enumerate(files)))

    async def _download(self, job_id: str, index: int, file: ExportFile) -> bool:
        key = object_key(self.settings.s3_prefix, job_id, index, file.file_name)
        try:
            result = await self.transfer.transfer(
                file.url, key, expected_size=file.size, expected_sha256=file.sha256
            )
        except TransferFailed as err:
            log.warning("file failed", index=index, reason=err.reason)
            return False
        log.info("file stored", index=index, key=result.key, bytes=result.bytes)
        return True
