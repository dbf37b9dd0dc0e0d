from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from src.application.callback_answer import success_output
from src.application.commands import ReapCommand
from src.application.ports.work_queue import TaskRef
from src.application.ports.workflow_callbacks import CallbackUnavailable
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.reap_stuck_jobs import LEASE_NAME, ReaperPolicy, ReapStuckJobs
from src.domain.dispatch_progress import DispatchProgress
from src.domain.download_task import DownloadTask, task_id_for
from src.domain.errors import JobErrorCode
from src.domain.events import JOB_ANSWERED, JOB_COMPLETED, JOB_FAILED
from src.domain.export_job import CallbackRecord, ExportJob
from src.domain.job_status import CallbackStatus, JobStatus
from tests.fakes import (
    T0,
    FakeCallbacks,
    FixedClock,
    InMemoryJobs,
    InMemoryLeases,
    InMemoryTasks,
    RecordingEvents,
    RecordingQueue,
)
from tests.unit.builders import JOB_ID, RAW_TOKEN, a_job

POLICY = ReaperPolicy(
    lease=timedelta(seconds=60),
    callback_lease=timedelta(seconds=30),
    max_callback_attempts=3,
    stall_after=timedelta(minutes=10),
    job_deadline=timedelta(hours=24),
)
REAP = ReapCommand(owner="replica-a")
FINISHED_AT = T0 + timedelta(seconds=2)


class World:
    def __init__(self, *jobs: ExportJob, now: datetime) -> None:
        self.jobs = InMemoryJobs(jobs)
        self.tasks = InMemoryTasks(self.jobs)
        self.queue = RecordingQueue()
        self.callbacks = FakeCallbacks()
        self.events = RecordingEvents()
        self.leases = InMemoryLeases()
        self.clock = FixedClock(now)
        self.use_case = self.replica()

    def replica(self) -> ReapStuckJobs:
        complete = CompleteJob(self.jobs, self.callbacks, self.events, self.clock)
        return ReapStuckJobs(
            self.jobs, self.tasks, self.queue, complete, self.leases, self.clock, POLICY
        )

    @property
    def stored(self) -> ExportJob:
        return self.jobs.items[JOB_ID]


def owing(job: ExportJob, status: CallbackStatus, attempts: int) -> ExportJob:
    """A finished job whose workflow is still owed its answer."""
    record = CallbackRecord(status, attempts, "ThrottlingException" if attempts else None)
    return replace(job, callback=record)


def completed(total: int = 2, failed: int = 0) -> ExportJob:
    running = a_job(status=JobStatus.DOWNLOADING, total=total, completed=total - failed)
    return replace(running, failed_tasks=failed).complete(FINISHED_AT)


def after_grace() -> datetime:
    return FINISHED_AT + POLICY.callback_lease + timedelta(seconds=1)


# -- the lease ------------------------------------------------------------------------


async def test_second_replica_does_not_reap_while_the_first_holds_the_lease():
    world = World(now=T0)
    assert (await world.use_case.execute(REAP)).ran
    world.clock.advance(30)
    other = await world.replica().execute(ReapCommand(owner="replica-b"))
    assert not other.ran
    assert world.leases.held[LEASE_NAME][0] == "replica-a"


async def test_lease_holder_renews_its_own_lease():
    world = World(now=T0)
    await world.use_case.execute(REAP)
    world.clock.advance(30)
    assert (await world.use_case.execute(REAP)).ran
    assert world.leases.held[LEASE_NAME] == ("replica-a", world.clock.now() + POLICY.lease)


async def test_second_replica_reaps_once_the_lease_has_expired():
    world = World(now=T0)
    await world.use_case.execute(REAP)
    world.clock.advance(POLICY.lease.total_seconds())
    assert (await world.replica().execute(ReapCommand(owner="replica-b"))).ran
    assert world.leases.held[LEASE_NAME][0] == "replica-b"


async def test_a_replica_without_the_lease_touches_nothing():
    world = World(owing(completed(), CallbackStatus.RETRYING, 1), now=after_grace())
    world.leases.held[LEASE_NAME] = ("replica-b", world.clock.now() + POLICY.lease)
    report = await world.use_case.execute(REAP)
    assert not report.ran
    assert world.callbacks.calls == 0
    assert world.stored.callback.status is CallbackStatus.RETRYING


# -- callbacks still owed -------------------------------------------------------------


