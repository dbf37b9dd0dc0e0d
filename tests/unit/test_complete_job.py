from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog

from src.application.callback_answer import success_output
from src.application.commands import CompleteJobCommand
from src.application.ports.workflow_callbacks import CallbackRejected, CallbackUnavailable
from src.application.use_cases import complete_job as complete_job_module
from src.application.use_cases.complete_job import CompleteJob, JobNotFound
from src.domain.errors import JobErrorCode
from src.domain.events import JOB_ANSWERED, JOB_COMPLETED, JOB_FAILED
from src.domain.export_job import ExportJob, JobError
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.task_token import TaskToken, mask_token
from src.infrastructure.log_setup import configure_logging, detach_logging
from tests.fakes import T0, FakeCallbacks, FixedClock, InMemoryJobs, RecordingEvents
from tests.unit.builders import JOB_ID, RAW_TOKEN, a_job

DONE = CompleteJobCommand(JOB_ID)


class World:
    def __init__(self, *jobs: ExportJob) -> None:
        self.jobs = InMemoryJobs(jobs)
        self.callbacks = FakeCallbacks()
        self.events = RecordingEvents()
        self.clock = FixedClock(T0 + timedelta(seconds=3))
        self.use_case = CompleteJob(self.jobs, self.callbacks, self.events, self.clock)

    @property
    def stored(self) -> ExportJob:
        return self.jobs.items[JOB_ID]


def downloading(total: int, completed: int, failed: int, token: str | None = RAW_TOKEN):
    return a_job(
        status=JobStatus.DOWNLOADING, total=total, completed=completed, failed=failed, token=token
    )


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The service's real logging pipeline, writing JSON lines into a buffer."""
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    structlog.configure(cache_logger_on_first_use=False)  # let the next test reconfigure
    monkeypatch.setattr(complete_job_module, "log", structlog.get_logger("complete_job"))
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    structlog.reset_defaults()
    detach_logging()


async def test_success_sends_the_success_payload_once():
    world = World(downloading(3, 3, 0))
    result = await world.use_case.execute(DONE)
    assert result.won
    assert result.job.status is JobStatus.COMPLETED
    assert world.callbacks.successes == [(RAW_TOKEN, success_output(result.job))]
    assert world.callbacks.failures == []
    output = world.callbacks.successes[0][1]
    assert (output["totalTasks"], output["completedTasks"], output["failedTasks"]) == (3, 3, 0)
    assert output["durationMs"] == 3000


async def test_success_records_the_delivered_callback_on_the_stored_job():
    world = World(downloading(3, 3, 0))
    result = await world.use_case.execute(DONE)
    assert world.stored == result.job
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.attempts == 1
    assert world.events.names == [JOB_COMPLETED, JOB_ANSWERED]


async def test_partial_failure_sends_the_failure_callback():
    world = World(downloading(10, 7, 3))
    result = await world.use_case.execute(DONE)
    assert result.job.status is JobStatus.COMPLETED
    assert result.job.failed_tasks == 3
    assert world.callbacks.successes == []
    assert world.callbacks.failures == [
        (RAW_TOKEN, "JobCompletedWithFailures", "Job completed with 3 failed tasks out of 10 total")
    ]


async def test_job_without_token_sends_no_callback():
    world = World(downloading(2, 2, 0, token=None))
    result = await world.use_case.execute(DONE)
    assert result.won
    assert world.callbacks.calls == 0
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.callback.status is CallbackStatus.NOT_REQUIRED
    assert world.stored.callback.attempts == 0


async def test_failure_command_fails_the_job_and_answers_with_its_error_name():
    world = World(a_job(status=JobStatus.POLLING))
    failure = JobError(JobErrorCode.EXPORT_EXPIRED, "export expired upstream")
    result = await world.use_case.execute(CompleteJobCommand(JOB_ID, failure))
    assert result.won
    assert world.stored.status is JobStatus.FAILED
    assert world.stored.error == failure
    assert world.callbacks.failures == [(RAW_TOKEN, "ExportExpired", "export expired upstream")]
    assert world.events.names == [JOB_FAILED, JOB_ANSWERED]


