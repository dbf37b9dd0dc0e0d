from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
import structlog
import structlog.testing

from src.application.commands import SendHeartbeatsCommand
from src.application.ports.workflow_callbacks import (
    CallbackRejected,
    CallbackUnavailable,
    TaskClosed,
)
from src.application.use_cases.cancel_job import CancelJob
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.send_heartbeats import SendHeartbeats
from src.domain.errors import JobErrorCode
from src.domain.events import JOB_CANCELLED
from src.domain.export_job import ExportJob
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.task_token import TaskToken
from tests.fakes import T0, FakeCallbacks, FixedClock, InMemoryJobs, RecordingEvents
from tests.unit.builders import JOB_ID, RAW_TOKEN, a_job

INTERVAL = timedelta(seconds=60)
BEAT = SendHeartbeatsCommand()
RUNNING = [JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING]
FINISHED = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]


class World:
    def __init__(self, *jobs: ExportJob) -> None:
        self.jobs = InMemoryJobs(jobs)
        self.callbacks = FakeCallbacks()
        self.events = RecordingEvents()
        self.clock = FixedClock(T0 + timedelta(seconds=1))
        self.use_case = self.replica()

    def replica(self) -> SendHeartbeats:
        """Another service replica: its own use case objects over the same shared state."""
        complete = CompleteJob(self.jobs, self.callbacks, self.events, self.clock)
        cancel = CancelJob(self.jobs, complete, self.events, self.clock)
        return SendHeartbeats(self.jobs, self.callbacks, cancel, self.clock, INTERVAL)

    @property
    def stored(self) -> ExportJob:
        return self.jobs.items[JOB_ID]


def job_number(n: int, status: JobStatus = JobStatus.DOWNLOADING) -> ExportJob:
    return a_job(
        status=status, job_id=f"123e4567-e89b-12d3-a456-42661417400{n}", token=f"{RAW_TOKEN}{n}"
    )


@pytest.mark.parametrize("status", RUNNING)
async def test_due_job_gets_one_heartbeat_and_its_next_one_moves_by_the_interval(status):
    job = a_job(status=status)
    world = World(job)
    now = world.clock.now()
    report = await world.use_case.execute(BEAT)
    assert report.sent == 1
    assert world.callbacks.heartbeats == [RAW_TOKEN]
    assert world.jobs.next_heartbeats[JOB_ID] == now + INTERVAL
    assert world.stored == job  # bookkeeping only: same version, nothing else changed
    assert world.callbacks.calls == 0


async def test_heartbeat_is_not_sent_again_before_the_interval_has_passed():
    world = World(a_job(status=JobStatus.POLLING))
    await world.use_case.execute(BEAT)
    again = await world.use_case.execute(BEAT)
    assert again.sent == 0
    world.clock.advance(INTERVAL.total_seconds() - 1)
    assert (await world.use_case.execute(BEAT)).sent == 0
    assert world.callbacks.heartbeats == [RAW_TOKEN]


async def test_next_heartbeat_is_sent_once_the_interval_has_passed():
    world = World(a_job(status=JobStatus.POLLING))
    await world.use_case.execute(BEAT)
    world.clock.advance(INTERVAL.total_seconds())
    report = await world.use_case.execute(BEAT)
    assert report.sent == 1
    assert world.callbacks.heartbeats == [RAW_TOKEN, RAW_TOKEN]
    assert world.jobs.next_heartbeats[JOB_ID] == world.clock.now() + INTERVAL


async def test_job_without_token_gets_no_heartbeat():
    world = World(a_job(status=JobStatus.DOWNLOADING, token=None))
    report = await world.use_case.execute(BEAT)
    assert report.sent == 0
    assert world.callbacks.heartbeat_attempts == []


@pytest.mark.parametrize("status", FINISHED)
async def test_finished_job_gets_no_heartbeat(status):
    world = World(a_job(status=status, total=1, completed=1))
    report = await world.use_case.execute(BEAT)
    assert report.sent == 0
    assert world.callbacks.heartbeat_attempts == []


async def test_job_that_finished_since_its_last_heartbeat_gets_no_more():
    world = World(a_job(status=JobStatus.DOWNLOADING, total=1, completed=1))
    await world.use_case.execute(BEAT)
    world.jobs.items[JOB_ID] = world.stored.complete(world.clock.now())
    world.clock.advance(INTERVAL.total_seconds())
    assert (await world.use_case.execute(BEAT)).sent == 0
    assert world.callbacks.heartbeats == [RAW_TOKEN]


async def test_two_replicas_at_once_send_one_heartbeat_per_due_job():
    jobs = [job_number(n) for n in range(3)]
    world = World(*jobs)
    reports = await asyncio.gather(world.use_case.execute(BEAT), world.replica().execute(BEAT))
    assert sum(report.sent for report in reports) == 3
    assert sorted(world.callbacks.heartbeats) == sorted(job.task_token.reveal() for job in jobs)


async def test_limit_bounds_one_round():
    world = World(*(job_number(n) for n in range(3)))
    assert (await world.use_case.execute(SendHeartbeatsCommand(limit=2))).sent == 2
    assert (await world.use_case.execute(SendHeartbeatsCommand(limit=2))).sent == 1
    assert len(set(world.callbacks.heartbeats)) == 3


