from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from src.application.commands import CancelJobCommand
from src.application.ports.workflow_callbacks import CallbackUnavailable
from src.application.use_cases.cancel_job import CancelJob
from src.application.use_cases.complete_job import CompleteJob, JobNotFound
from src.domain.errors import JobErrorCode
from src.domain.events import JOB_ANSWERED, JOB_CANCELLED
from src.domain.export_job import ExportJob, JobError
from src.domain.job_status import CallbackStatus, JobStatus
from tests.fakes import T0, FakeCallbacks, FixedClock, InMemoryJobs, RecordingEvents
from tests.unit.builders import JOB_ID, RAW_TOKEN, a_job

MESSAGE = "Stopped by operator alice"
OPERATOR = CancelJobCommand(JOB_ID, MESSAGE)
WORKFLOW_GONE = CancelJobCommand(
    JOB_ID, "The workflow stopped waiting", notify_workflow=False, gone_code="TaskTimedOut"
)
NOW = T0 + timedelta(seconds=5)
RUNNING = [JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING]
FINISHED = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]


class World:
    def __init__(self, *jobs: ExportJob) -> None:
        self.jobs = InMemoryJobs(jobs)
        self.callbacks = FakeCallbacks()
        self.events = RecordingEvents()
        self.clock = FixedClock(NOW)
        complete = CompleteJob(self.jobs, self.callbacks, self.events, self.clock)
        self.use_case = CancelJob(self.jobs, complete, self.events, self.clock)

    @property
    def stored(self) -> ExportJob:
        return self.jobs.items[JOB_ID]


@pytest.mark.parametrize("status", RUNNING)
async def test_running_job_is_cancelled_with_the_cancelled_code_and_the_message(status):
    world = World(a_job(status=status, total=3, completed=1))
    result = await world.use_case.execute(OPERATOR)
    assert result.cancelled
    assert world.stored == result.job
    assert world.stored.status is JobStatus.CANCELLED
    assert world.stored.error == JobError(JobErrorCode.CANCELLED, MESSAGE)
    assert world.stored.completed_at == NOW
    assert (world.stored.total_tasks, world.stored.completed_tasks) == (3, 1)


async def test_operator_cancel_answers_the_workflow_with_job_cancelled():
    world = World(a_job(status=JobStatus.DOWNLOADING, total=2))
    await world.use_case.execute(OPERATOR)
    assert world.callbacks.failures == [(RAW_TOKEN, "JobCancelled", MESSAGE)]
    assert world.callbacks.successes == []
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.attempts == 1


async def test_operator_cancel_of_a_job_without_token_sends_nothing():
    world = World(a_job(status=JobStatus.POLLING, token=None))
    result = await world.use_case.execute(OPERATOR)
    assert result.cancelled
    assert world.callbacks.calls == 0
    assert world.stored.status is JobStatus.CANCELLED
    assert world.stored.callback.status is CallbackStatus.NOT_REQUIRED


async def test_operator_cancel_whose_answer_is_unavailable_is_left_for_the_reaper():
    world = World(a_job(status=JobStatus.POLLING))
    world.callbacks.fail_for(RAW_TOKEN, CallbackUnavailable("ThrottlingException"))
    result = await world.use_case.execute(OPERATOR)
    assert result.cancelled
    assert world.stored.status is JobStatus.CANCELLED
    assert world.stored.callback.status is CallbackStatus.RETRYING
    assert world.stored.callback.last_error == "ThrottlingException"
    assert await world.jobs.list_owing_callbacks(NOW, 10) == [world.stored]


async def test_workflow_gone_cancel_sends_no_callback_and_records_the_code():
    world = World(a_job(status=JobStatus.DOWNLOADING, total=2))
    result = await world.use_case.execute(WORKFLOW_GONE)
    assert result.cancelled
    assert world.callbacks.calls == 0
    assert world.callbacks.heartbeats == []
    assert world.stored.status is JobStatus.CANCELLED
    assert world.stored.error == JobError(JobErrorCode.CANCELLED, WORKFLOW_GONE.message)
    assert world.stored.callback.status is CallbackStatus.FAILED
    assert world.stored.callback.last_error == "TaskTimedOut"
    assert world.stored.callback.attempts == 0
    # Nothing is owed: the reaper will not try the dead token later.
    assert await world.jobs.list_owing_callbacks(NOW + timedelta(days=1), 10) == []


@pytest.mark.parametrize("status", FINISHED)
@pytest.mark.parametrize("command", [OPERATOR, WORKFLOW_GONE], ids=["operator", "gone"])
async def test_finished_job_is_untouched(status, command):
    finished = a_job(status=status, total=1, completed=1)
    world = World(finished)
    result = await world.use_case.execute(command)
    assert not result.cancelled
    assert result.job == finished
    assert world.stored == finished
    assert world.jobs.saves == 0
    assert world.callbacks.calls == 0
    assert world.events.events == []


async def test_job_cancelled_event_is_published_once():
    world = World(a_job(status=JobStatus.POLLING))
    await world.use_case.execute(OPERATOR)
    again = await world.use_case.execute(OPERATOR)
    assert not again.cancelled
    assert world.events.names == [JOB_CANCELLED, JOB_ANSWERED]
    assert world.events.events[0].job_id == JOB_ID
    assert world.events.events[0].at == NOW
    assert world.callbacks.calls == 1


async def test_two_concurrent_cancels_cancel_and_answer_once():
    world = World(a_job(status=JobStatus.DOWNLOADING, total=2))
    results = await asyncio.gather(
        world.use_case.execute(OPERATOR), world.use_case.execute(OPERATOR)
    )
    assert sorted(result.cancelled for result in results) == [False, True]
    assert world.callbacks.failures == [(RAW_TOKEN, "JobCancelled", MESSAGE)]
    assert world.events.names == [JOB_CANCELLED, JOB_ANSWERED]


async def test_unknown_job_raises_job_not_found():
    with pytest.raises(JobNotFound):
        await World().use_case.execute(OPERATOR)