async def test_rejected_callback_keeps_the_job_completed_and_records_the_error():
    world = World(downloading(3, 3, 0))
    world.callbacks.fail_for(RAW_TOKEN, CallbackRejected("TaskTimedOut", "too late"))
    result = await world.use_case.execute(DONE)
    assert result.won
    for job in (result.job, world.stored):
        assert job.status is JobStatus.COMPLETED
        assert job.callback.status is CallbackStatus.FAILED
        assert job.callback.last_error == "TaskTimedOut"
        assert job.callback.attempts == 1


async def test_unavailable_callback_is_left_for_the_reaper_and_never_fails_the_job():
    world = World(downloading(10, 7, 3))
    world.callbacks.fail_for(RAW_TOKEN, CallbackUnavailable("ThrottlingException"))
    await world.use_case.execute(DONE)
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.callback.status is CallbackStatus.RETRYING
    assert world.stored.callback.last_error == "ThrottlingException"
    assert world.stored.lease_expires_at is None  # the reaper may take it at once


async def test_the_winner_holds_the_answer_lease_while_it_answers():
    world = World(downloading(3, 3, 0))
    seen = []
    send = world.callbacks.send_success

    async def spy(token, output):
        seen.append(world.stored.is_leased(world.clock.now()))
        await send(token, output)

    world.callbacks.send_success = spy
    await world.use_case.execute(DONE)
    assert seen == [True]
    assert not world.stored.is_leased(world.clock.now())


async def test_rejected_callback_log_shows_only_the_masked_token(log_lines):
    world = World(downloading(3, 3, 0))
    world.callbacks.fail_for(RAW_TOKEN, CallbackRejected("TaskTimedOut"))
    await world.use_case.execute(DONE)
    lines = log_lines()
    failed = [line for line in lines if line["event"] == "workflow callback failed"]
    assert len(failed) == 1
    assert failed[0]["task_token"] == mask_token(RAW_TOKEN) == "AAAAKgAA...********...AAAA"
    assert failed[0]["error_code"] == "TaskTimedOut"
    assert failed[0]["level"] == "error"
    assert RAW_TOKEN not in json.dumps(lines)


async def test_delivered_callback_log_shows_only_the_masked_token(log_lines):
    world = World(downloading(3, 3, 0))
    await world.use_case.execute(DONE)
    lines = log_lines()
    answered = [line for line in lines if line["event"] == "workflow answered"]
    assert [line["task_token"] for line in answered] == [mask_token(RAW_TOKEN)]
    assert RAW_TOKEN not in json.dumps(lines)


async def test_two_concurrent_completions_send_exactly_one_callback():
    world = World(downloading(3, 3, 0))
    first, second = await asyncio.gather(world.use_case.execute(DONE), world.use_case.execute(DONE))
    assert [first.won, second.won].count(True) == 1
    assert world.callbacks.calls == 1
    assert world.events.names == [JOB_COMPLETED, JOB_ANSWERED]
    assert world.stored.status is JobStatus.COMPLETED
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.attempts == 1


async def test_concurrent_complete_and_fail_have_exactly_one_winner():
    world = World(downloading(3, 3, 0))
    failure = JobError(JobErrorCode.PROCESSING_ERROR, "operator stop")
    results = await asyncio.gather(
        world.use_case.execute(DONE), world.use_case.execute(CompleteJobCommand(JOB_ID, failure))
    )
    winners = [result for result in results if result.won]
    assert len(winners) == 1
    assert world.callbacks.calls == 1
    assert world.stored.status is winners[0].job.status


async def test_already_finished_job_is_left_alone():
    finished = a_job(status=JobStatus.COMPLETED, total=1, completed=1)
    world = World(finished)
    result = await world.use_case.execute(DONE)
    assert not result.won
    assert result.job == finished
    assert world.callbacks.calls == 0
    assert world.events.events == []
    assert world.jobs.saves == 0


