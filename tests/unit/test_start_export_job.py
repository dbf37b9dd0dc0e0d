from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from src.application.commands import StartExportJobCommand
from src.application.services.workflow_answers import WorkflowAnswers
from src.application.use_cases.start_export_job import StartExportJob
from src.domain.events import JOB_CREATED
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.task_token import TaskToken
from tests.fakes import T0, FakeCallbacks, FixedClock, InMemoryJobs, RecordingEvents
from tests.unit.builders import JOB_ID, RAW_TOKEN

COMMAND = StartExportJobCommand(
    job_id=JOB_ID,
    export_id="exp-1",
    user_id="user-1",
    metadata={"requestedBy": "nightly", "format": "csv"},
    task_token=TaskToken(RAW_TOKEN),
)
# The same jobId with different content: a duplicate must not overwrite anything.
IMPOSTOR = replace(
    COMMAND, export_id="exp-2", metadata={"format": "json"}, task_token=TaskToken("B" * 40)
)


def start(
    jobs: InMemoryJobs,
    events: RecordingEvents | None = None,
    callbacks: FakeCallbacks | None = None,
    max_waiting: int = 10,
) -> StartExportJob:
    clock = FixedClock()
    answers = WorkflowAnswers(jobs, callbacks or FakeCallbacks(), clock)
    return StartExportJob(
        jobs=jobs,
        events=events or RecordingEvents(),
        clock=clock,
        answers=answers,
        max_waiting=max_waiting,
    )


async def test_creates_the_job_with_processing_as_its_first_written_status():
    jobs = InMemoryJobs()
    result = await start(jobs).execute(COMMAND)
    assert result.created
    [first_write] = jobs.created
    assert first_write.status is JobStatus.PROCESSING
    assert (first_write.export_id, first_write.user_id) == ("exp-1", "user-1")
    assert first_write.metadata == {"requestedBy": "nightly", "format": "csv"}
    assert first_write.task_token == TaskToken(RAW_TOKEN)
    assert first_write.callback.status is CallbackStatus.PENDING
    assert first_write.created_at == T0


async def test_created_job_is_scheduled_for_its_first_poll_at_once_in_the_same_write():
    jobs = InMemoryJobs()
    result = await start(jobs).execute(COMMAND)
    stored = jobs.items[JOB_ID]
    assert result.job == stored
    assert (stored.status, jobs.saves) == (JobStatus.PROCESSING, 0)  # one write: the create
    assert stored.poll is not None
    assert stored.poll.next_at == T0
    assert stored.task_token == TaskToken(RAW_TOKEN)
    [claimed] = await jobs.claim_due_for_polling(T0, "poller", T0 + timedelta(minutes=1), 5)
    assert (claimed.status, claimed.poll and claimed.poll.attempts) == (JobStatus.POLLING, 1)


async def test_job_without_token_needs_no_callback():
    jobs = InMemoryJobs()
    await start(jobs).execute(replace(COMMAND, task_token=None))
    assert jobs.items[JOB_ID].callback.status is CallbackStatus.NOT_REQUIRED


async def test_duplicate_returns_created_false_and_the_first_job():
    jobs = InMemoryJobs()
    first = await start(jobs).execute(COMMAND)
    second = await start(jobs).execute(IMPOSTOR)
    assert not second.created
    assert second.job == first.job


async def test_duplicate_leaves_the_first_job_unchanged():
    jobs = InMemoryJobs()
    await start(jobs).execute(COMMAND)
    before = jobs.items[JOB_ID]
    await start(jobs).execute(IMPOSTOR)
    after = jobs.items[JOB_ID]
    assert after == before
    assert after.task_token is not None
    assert after.task_token.reveal() == RAW_TOKEN
    assert after.metadata == {"requestedBy": "nightly", "format": "csv"}
    assert after.export_id == "exp-1"


async def test_duplicate_of_a_completed_job_does_not_reopen_it():
    jobs = InMemoryJobs()
    await start(jobs).execute(COMMAND)
    done = replace(jobs.items[JOB_ID], status=JobStatus.COMPLETED, total_tasks=2, completed_tasks=2)
    jobs.items[JOB_ID] = done
    result = await start(jobs).execute(COMMAND)
    assert not result.created
    assert result.job == done
    assert jobs.items[JOB_ID] == done
    assert jobs.items[JOB_ID].status is JobStatus.COMPLETED


async def test_duplicate_of_a_job_left_processing_unscheduled_schedules_its_polling():
    jobs = InMemoryJobs()
    await start(jobs).execute(COMMAND)
    # as an earlier version (or the original) left it: PROCESSING, no poll scheduled
    jobs.items[JOB_ID] = replace(jobs.created[0], poll=None)
    result = await start(jobs).execute(COMMAND)
    assert not result.created
    assert jobs.items[JOB_ID].status is JobStatus.POLLING
    assert jobs.items[JOB_ID].export_id == "exp-1"
    assert jobs.items[JOB_ID].task_token == TaskToken(RAW_TOKEN)


