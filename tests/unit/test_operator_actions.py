"""An operator's retry of a finished job's failed files, and a resent answer: when each
applies, and what each changes (in-memory fakes of the same ports as the adapters)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from src.application.ports.workflow_callbacks import CallbackUnavailable
from src.application.use_cases.complete_job import CompleteJob, JobNotFound
from src.application.use_cases.operator_actions import ActionRefused, ResendAnswer, RetryFailedFiles
from src.domain.download_task import DownloadTask, TaskStatus, task_id_for
from src.domain.export_job import ExportJob
from src.domain.job_status import CallbackStatus, JobStatus
from tests.fakes import (
    T0,
    FakeCallbacks,
    FixedClock,
    InMemoryJobs,
    InMemoryTasks,
    RecordingEvents,
    RecordingQueue,
)
from tests.unit.builders import JOB_ID, RAW_TOKEN, a_job

NOW = T0 + timedelta(minutes=10)


def a_file(index: int, status: TaskStatus) -> DownloadTask:
    task = DownloadTask(
        job_id=JOB_ID, task_id=task_id_for(index), index=index, url=f"https://f/{index}",
        file_name=f"{index}.csv", output_key=f"exports/{JOB_ID}/{index}.csv", created_at=T0,
    )  # fmt: skip
    running = task.start_unleased()
    if status is TaskStatus.FAILED:
        return replace(running.fail("HTTP 404", T0), attempts=3)
    return running.succeed(size=5, sha256="a" * 64, now=T0)


class World:
    def __init__(self, job: ExportJob, files: dict[int, TaskStatus]) -> None:
        self.jobs = InMemoryJobs([job])
        self.tasks = InMemoryTasks(self.jobs)
        self.queue = RecordingQueue()
        self.callbacks = FakeCallbacks()
        self.clock = FixedClock(NOW)
        failed = sum(1 for s in files.values() if s is TaskStatus.FAILED)
        self.tasks.progress[JOB_ID] = (0, len(files) - failed, failed)
        for index, status in files.items():
            task = a_file(index, status)
            self.tasks.items[(JOB_ID, task.task_id)] = task
        self.complete = CompleteJob(self.jobs, self.callbacks, RecordingEvents(), self.clock)
        self.retry = RetryFailedFiles(self.jobs, self.tasks, self.queue, self.clock)
        self.resend = ResendAnswer(self.jobs, self.complete, self.clock)

    @property
    def stored(self) -> ExportJob:
        return self.jobs.items[JOB_ID]


def finished(callback: CallbackStatus, *, token: str | None = RAW_TOKEN) -> ExportJob:
    job = a_job(status=JobStatus.COMPLETED, total=3, completed=1, failed=2, token=token)
    return replace(job, completed_at=T0, callback=replace(job.callback, status=callback),
                   counted_apart=True)  # fmt: skip


FILES = {0: TaskStatus.COMPLETED, 1: TaskStatus.FAILED, 2: TaskStatus.FAILED}


@pytest.mark.parametrize(
    ("callback", "token"),
    [(CallbackStatus.NOT_REQUIRED, None), (CallbackStatus.RETRYING, RAW_TOKEN),
     (CallbackStatus.FAILED, RAW_TOKEN)],
)  # fmt: skip
async def test_a_retry_reopens_the_job_and_sends_fresh_work_items_for_the_failed_files(
    callback: CallbackStatus, token: str | None
) -> None:
    world = World(finished(callback, token=token), FILES)

    reopened = await world.retry.execute(JOB_ID)

    assert reopened.status is JobStatus.DOWNLOADING and world.stored.status is JobStatus.DOWNLOADING
    assert (world.stored.completed_tasks, world.stored.failed_tasks) == (1, 0)
    assert world.stored.completed_at is None
    sent = world.queue.refs
    assert [ref.index for ref in sent] == [1, 2]
    assert all(ref.dispatched and ref.dispatched.created_at == NOW for ref in sent)  # fresh
    assert all(ref.dispatched and ref.dispatched.attempts == 0 for ref in sent)
    assert [world.tasks.items[(JOB_ID, ref.task_id)].status for ref in sent] == [
        TaskStatus.PENDING
    ] * 2
    expected = CallbackStatus.PENDING if callback is CallbackStatus.RETRYING else callback
    assert world.stored.callback.status is expected


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        (finished(CallbackStatus.DELIVERED), "delivered"),
        (replace(finished(CallbackStatus.PENDING), status=JobStatus.DOWNLOADING), "still DOWNLOADING"),
        (replace(finished(CallbackStatus.RETRYING), failed_tasks=0, completed_tasks=3), "no failed"),
        (finished(CallbackStatus.PENDING).leased("callback", NOW + timedelta(minutes=1)),
         "being sent"),
        (replace(finished(CallbackStatus.FAILED), status=JobStatus.CANCELLED), "ended CANCELLED"),
        (replace(finished(CallbackStatus.RETRYING), status=JobStatus.FAILED), "ended FAILED"),
        # one of two workflows took the answer, the other's was throttled (RETRYING)
        (replace(finished(CallbackStatus.RETRYING), answered=frozenset({"d1"})), "taken its answer"),
        (replace(finished(CallbackStatus.RETRYING), created_at=NOW - timedelta(hours=23, minutes=30)),
         "deadline"),
    ],
)  # fmt: skip
async def test_a_retry_is_refused_with_the_reason(job: ExportJob, reason: str) -> None:
    world = World(job, FILES)
    with pytest.raises(ActionRefused, match=reason):
        await world.retry.execute(JOB_ID)
    assert world.queue.refs == [] and world.stored == job


async def test_a_retry_of_a_job_counted_by_an_earlier_version_is_refused() -> None:
    world = World(finished(CallbackStatus.RETRYING), FILES)
    del world.tasks.progress[JOB_ID]
    with pytest.raises(ActionRefused, match="earlier version"):
        await world.retry.execute(JOB_ID)
    assert world.queue.refs == []


async def test_a_retry_of_an_unknown_job_is_not_found() -> None:
    world = World(finished(CallbackStatus.RETRYING), FILES)
    with pytest.raises(JobNotFound):
        await world.retry.execute("00000000-0000-0000-0000-000000000000")


async def test_a_resent_answer_reaches_the_workflow_and_is_recorded() -> None:
    job = replace(finished(CallbackStatus.RETRYING), failed_tasks=0, completed_tasks=3)
    world = World(job, {})
    answered = await world.resend.execute(JOB_ID)
    assert world.callbacks.successes and world.callbacks.successes[0][0] == RAW_TOKEN
    assert answered.callback.status is CallbackStatus.DELIVERED
    assert world.stored.callback.status is CallbackStatus.DELIVERED


async def test_a_resend_that_fails_again_stays_retrying() -> None:
    job = replace(finished(CallbackStatus.RETRYING), failed_tasks=0, completed_tasks=3)
    world = World(job, {})
    world.callbacks.fail_for(RAW_TOKEN, CallbackUnavailable("ThrottlingException"))
    answered = await world.resend.execute(JOB_ID)
    assert answered.callback.status is CallbackStatus.RETRYING


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        (finished(CallbackStatus.DELIVERED), "delivered already"),
        (finished(CallbackStatus.NOT_REQUIRED, token=None), "no workflow"),
        (replace(finished(CallbackStatus.FAILED), callback=replace(
            finished(CallbackStatus.FAILED).callback, last_error="TaskTimedOut")), "TaskTimedOut"),
        (replace(finished(CallbackStatus.PENDING), status=JobStatus.POLLING), "still POLLING"),
        (finished(CallbackStatus.RETRYING).leased("reaper", NOW + timedelta(minutes=1)),
         "being sent"),
    ],
)  # fmt: skip
async def test_a_resend_is_refused_with_the_reason(job: ExportJob, reason: str) -> None:
    world = World(job, {})
    with pytest.raises(ActionRefused, match=reason):
        await world.resend.execute(JOB_ID)
    assert world.callbacks.calls == 0