async def test_unknown_job_raises_job_not_found():
    with pytest.raises(JobNotFound):
        await World().use_case.execute(DONE)


async def test_files_still_pending_leave_the_job_running_and_send_nothing():
    world = World(downloading(3, 2, 0))
    result = await world.use_case.execute(DONE)
    assert not result.won
    assert world.callbacks.calls == 0
    assert world.events.events == []
    assert world.stored.status is JobStatus.DOWNLOADING


# --- several workflows wait for one job (a re-run that reused the jobId) ---------------

SECOND = "SECOND" * 8


def with_second_workflow(job: ExportJob) -> ExportJob:
    return job.attach(TaskToken(SECOND))


async def test_every_waiting_workflow_gets_the_same_answer_once():
    world = World(with_second_workflow(downloading(total=2, completed=2, failed=0)))
    await world.use_case.execute(DONE)
    assert [token for token, _ in world.callbacks.successes] == [RAW_TOKEN, SECOND]
    first, second = (output for _, output in world.callbacks.successes)
    assert first == second
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.unanswered_tokens() == ()
    await world.use_case.answer(world.stored)  # a late retry finds nobody left to answer
    assert world.callbacks.calls == 2


async def test_a_workflow_that_could_not_be_reached_is_the_only_one_answered_again():
    world = World(with_second_workflow(downloading(total=2, completed=1, failed=1)))
    world.callbacks.fail_for(SECOND, CallbackUnavailable("ThrottlingException"))
    await world.use_case.execute(DONE)
    assert world.stored.callback.status is CallbackStatus.RETRYING
    assert world.stored.unanswered_tokens() == (TaskToken(SECOND),)
    world.callbacks.recover(SECOND)
    await world.use_case.answer(world.stored)
    answered = [token for token, _error, _cause in world.callbacks.failures]
    assert answered == [RAW_TOKEN, SECOND]
    assert world.stored.callback.status is CallbackStatus.DELIVERED


async def test_a_workflow_that_refuses_its_answer_does_not_stop_the_others():
    world = World(with_second_workflow(downloading(total=1, completed=1, failed=0)))
    world.callbacks.fail_for(RAW_TOKEN, CallbackRejected("TaskTimedOut"))
    await world.use_case.execute(DONE)
    assert [token for token, _ in world.callbacks.successes] == [SECOND]
    assert world.stored.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.last_error == "TaskTimedOut"
    assert world.stored.unanswered_tokens() == ()


class CountingReads(InMemoryJobs):
    reads = 0

    async def get(self, job_id: str, *, counted: bool = True) -> ExportJob | None:
        self.reads += 1
        return await super().get(job_id, counted=counted)


async def test_a_held_job_is_finished_without_reading_it():
    world = World()
    world.jobs = jobs = CountingReads([a_job(status=JobStatus.POLLING)])
    world.use_case = CompleteJob(jobs, world.callbacks, world.events, world.clock)
    failure = JobError(JobErrorCode.EXPORT_EXPIRED, "gone")
    result = await world.use_case.execute(CompleteJobCommand(JOB_ID, failure, held=world.stored))
    assert (result.won, jobs.reads, world.stored.status) == (True, 0, JobStatus.FAILED)
    assert len(world.callbacks.failures) == 1


async def test_a_stale_held_job_is_read_again_and_finished_once():
    world = World()
    world.jobs = jobs = CountingReads([a_job(status=JobStatus.POLLING)])
    world.use_case = CompleteJob(jobs, world.callbacks, world.events, world.clock)
    stale = world.stored
    jobs.items[JOB_ID] = await jobs.save(stale)  # someone wrote since: the version moved on
    failure = JobError(JobErrorCode.EXPORT_EXPIRED, "gone")
    result = await world.use_case.execute(CompleteJobCommand(JOB_ID, failure, held=stale))
    assert (result.won, jobs.reads, world.stored.status) == (True, 1, JobStatus.FAILED)
    assert len(world.callbacks.failures) == 1