@pytest.mark.parametrize("code", ["TaskTimedOut", "TaskDoesNotExist"])
async def test_closed_task_cancels_the_job_without_answering(code):
    world = World(a_job(status=JobStatus.DOWNLOADING, total=4, completed=1))
    world.callbacks.fail_heartbeats_for(RAW_TOKEN, TaskClosed(code, "gone"))
    report = await world.use_case.execute(BEAT)
    assert report.cancelled == 1
    assert world.stored.status is JobStatus.CANCELLED
    assert world.stored.error is not None
    assert world.stored.error.code == JobErrorCode.CANCELLED
    assert code in world.stored.error.message
    assert world.stored.callback.status is CallbackStatus.FAILED
    assert world.stored.callback.last_error == code
    assert world.callbacks.failures == []  # the send_failure path is open: none was sent
    assert world.callbacks.successes == []
    assert world.events.names == [JOB_CANCELLED]


async def test_unavailable_heartbeat_leaves_the_job_alone_and_is_retried_next_time():
    job = a_job(status=JobStatus.POLLING)
    world = World(job)
    world.callbacks.fail_heartbeats_for(RAW_TOKEN, CallbackUnavailable("ThrottlingException"))
    report = await world.use_case.execute(BEAT)
    assert report.cancelled == 0
    assert world.stored == job
    assert world.jobs.saves == 0
    assert world.events.events == []
    assert world.callbacks.heartbeats == []
    assert world.callbacks.heartbeat_attempts == [RAW_TOKEN]

    world.callbacks.recover(RAW_TOKEN)
    world.clock.advance(INTERVAL.total_seconds())
    assert (await world.use_case.execute(BEAT)).sent == 1
    assert world.callbacks.heartbeats == [RAW_TOKEN]
    assert world.stored == job


@pytest.mark.parametrize("code", ["InvalidToken", "ValidationException"])
async def test_invalid_token_stops_heartbeats_for_it_and_the_job_goes_on(code):
    job = a_job(status=JobStatus.DOWNLOADING, total=4, completed=1)
    world = World(job)
    world.callbacks.fail_heartbeats_for(RAW_TOKEN, CallbackRejected(code))
    report = await world.use_case.execute(BEAT)
    assert report.cancelled == 0
    assert world.stored.status is JobStatus.DOWNLOADING
    assert world.stored.callback.status is CallbackStatus.PENDING  # it will be answered
    assert world.stored.heartbeat_stopped == {TaskToken(RAW_TOKEN).digest()}
    world.clock.advance(INTERVAL.total_seconds())
    await world.use_case.execute(BEAT)
    assert world.callbacks.heartbeat_attempts == [RAW_TOKEN]  # never tried again
    assert world.events.events == []


async def test_every_waiting_workflow_gets_heartbeats():
    second = TaskToken("SECOND" * 8)
    world = World(a_job(status=JobStatus.POLLING).attach(second))
    await world.use_case.execute(BEAT)
    assert world.callbacks.heartbeats == [RAW_TOKEN, second.reveal()]


async def test_one_workflow_giving_up_does_not_cancel_a_job_others_wait_for():
    second = TaskToken("SECOND" * 8)
    world = World(a_job(status=JobStatus.DOWNLOADING, total=2).attach(second))
    world.callbacks.fail_heartbeats_for(RAW_TOKEN, TaskClosed("TaskTimedOut"))
    report = await world.use_case.execute(BEAT)
    assert report.cancelled == 0
    assert world.stored.status is JobStatus.DOWNLOADING
    assert world.stored.unanswered_tokens() == (second,)
    world.callbacks.fail_heartbeats_for(second.reveal(), TaskClosed("TaskDoesNotExist"))
    world.clock.advance(INTERVAL.total_seconds())
    assert (await world.use_case.execute(BEAT)).cancelled == 1
    assert world.stored.status is JobStatus.CANCELLED


async def test_a_workflow_attached_after_the_heartbeat_read_keeps_the_job_alive():
    """The heartbeat saw one workflow; another attached before the cancel was written."""
    world = World(a_job(status=JobStatus.DOWNLOADING, total=2))
    world.callbacks.fail_heartbeats_for(RAW_TOKEN, TaskClosed("TaskTimedOut"))
    late = TaskToken("LATE" * 10)
    claim = world.jobs.claim_due_heartbeats

    async def claim_then_attach(*args: object) -> list[ExportJob]:
        claimed = await claim(*args)  # type: ignore[arg-type]
        await world.jobs.attach_workflow(JOB_ID, late, 10)
        return claimed

    world.jobs.claim_due_heartbeats = claim_then_attach  # type: ignore[method-assign]
    report = await world.use_case.execute(BEAT)
    assert report.cancelled == 0
    assert world.stored.status is JobStatus.DOWNLOADING
    assert world.stored.unanswered_tokens() == (late,)


async def test_a_heartbeat_refused_because_the_job_just_answered_cancels_nothing():
    """Claimed for its heartbeat, the job finished and answered its workflow before the
    heartbeat went out: the closed task is the answer taken, not a workflow that gave up."""
    world = World(a_job(status=JobStatus.DOWNLOADING, total=1))
    original = world.callbacks.send_heartbeat

    async def finished_meanwhile(token):  # the answer wins the race
        stored = world.stored
        world.jobs.items[JOB_ID] = replace(
            stored.with_progress(1, 0, None).complete(T0), version=stored.version + 1
        )
        world.callbacks.fail_heartbeats_for(RAW_TOKEN, TaskClosed("TaskTimedOut", "used"))
        return await original(token)

    world.callbacks.send_heartbeat = finished_meanwhile
    with structlog.testing.capture_logs() as logs:
        report = await world.use_case.execute(BEAT)

    assert report.cancelled == 0
    assert world.stored.status is JobStatus.COMPLETED
    assert world.events.names == []
    events = [line["event"] for line in logs]
    assert "workflow gave up" not in events  # was logged (and a cancel tried) every time
    assert "heartbeat after the job's answer; nothing to do" in events
