from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from src.domain.errors import IllegalTransition, InvalidCounters, JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.job_status import ALLOWED, TERMINAL, CallbackStatus, JobStatus
from src.domain.task_token import TaskToken
from tests.fakes import T0
from tests.unit.builders import JOB_ID, RAW_TOKEN, a_job

S = JobStatus
LATER = T0 + timedelta(seconds=30)


def new_job(token: str | None = RAW_TOKEN) -> ExportJob:
    return ExportJob.create(
        job_id=JOB_ID,
        export_id="exp-1",
        user_id="user-1",
        now=T0,
        metadata={"format": "csv"},
        task_token=TaskToken(token) if token else None,
    )


# --- creation -------------------------------------------------------------------------


def test_create_starts_processing_with_counters_at_zero():
    job = new_job()
    assert job.status is S.PROCESSING
    assert (job.total_tasks, job.completed_tasks, job.failed_tasks) == (0, 0, 0)
    assert job.created_at == job.updated_at == T0
    assert job.completed_at is None
    assert job.error is None
    assert job.version == 0
    assert job.metadata == {"format": "csv"}


def test_create_with_token_expects_a_callback():
    job = new_job(RAW_TOKEN)
    assert job.has_task_token()
    assert job.callback.status is CallbackStatus.PENDING
    assert job.callback.attempts == 0


def test_create_without_token_needs_no_callback():
    job = new_job(None)
    assert not job.has_task_token()
    assert job.callback.status is CallbackStatus.NOT_REQUIRED


def test_create_copies_metadata_so_later_changes_to_the_input_do_not_leak_in():
    metadata = {"format": "csv"}
    job = ExportJob.create(job_id=JOB_ID, export_id="e", user_id="u", now=T0, metadata=metadata)
    metadata["format"] = "json"
    assert job.metadata == {"format": "csv"}


def test_create_without_metadata_has_empty_metadata():
    job = ExportJob.create(job_id=JOB_ID, export_id="e", user_id="u", now=T0)
    assert job.metadata == {}


def test_expires_seven_days_after_creation():
    assert new_job().expires_at == T0 + timedelta(days=7)


# --- transitions ----------------------------------------------------------------------


def test_transition_table_is_the_designed_one():
    assert {
        S.PENDING: {S.PROCESSING, S.FAILED, S.CANCELLED},
        S.PROCESSING: {S.POLLING, S.FAILED, S.CANCELLED},
        S.POLLING: {S.DOWNLOADING, S.COMPLETED, S.FAILED, S.CANCELLED},
        S.DOWNLOADING: {S.COMPLETED, S.FAILED, S.CANCELLED},
        S.COMPLETED: set(),
        S.FAILED: set(),
        S.CANCELLED: set(),
    } == ALLOWED
    assert {S.COMPLETED, S.FAILED, S.CANCELLED} == TERMINAL


def test_legal_path_processing_polling_downloading_completed():
    job = new_job().start_polling(T0)
    assert job.status is S.POLLING
    job = job.start_downloading(2, T0)
    assert (job.status, job.total_tasks) == (S.DOWNLOADING, 2)
    job = job.record_file(succeeded=True, now=T0).record_file(succeeded=True, now=T0)
    assert job.completed_at is None
    job = job.complete(LATER)
    assert job.status is S.COMPLETED
    assert job.completed_at == job.updated_at == LATER
    assert job.succeeded
    assert job.duration_ms() == 30_000


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.COMPLETED, S.FAILED),
        (S.PROCESSING, S.COMPLETED),
        (S.PROCESSING, S.DOWNLOADING),
        (S.PROCESSING, S.PROCESSING),
        (S.POLLING, S.PROCESSING),
        (S.POLLING, S.POLLING),
        (S.DOWNLOADING, S.POLLING),
        (S.DOWNLOADING, S.PENDING),
        (S.PENDING, S.COMPLETED),
    ],
)
def test_illegal_moves_raise_illegal_transition(current: JobStatus, target: JobStatus):
    job = a_job(status=current)
    with pytest.raises(IllegalTransition) as caught:
        job.move_to(target, LATER)
    assert (caught.value.current, caught.value.target) == (current, target)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("target", list(JobStatus))
def test_terminal_states_are_final(terminal: JobStatus, target: JobStatus):
    with pytest.raises(IllegalTransition):
        a_job(status=terminal).move_to(target, LATER)


def test_completed_job_cannot_be_failed_or_cancelled():
    done = a_job(status=S.COMPLETED)
    with pytest.raises(IllegalTransition):
        done.fail(JobErrorCode.PROCESSING_ERROR, "late", LATER)
    with pytest.raises(IllegalTransition):
        done.cancel(JobErrorCode.CANCELLED, "late", LATER)


