from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest

from src.application.callback_answer import (
    MAX_CAUSE_CHARS,
    MAX_ERROR_CHARS,
    FailureAnswer,
    SuccessAnswer,
    answer_for,
    failure,
)
from src.domain.errors import JobErrorCode
from src.domain.job_status import JobStatus
from tests.fakes import T0
from tests.unit.builders import EXPORT_ID, JOB_ID, USER_ID, a_job

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DONE_AT = T0 + timedelta(seconds=2, milliseconds=500)


def completed(total: int, completed: int, failed: int):
    job = a_job(status=JobStatus.DOWNLOADING, total=total, completed=completed, failed=failed)
    return job.complete(DONE_AT)


def failed_with(code: str, message: str = "it broke"):
    return a_job(status=JobStatus.POLLING).fail(code, message, DONE_AT)


def test_success_output_has_exactly_the_contract_keys():
    answer = answer_for(completed(3, 3, 0))
    assert isinstance(answer, SuccessAnswer)
    assert set(answer.output) == {
        "jobId",
        "exportId",
        "userId",
        "status",
        "totalTasks",
        "completedTasks",
        "failedTasks",
        "completedAt",
        "durationMs",
    }


def test_success_output_values_and_types():
    output = answer_for(completed(3, 3, 0)).output  # type: ignore[union-attr]
    assert output == {
        "jobId": JOB_ID,
        "exportId": EXPORT_ID,
        "userId": USER_ID,
        "status": "COMPLETED",
        "totalTasks": 3,
        "completedTasks": 3,
        "failedTasks": 0,
        "completedAt": "2024-05-01T12:00:02.623Z",
        "durationMs": 2500,
    }
    for key in ("totalTasks", "completedTasks", "failedTasks", "durationMs"):
        assert type(output[key]) is int, key
    assert type(output["status"]) is str
    assert ISO_MS_Z.match(output["completedAt"])  # type: ignore[arg-type]
    assert output["durationMs"] >= 0  # type: ignore[operator]


def test_success_output_is_plain_json():
    output = answer_for(completed(0, 0, 0)).output  # type: ignore[union-attr]
    assert json.loads(json.dumps(output)) == output
    assert json.dumps(output["status"]) == '"COMPLETED"'


def test_zero_file_job_is_a_success_with_total_zero():
    answer = answer_for(completed(0, 0, 0))
    assert isinstance(answer, SuccessAnswer)
    assert answer.output["totalTasks"] == 0


def test_partial_failure_is_job_completed_with_failures_with_the_exact_cause():
    assert answer_for(completed(10, 7, 3)) == FailureAnswer(
        "JobCompletedWithFailures", "Job completed with 3 failed tasks out of 10 total"
    )


def test_partial_failure_cause_keeps_tasks_plural_for_one():
    assert answer_for(completed(1, 0, 1)) == FailureAnswer(
        "JobCompletedWithFailures", "Job completed with 1 failed tasks out of 1 total"
    )


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (JobErrorCode.EXPORT_API_FAILED, "ExportFailed"),
        (JobErrorCode.EXPORT_EXPIRED, "ExportExpired"),
        (JobErrorCode.POLLING_TIMEOUT, "ExportTimedOut"),
        (JobErrorCode.PROCESSING_ERROR, "ProcessingError"),
    ],
)
def test_failed_job_error_name_follows_its_error_code(code: str, error: str):
    assert answer_for(failed_with(code, "the reason")) == FailureAnswer(error, "the reason")


def test_failed_job_with_an_unknown_code_is_a_processing_error():
    assert answer_for(failed_with("SOMETHING_NEW")).error == "ProcessingError"


def test_failed_job_without_an_error_is_a_processing_error():
    job = replace(failed_with(JobErrorCode.EXPORT_API_FAILED), error=None)
    answer = answer_for(job)
    assert isinstance(answer, FailureAnswer)
    assert answer.error == "ProcessingError"
    assert answer.cause


def test_cancelled_job_is_job_cancelled():
    job = a_job(status=JobStatus.DOWNLOADING).cancel(
        JobErrorCode.CANCELLED, "workflow gave up", DONE_AT
    )
    assert answer_for(job) == FailureAnswer("JobCancelled", "workflow gave up")


@pytest.mark.parametrize("status", [JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING])
def test_a_running_job_has_no_answer_yet(status: JobStatus):
    with pytest.raises(ValueError):
        answer_for(a_job(status=status))


def test_error_is_truncated_to_256_characters():
    answer = failure("E" * 1000, "cause")
    assert len(answer.error) == MAX_ERROR_CHARS == 256
    assert answer.error.startswith("EEE")


def test_cause_is_truncated_to_32768_characters():
    answer = answer_for(failed_with(JobErrorCode.EXPORT_API_FAILED, "x" * 100_000))
    assert isinstance(answer, FailureAnswer)
    assert len(answer.cause) == MAX_CAUSE_CHARS == 32_768
    assert answer.cause.startswith("xxx")


def test_texts_at_the_limit_are_kept_whole():
    answer = failure("E" * 256, "c" * 32_768)
    assert answer == FailureAnswer("E" * 256, "c" * 32_768)