async def test_job_created_event_is_published_once_for_duplicates():
    jobs, events = InMemoryJobs(), RecordingEvents()
    await start(jobs, events).execute(COMMAND)
    await start(jobs, events).execute(COMMAND)
    await start(jobs, events).execute(IMPOSTOR)
    assert events.names == [JOB_CREATED]
    assert events.events[0].job_id == JOB_ID
    assert events.events[0].at == T0


async def test_jobs_with_different_ids_are_both_created():
    jobs = InMemoryJobs()
    other = "123E4567-E89B-12D3-A456-426614174000"  # same UUID, other case: another key
    assert (await start(jobs).execute(COMMAND)).created
    assert (await start(jobs).execute(replace(COMMAND, job_id=other))).created
    assert set(jobs.items) == {JOB_ID, other}


# --- the same jobId again: redelivery, another workflow, or a conflict ------------------

SECOND = replace(COMMAND, task_token=TaskToken("SECOND" * 8))
THIRD = replace(COMMAND, task_token=TaskToken("THIRD" * 8))


async def test_another_workflow_for_a_running_job_waits_with_it():
    jobs, callbacks = InMemoryJobs(), FakeCallbacks()
    await start(jobs).execute(COMMAND)
    result = await start(jobs, callbacks=callbacks).execute(SECOND)
    assert not result.created and not result.conflict
    stored = jobs.items[JOB_ID]
    assert stored.waiting_tokens == (SECOND.task_token,)
    assert stored.task_token == COMMAND.task_token
    assert callbacks.calls == 0  # answered when the job ends, not now


async def test_redelivery_of_the_second_workflows_message_changes_nothing():
    jobs = InMemoryJobs()
    await start(jobs).execute(COMMAND)
    await start(jobs).execute(SECOND)
    before = jobs.items[JOB_ID]
    await start(jobs).execute(SECOND)
    await start(jobs).execute(COMMAND)
    assert jobs.items[JOB_ID] == before


async def test_a_job_without_a_token_gains_its_first_waiting_workflow():
    jobs = InMemoryJobs()
    await start(jobs).execute(replace(COMMAND, task_token=None))
    await start(jobs).execute(SECOND)
    stored = jobs.items[JOB_ID]
    assert stored.has_task_token()
    assert stored.callback.status is CallbackStatus.PENDING
    assert stored.unanswered_tokens() == (SECOND.task_token,)


async def test_a_workflow_for_a_finished_job_is_answered_at_once_from_its_outcome():
    jobs, callbacks = InMemoryJobs(), FakeCallbacks()
    await start(jobs).execute(COMMAND)
    done = jobs.items[JOB_ID].start_polling(T0).start_downloading(0, T0).complete(T0)
    jobs.items[JOB_ID] = replace(
        done, callback=replace(done.callback, status=CallbackStatus.DELIVERED)
    )
    await start(jobs, callbacks=callbacks).execute(THIRD)
    [(token, output)] = callbacks.successes
    assert token == THIRD.task_token.reveal()
    assert output["status"] == "COMPLETED" and output["jobId"] == JOB_ID
    await start(jobs, callbacks=callbacks).execute(THIRD)  # redelivered: answered once only
    assert callbacks.calls == 1
    assert jobs.items[JOB_ID].status is JobStatus.COMPLETED


async def test_same_job_id_for_another_export_is_a_conflict_answered_and_never_attached():
    jobs, callbacks = InMemoryJobs(), FakeCallbacks()
    await start(jobs).execute(COMMAND)
    before = jobs.items[JOB_ID]
    result = await start(jobs, callbacks=callbacks).execute(IMPOSTOR)
    assert result.conflict and not result.created
    assert jobs.items[JOB_ID] == before
    [(token, error, cause)] = callbacks.failures
    assert (token, error) == ("B" * 40, "JobIdConflict")
    assert JOB_ID in cause


async def test_conflict_without_a_token_answers_nobody():
    jobs, callbacks = InMemoryJobs(), FakeCallbacks()
    await start(jobs).execute(COMMAND)
    result = await start(jobs, callbacks=callbacks).execute(replace(IMPOSTOR, task_token=None))
    assert result.conflict
    assert callbacks.calls == 0


async def test_waiting_workflows_are_bounded_and_the_one_over_the_bound_is_told():
    jobs, callbacks = InMemoryJobs(), FakeCallbacks()
    await start(jobs).execute(COMMAND)
    await start(jobs, max_waiting=1).execute(SECOND)
    await start(jobs, callbacks=callbacks, max_waiting=1).execute(THIRD)
    assert jobs.items[JOB_ID].waiting_tokens == (SECOND.task_token,)
    [(token, error, _cause)] = callbacks.failures
    assert (token, error) == (THIRD.task_token.reveal(), "TooManyWaitingWorkflows")