def test_a_refused_move_changes_nothing():
    job = a_job(status=S.COMPLETED)
    with pytest.raises(IllegalTransition):
        job.move_to(S.FAILED, LATER)
    assert job.status is S.COMPLETED
    assert job.updated_at == T0


def test_processing_job_with_no_files_cannot_skip_straight_to_completed():
    with pytest.raises(IllegalTransition):
        new_job().complete(LATER)


def test_zero_file_export_completes_straight_from_polling():
    job = new_job().start_polling(T0).complete(LATER)
    assert job.status is S.COMPLETED
    assert job.total_tasks == 0
    assert job.succeeded


def test_zero_file_export_can_also_complete_from_downloading():
    job = new_job().start_polling(T0).start_downloading(0, T0).complete(LATER)
    assert (job.status, job.total_tasks) == (S.COMPLETED, 0)


def test_negative_total_is_refused():
    with pytest.raises(InvalidCounters):
        new_job().start_polling(T0).start_downloading(-1, T0)


# --- counters -------------------------------------------------------------------------


def test_record_file_counts_successes_and_failures():
    job = a_job(status=S.DOWNLOADING, total=3)
    job = job.record_file(succeeded=True, now=LATER)
    job = job.record_file(succeeded=False, now=LATER)
    assert (job.completed_tasks, job.failed_tasks, job.pending_tasks) == (1, 1, 1)
    assert job.updated_at == LATER
    assert not job.all_files_done


def test_record_file_refuses_to_count_beyond_total():
    job = a_job(status=S.DOWNLOADING, total=2, completed=1, failed=1)
    with pytest.raises(InvalidCounters):
        job.record_file(succeeded=True, now=LATER)
    with pytest.raises(InvalidCounters):
        job.record_file(succeeded=False, now=LATER)


def test_record_file_refuses_when_there_are_no_files():
    with pytest.raises(InvalidCounters):
        a_job(status=S.DOWNLOADING, total=0).record_file(succeeded=True, now=LATER)


def test_complete_refuses_while_files_are_pending():
    job = a_job(status=S.DOWNLOADING, total=3, completed=2)
    with pytest.raises(InvalidCounters):
        job.complete(LATER)


def test_completed_with_failed_files_is_completed_but_not_succeeded():
    job = a_job(status=S.DOWNLOADING, total=10, completed=7, failed=3).complete(LATER)
    assert job.status is S.COMPLETED
    assert not job.succeeded


# --- failure, cancellation and the callback record ------------------------------------


@pytest.mark.parametrize("status", [S.PROCESSING, S.POLLING, S.DOWNLOADING])
def test_fail_keeps_the_error_and_sets_completed_at(status: JobStatus):
    job = a_job(status=status).fail(JobErrorCode.EXPORT_API_FAILED, "upstream said no", LATER)
    assert job.status is S.FAILED
    assert job.error == JobError(JobErrorCode.EXPORT_API_FAILED, "upstream said no")
    assert job.completed_at == LATER


def test_cancel_keeps_the_error():
    job = a_job(status=S.DOWNLOADING).cancel(JobErrorCode.CANCELLED, "workflow gave up", LATER)
    assert job.status is S.CANCELLED
    assert job.error == JobError(JobErrorCode.CANCELLED, "workflow gave up")
    assert job.is_terminal


def test_callback_delivered_counts_the_attempt():
    job = a_job(status=S.COMPLETED).callback_delivered(LATER)
    assert job.callback.status is CallbackStatus.DELIVERED
    assert (job.callback.attempts, job.callback.at) == (1, LATER)


def test_callback_failed_records_the_error_code_and_attempts():
    job = a_job(status=S.COMPLETED).callback_failed("TaskTimedOut", LATER)
    assert job.callback.status is CallbackStatus.FAILED
    assert (job.callback.attempts, job.callback.last_error) == (1, "TaskTimedOut")
    again = job.callback_failed("TaskTimedOut", LATER)
    assert again.callback.attempts == 2
    assert again.status is S.COMPLETED


def test_duration_is_never_negative():
    job = replace(a_job(status=S.COMPLETED), completed_at=T0 - timedelta(seconds=5))
    assert job.duration_ms() == 0


def test_a_job_left_polling_without_a_schedule_starts_one_when_polled():
    # The original service wrote POLLING without nextPollAt: after a drop-in swap the
    # poller takes it and the backoff schedule starts there.
    from src.domain.polling import PollPolicy

    policy = PollPolicy()
    legacy = replace(a_job(status=JobStatus.POLLING), poll=None)
    polled = legacy.polled(T0, policy)
    assert polled.poll is not None
    assert polled.poll.attempts == 1
    assert polled.poll.deadline == T0 + policy.deadline
