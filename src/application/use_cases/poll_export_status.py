"""PollExportStatus: ask the Export API about every due job, exactly one replica per job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from src.application.commands import CompleteJobCommand, PollDueJobsCommand
from src.application.log_context import job_context
from src.application.ports.clock import Clock
from src.application.ports.export_api import ExportApi, ExportApiError, ExportFile, ExportState
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.application.ports.leases import LeaseLost
from src.application.services.failure_text import describe
from src.application.services.lease_keeper import LeaseKeeper
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.dispatch_download_tasks import DispatchDownloadTasks
from src.application.use_cases.send_heartbeats import SendHeartbeats
from src.domain.errors import JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.polling import PollPolicy

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PollReport:
    claimed: int


@dataclass(frozen=True, slots=True)
class PollExportStatus:
    """Claims due POLLING jobs under a lease and polls each once: ready → dispatch the
    files; failed / expired → the job fails (ExportFailed / ExportExpired); not ready or
    no usable answer → the next poll is scheduled with backoff; past the deadline or the
    attempt limit → the job fails with POLLING_TIMEOUT (ExportTimedOut). The schedule is
    written to the job, so any replica carries on after a restart.

    Every claim counts as an attempt, so an attempt that fails (or whose replica dies) the
    same way every time ends the job (ProcessingError, with the last error) instead of
    being retried forever. A ready export goes to DispatchDownloadTasks, which checks it
    against ExportLimits before any of it is written and dispatches it under its own
    lease (a job being dispatched is DOWNLOADING: never claimed for polling again)."""

    jobs: JobRepository
    export_api: ExportApi
    dispatch: DispatchDownloadTasks
    complete_job: CompleteJob
    clock: Clock
    policy: PollPolicy
    lease: timedelta
    # Heartbeats go with each poll: the claim moves the job's next heartbeat, so a job
    # waiting on its export costs one write a poll (the heartbeat round's claim is spared).
    heartbeats: SendHeartbeats | None = None

    async def execute(self, command: PollDueJobsCommand) -> PollReport:
        now = self.clock.now()
        beats = self.heartbeats
        claimed = await self.jobs.claim_due_for_polling(
            now,
            command.owner,
            now + self.lease,
            command.limit,
            heartbeat_at=now + beats.interval if beats is not None else None,
        )
        await asyncio.gather(*(self._guarded(job) for job in claimed))
        return PollReport(len(claimed))

    async def _guarded(self, job: ExportJob) -> None:
        with job_context(job, export_id=job.export_id):
            if await self._heartbeat(job):
                return
            try:
                await self.poll_one(job)
            except (ConditionFailed, LeaseLost):
                log.info("job changed while polling; leaving it to its new owner")
            except Exception as err:
                # Counted already (the claim was the attempt): the next one backs off, and
                # a failure that repeats ends the job once the attempts are used up.
                log.exception("polling failed; will retry")
                await self._record_failure(job, err)

    async def _heartbeat(self, job: ExportJob) -> bool:
        """True when the job's workflows had all stopped waiting (it is cancelled now)."""
        if self.heartbeats is None or not job.heartbeat_tokens():
            return False
        try:
            return await self.heartbeats.beat(job)
        except Exception as err:  # the poll goes on; the next poll or round beats again
            log.warning("heartbeat with the poll failed", error=type(err).__name__)
            return False

    async def _record_failure(self, job: ExportJob, err: Exception) -> None:
        try:
            await self.jobs.save(job.polled(self.clock.now(), self.policy, describe(err)))
        except Exception as again:  # the lease runs out instead: nothing is lost
            log.warning("could not record the failed attempt", error=type(again).__name__)

    async def poll_one(self, job: ExportJob) -> None:
        if job.poll is not None and job.poll.overrun(self.policy):
            await self._give_up(job)
            return
        leased = [job]  # the snapshot, with its lease as last renewed

        async def renew(until: datetime) -> bool:
            assert job.lease_owner is not None
            kept = await self.jobs.renew_poll(job.job_id, job.lease_owner, until)
            if kept:
                leased[0] = replace(leased[0], lease_expires_at=until)
            return kept

        try:
            # The lease is renewed while the Export API takes its time (retries included),
            # so a slow answer never lets another replica poll the same job meanwhile.
            keeper = LeaseKeeper(self.clock, self.lease)
            status = await keeper.hold(renew, self.export_api.get_export(job.export_id))
        except ExportApiError as err:
            log.warning("export status unavailable", reason=str(err), retryable=err.retryable)
            if not err.retryable:
                await self._fail(job, JobErrorCode.EXPORT_API_FAILED, f"Export API: {err}")
                return
            await self._again(leased[0])
            return
        job = leased[0]
        if status.state is ExportState.READY:
            await self._ready(job, status.files)
        elif status.state is ExportState.FAILED:
            message = status.error_message or "Export failed"
            await self._fail(job, JobErrorCode.EXPORT_API_FAILED, message)
        elif status.state is ExportState.EXPIRED:
            message = status.error_message or "Export expired"
            await self._fail(job, JobErrorCode.EXPORT_EXPIRED, message)
        else:
            await self._again(job)

    async def _ready(self, job: ExportJob, files: tuple[ExportFile, ...]) -> None:
        await self.dispatch.execute(job, files)  # which checks the listing's bounds first

    async def _give_up(self, job: ExportJob) -> None:
        """Claimed once too often: the earlier attempts ended without an outcome."""
        assert job.poll is not None
        made = job.poll.attempts - 1  # before this claim
        last = job.poll.last_error or "the attempt did not finish (its replica may have stopped)"
        message = f"Polling or dispatching did not conclude after {made} attempts; last: {last}"
        log.error("giving up on the job", reason=message)
        await self._fail(job, JobErrorCode.PROCESSING_ERROR, message)

    async def _again(self, claimed: ExportJob) -> None:
        now = self.clock.now()
        job = claimed.polled(now, self.policy)
        if job.polling_exhausted(now, self.policy):
            assert job.poll is not None
            message = f"Export did not complete after {job.poll.polls_after_first} attempts"
            await self._fail(job, JobErrorCode.POLLING_TIMEOUT, message)
            return
        if self._lease_schedules(claimed, job):
            return  # the claim's lease runs out when the next poll is due: nothing to write
        await self.jobs.save(job)

    @staticmethod
    def _lease_schedules(claimed: ExportJob, polled: ExportJob) -> bool:
        """Whether the claim already scheduled the next poll: a job is due again when its
        lease runs out, so when the backoff interval has reached the lease (every poll of
        a long export at the default settings) the claim is the attempt's only write. The
        next poll may come up to a tenth of the interval early (the poll's own duration);
        an earlier due time, a later one, or an error to clear is written."""
        assert polled.poll is not None
        until, wanted = claimed.lease_expires_at, polled.poll.next_at
        if until is None or claimed.poll is None or claimed.poll.last_error is not None:
            return False
        interval = wanted - polled.updated_at
        return wanted - interval / 10 <= until <= wanted

    async def _fail(self, job: ExportJob, code: str, message: str) -> None:
        failure = JobError(code, message)
        await self.complete_job.execute(CompleteJobCommand(job.job_id, failure, held=job))