async def test_retrying_success_callback_past_the_grace_is_answered_once():
    world = World(owing(completed(), CallbackStatus.RETRYING, 1), now=after_grace())
    report = await world.use_case.execute(REAP)
    assert report.callbacks_retried == 1
    assert world.callbacks.successes == [(RAW_TOKEN, success_output(world.stored))]
    assert world.callbacks.successes[0][1]["status"] == "COMPLETED"
    assert world.callbacks.failures == []
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.attempts == 2

    world.clock.advance(3600)
    again = await world.use_case.execute(REAP)
    assert again.callbacks_retried == 0
    assert world.callbacks.calls == 1


async def test_an_answer_still_leased_by_its_sender_is_not_touched():
    # The winner (or another reaper) is still delivering: its lease has not run out.
    job = owing(completed(), CallbackStatus.PENDING, 0).leased(
        "callback", FINISHED_AT + POLICY.callback_lease
    )
    world = World(job, now=FINISHED_AT + POLICY.callback_lease - timedelta(seconds=1))
    report = await world.use_case.execute(REAP)
    assert report.ran
    assert report.callbacks_retried == 0
    assert world.callbacks.calls == 0
    assert world.stored == job


@pytest.mark.parametrize(
    ("code", "error_name"),
    [
        (JobErrorCode.EXPORT_API_FAILED, "ExportFailed"),
        (JobErrorCode.EXPORT_EXPIRED, "ExportExpired"),
        (JobErrorCode.POLLING_TIMEOUT, "ExportTimedOut"),
        (JobErrorCode.PROCESSING_ERROR, "ProcessingError"),
    ],
)
async def test_pending_callback_of_a_failed_job_is_answered_with_its_error_name(code, error_name):
    failed = a_job(status=JobStatus.POLLING).fail(code, "the export broke", FINISHED_AT)
    assert failed.callback.status is CallbackStatus.PENDING  # the winner died right here
    world = World(failed, now=after_grace())
    report = await world.use_case.execute(REAP)
    assert report.callbacks_retried == 1
    assert world.callbacks.failures == [(RAW_TOKEN, error_name, "the export broke")]
    assert world.stored.status is JobStatus.FAILED
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.attempts == 1


async def test_pending_callback_of_a_partly_failed_job_gets_the_contract_failure():
    world = World(completed(total=10, failed=3), now=after_grace())
    await world.use_case.execute(REAP)
    assert world.callbacks.failures == [
        (RAW_TOKEN, "JobCompletedWithFailures", "Job completed with 3 failed tasks out of 10 total")
    ]


async def test_pending_callback_of_a_cancelled_job_is_answered_job_cancelled():
    cancelled = a_job(status=JobStatus.POLLING).cancel(
        JobErrorCode.CANCELLED, "operator stop", FINISHED_AT
    )
    world = World(cancelled, now=after_grace())
    await world.use_case.execute(REAP)
    assert world.callbacks.failures == [(RAW_TOKEN, "JobCancelled", "operator stop")]


async def test_callback_is_abandoned_after_max_attempts_without_a_call():
    job = owing(completed(), CallbackStatus.RETRYING, POLICY.max_callback_attempts)
    world = World(job, now=after_grace())
    report = await world.use_case.execute(REAP)
    assert report.callbacks_abandoned == 1
    assert report.callbacks_retried == 0
    assert world.callbacks.calls == 0
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.callback.status is CallbackStatus.FAILED
    assert world.stored.callback.last_error == "CallbackAttemptsExhausted"
    assert world.stored.callback.attempts == POLICY.max_callback_attempts

    world.clock.advance(3600)
    assert (await world.use_case.execute(REAP)).callbacks_abandoned == 0


async def test_unavailable_workflow_is_retried_each_round_then_abandoned():
    world = World(owing(completed(), CallbackStatus.RETRYING, 1), now=after_grace())
    world.callbacks.fail_for(RAW_TOKEN, CallbackUnavailable("ThrottlingException"))
    rounds = []
    for _ in range(POLICY.max_callback_attempts):
        rounds.append(await world.use_case.execute(REAP))
        world.clock.advance(POLICY.callback_lease.total_seconds() + 1)
    assert [(r.callbacks_retried, r.callbacks_abandoned) for r in rounds] == [
        (1, 0),
        (1, 0),
        (0, 1),
    ]
    assert world.stored.callback.status is CallbackStatus.FAILED
    assert world.stored.callback.last_error == "CallbackAttemptsExhausted"
    assert world.stored.callback.attempts == POLICY.max_callback_attempts


async def test_jobs_without_token_or_already_answered_are_not_owed_anything():
    running = a_job(status=JobStatus.DOWNLOADING, total=1, completed=1, token=None)
    no_token = running.complete(FINISHED_AT)
    world = World(no_token, now=after_grace())
    await world.use_case.execute(REAP)
    delivered = completed().callback_delivered(FINISHED_AT)
    world.jobs.items[JOB_ID] = delivered
    world.clock.advance(3600)
    await world.use_case.execute(REAP)
    assert world.callbacks.calls == 0
    assert world.stored == delivered


# -- stalled downloads ----------------------------------------------------------------

STALLED_AT = T0 + timedelta(seconds=10)
AFTER_STALL = STALLED_AT + POLICY.stall_after + timedelta(seconds=1)


def a_task(index: int) -> DownloadTask:
    return DownloadTask(
        job_id=JOB_ID,
        task_id=task_id_for(index),
        index=index,
        url=f"https://files.example/{index}?sig=s{index}",
        file_name=f"part-{index}.csv",
        output_key=f"exports/{JOB_ID}/{index}_part-{index}.csv",
        created_at=T0,
    )


def stalled_downloading(total: int, completed: int = 0, failed: int = 0) -> ExportJob:
    job = a_job(status=JobStatus.DOWNLOADING, total=total, completed=completed, failed=failed)
    return replace(job, updated_at=STALLED_AT)


async def world_with_tasks(now: datetime = AFTER_STALL) -> World:
    """A stalled job (1 of 4 files recorded) whose other work items are nowhere."""
    job = replace(stalled_downloading(total=4, completed=1), counted_apart=True)
    world = World(job, now=now)
    done = a_task(3).start("replica-c", STALLED_AT).succeed(size=1, sha256="0" * 64, now=T0)
    await world.tasks.add_all([done])
    return world


async def test_a_stalled_job_with_nothing_queued_is_dispatched_again():
    world = await world_with_tasks()
    report = await world.use_case.execute(REAP)
    assert report.jobs_redispatched == 1
    # due at once for the dispatchers, who skip what is recorded already
    assert world.stored.dispatch == DispatchProgress(cursor=0, attempts=0)
    assert (world.stored.lease_owner, world.stored.status) == (None, JobStatus.DOWNLOADING)
    claimed = await world.jobs.claim_unfinished_dispatches(
        world.clock.now(), "b", world.clock.now() + timedelta(seconds=30), 5
    )
    assert [j.job_id for j in claimed] == [JOB_ID]
    assert world.queue.refs == []  # the reaper sends nothing itself


async def test_a_stalled_job_behind_a_backlog_is_dispatched_again_only_much_later():
    world = await world_with_tasks()
    world.queue.waiting = 40  # its work items may be waiting their turn
    report = await world.use_case.execute(REAP)
    assert report.jobs_redispatched == 0
    assert (world.stored.dispatch, world.stored.updated_at) == (None, STALLED_AT)
    patience = POLICY.stall_after * POLICY.backlog_patience
    world.clock.current = STALLED_AT + patience - timedelta(seconds=1)
    assert (await world.use_case.execute(REAP)).jobs_redispatched == 0
    world.clock.current = STALLED_AT + patience  # no progress for that long: lost after all
    assert (await world.use_case.execute(REAP)).jobs_redispatched == 1
    assert world.stored.dispatch == DispatchProgress(cursor=0, attempts=0)


async def test_a_stalled_job_of_an_earlier_version_gets_its_unfinished_records_requeued():
    """Dispatched by an earlier version: a record per file, counts on the job item."""
    world = World(stalled_downloading(total=4, completed=1), now=AFTER_STALL)
    pending = a_task(0)
    expired = a_task(1).start("dead-replica", AFTER_STALL - timedelta(seconds=1))
    leased = a_task(2).start("busy-replica", AFTER_STALL + timedelta(minutes=5))
    done = a_task(3).start("replica-c", STALLED_AT).succeed(size=1, sha256="0" * 64, now=T0)
    await world.tasks.add_all([pending, expired, leased, done])
    report = await world.use_case.execute(REAP)
    assert report.jobs_redispatched == 1
    assert world.queue.refs == [TaskRef(JOB_ID, "00000", 0), TaskRef(JOB_ID, "00001", 1)]
    assert world.stored.dispatch is None  # not dispatched anew: its counts are elsewhere
    assert world.stored.updated_at == AFTER_STALL


async def test_a_job_dispatched_again_is_not_again_until_it_stalls_again():
    world = await world_with_tasks()
    await world.use_case.execute(REAP)
    world.clock.advance(60)
    assert (await world.use_case.execute(REAP)).jobs_redispatched == 0  # dispatching
    await world.jobs.advance_dispatch(JOB_ID, "b", 0, None, world.clock.now())  # no-op: not b's
    claimed = await world.jobs.claim_unfinished_dispatches(
        world.clock.now(), "b", world.clock.now() + timedelta(seconds=30), 5
    )
    assert await world.jobs.advance_dispatch(JOB_ID, "b", 0, None, world.clock.now())
    assert claimed and world.stored.dispatch is None
    assert (await world.use_case.execute(REAP)).jobs_redispatched == 0  # progress just now
    world.clock.advance(POLICY.stall_after.total_seconds() + 1)
    assert (await world.use_case.execute(REAP)).jobs_redispatched == 1


@pytest.mark.parametrize(
    ("waiting", "quiet_for"),
    [(40, POLICY.stall_after), (0, ReaperPolicy().lost_after)],  # a backlog; none
)
async def test_job_with_recent_progress_is_not_stalled(waiting, quiet_for):
    world = await world_with_tasks(now=STALLED_AT + quiet_for - timedelta(seconds=1))
    world.queue.waiting = waiting
    report = await world.use_case.execute(REAP)
    assert report.jobs_redispatched == 0
    assert world.queue.refs == []
    assert world.stored.updated_at == STALLED_AT


@pytest.mark.parametrize(("waiting", "redriven"), [(0, 1), (1, 0)])
async def test_with_nothing_queued_a_job_quiet_for_lost_after_has_lost_its_items(waiting, redriven):
    """Nothing waiting, in flight or delayed anywhere: its missing files' work items are
    nowhere (a dispatcher died between its cursor write and its sends). Anything queued
    may be its own: then only stall_after tells."""
    world = await world_with_tasks(now=STALLED_AT + POLICY.lost_after)
    world.queue.waiting = waiting
    report = await world.use_case.execute(REAP)
    assert report.jobs_redispatched == redriven
    assert (world.stored.dispatch is not None) == bool(redriven)


@pytest.mark.parametrize("status", [JobStatus.PROCESSING, JobStatus.POLLING])
async def test_only_downloading_jobs_are_redriven(status):
    job = replace(a_job(status=status), updated_at=STALLED_AT)
    world = World(job, now=AFTER_STALL)
    await world.tasks.add_all([a_task(0)])
    await world.use_case.execute(REAP)
    assert world.queue.refs == []
    assert world.stored == job


async def test_stalled_job_with_every_file_counted_is_completed_and_answered():
    world = World(stalled_downloading(total=3, completed=3), now=AFTER_STALL)
    report = await world.use_case.execute(REAP)
    assert report.jobs_finished == 1
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.completed_at == AFTER_STALL
    assert world.callbacks.successes == [(RAW_TOKEN, success_output(world.stored))]
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.events.names == [JOB_COMPLETED, JOB_ANSWERED]
    assert world.queue.refs == []


async def test_stalled_job_with_failed_files_is_completed_with_the_failure_answer():
    world = World(stalled_downloading(total=3, completed=2, failed=1), now=AFTER_STALL)
    await world.use_case.execute(REAP)
    assert world.stored.status is JobStatus.COMPLETED
    assert world.callbacks.failures == [
        (RAW_TOKEN, "JobCompletedWithFailures", "Job completed with 1 failed tasks out of 3 total")
    ]


async def test_downloading_job_past_the_deadline_is_failed_with_processing_error():
    now = T0 + POLICY.job_deadline + timedelta(seconds=1)
    world = World(stalled_downloading(total=4, completed=1), now=now)
    await world.tasks.add_all([a_task(0)])
    report = await world.use_case.execute(REAP)
    assert report.jobs_finished == 1
    assert world.stored.status is JobStatus.FAILED
    assert world.stored.error is not None
    assert world.stored.error.code == JobErrorCode.PROCESSING_ERROR
    assert world.callbacks.failures == [(RAW_TOKEN, "ProcessingError", world.stored.error.message)]
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.events.names == [JOB_FAILED, JOB_ANSWERED]
    assert world.queue.refs == []


async def test_downloading_job_past_the_deadline_is_failed_even_while_progressing():
    now = T0 + POLICY.job_deadline + timedelta(seconds=1)
    job = replace(a_job(status=JobStatus.DOWNLOADING, total=4, completed=1), updated_at=now)
    world = World(job, now=now)
    await world.use_case.execute(REAP)
    assert world.stored.status is JobStatus.FAILED
    assert world.callbacks.failures[0][1] == "ProcessingError"
