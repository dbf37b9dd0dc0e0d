"""Whole flows: a real state machine execution -> SQS -> the service (a child process)
-> DynamoDB/S3 -> SendTask* -> the execution's final status."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import pytest

from src.domain.task_token import mask_token
from src.local.sandbox import SandboxExportApi
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    return embedded_stack.env(embedded_stack.provision("flow-"))


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


@pytest.fixture(scope="module")
def service(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("flow") / "service.log"
    process = ServiceProcess(env, log, POLLING_INTERVAL_MS="200", SQS_WAIT_TIME_SECONDS="1")
    process.start()
    yield process
    process.stop()


def _callbacks(stack: EmbeddedStack) -> int:
    return sum(stack.aws.calls(op) for op in ("SendTaskSuccess", "SendTaskFailure"))


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _queue_empty(aws: Aws) -> bool:
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=aws.env["SQS_EXPORT_JOBS_URL"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attrs.values())


def test_three_file_export_succeeds_with_the_exact_success_payload(
    aws: Aws, service: ServiceProcess
) -> None:
    job_id, export_id = str(uuid.uuid4()), f"t{_tag()}-files-3"
    arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "user-1"})

    execution = aws.wait_execution(arn)

    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert set(output) == {
        "jobId", "exportId", "userId", "status", "totalTasks",
        "completedTasks", "failedTasks", "completedAt", "durationMs",
    }  # fmt: skip
    assert output["jobId"] == job_id
    assert output["exportId"] == export_id
    assert output["userId"] == "user-1"
    assert output["status"] == "COMPLETED"
    assert (output["totalTasks"], output["completedTasks"], output["failedTasks"]) == (3, 3, 0)
    assert ISO_MS_Z.match(output["completedAt"])
    assert isinstance(output["durationMs"], int) and output["durationMs"] >= 0
    keys = aws.keys(f"exports/{job_id}/")
    assert keys == [f"exports/{job_id}/{i}_file-{i}.bin" for i in range(3)]
    for i, key in enumerate(keys):
        assert aws.object_bytes(key) == SandboxExportApi.file_bytes(export_id, i, 1024)


def test_partial_failure_takes_the_catch_for_job_completed_with_failures(
    aws: Aws, service: ServiceProcess
) -> None:
    job_id = str(uuid.uuid4())
    payload = {"jobId": job_id, "exportId": f"t{_tag()}-files-10-fail-3", "userId": "u"}
    arn = aws.start_execution(payload)

    execution = aws.wait_execution(arn)

    assert execution["status"] == "FAILED"
    cause = "Job completed with 3 failed tasks out of 10 total"
    events = aws.history(arn)
    failed = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert [(f["error"], f["cause"]) for f in failed] == [("JobCompletedWithFailures", cause)]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert "ExportCompletedWithFailures" in entered
    assert (execution.get("error"), execution.get("cause")) == ("JobCompletedWithFailures", cause)
    job = aws.job(job_id)
    assert job is not None
    assert (job["status"], job["totalTasks"], job["completedTasks"], job["failedTasks"]) == (
        "COMPLETED", 10, 7, 3,
    )  # fmt: skip


def test_a_job_without_a_task_token_completes_and_sends_no_callback(
    aws: Aws, service: ServiceProcess, embedded_stack: EmbeddedStack
) -> None:
    wait_for(lambda: _queue_empty(aws), 30, "idle queue")
    before = _callbacks(embedded_stack)
    job_id = str(uuid.uuid4())
    aws.send_job(
        {"jobId": job_id, "exportId": f"t{_tag()}-files-2", "userId": "u", "taskToken": ""}
    )

    job = aws.wait_job(job_id, ("COMPLETED", "FAILED"))

    assert (job["status"], job["completedTasks"], job["failedTasks"]) == ("COMPLETED", 2, 0)
    assert "taskToken" not in job
    assert job["callbackStatus"] == "NOT_REQUIRED"
    assert _callbacks(embedded_stack) == before


def test_a_second_delivery_neither_creates_a_job_nor_changes_the_first(
    aws: Aws, service: ServiceProcess, embedded_stack: EmbeddedStack
) -> None:
    job_id, export_id = str(uuid.uuid4()), f"t{_tag()}-pending-3-files-2"
    arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "u"})
    first = wait_for(lambda: aws.job(job_id), 30, "job created")
    message = {
        "jobId": job_id,
        "exportId": export_id,
        "userId": "u",
        "metadata": {},
        "taskToken": first["taskToken"],
    }
    aws.send_job(message)  # duplicate while the first delivery is still being worked on

    assert aws.wait_execution(arn)["status"] == "SUCCEEDED"
    finished = aws.wait_answered(job_id)
    callbacks = _callbacks(embedded_stack)
    aws.send_job(message)  # and again after the job finished
    wait_for(lambda: _queue_empty(aws), 30, "duplicate consumed")

    again = aws.job(job_id)
    assert again == finished
    assert [j for j in aws.all_jobs() if j["exportId"] == export_id] == [finished]
    assert _callbacks(embedded_stack) == callbacks
    assert service.logs().count('"duplicate export job ignored"') >= 2


def test_a_used_token_cancels_its_job_before_any_work_and_is_recorded_never_answered(
    aws: Aws, service: ServiceProcess
) -> None:
    """A message carrying a token whose task is closed already: the first poll's heartbeat
    finds the workflow gone (as AWS says it, TaskTimedOut), so the job is cancelled before
    anything is copied, with the reason recorded, and no answer is sent to it."""
    first_id = str(uuid.uuid4())
    arn = aws.start_execution({"jobId": first_id, "exportId": f"t{_tag()}-files-1", "userId": "u"})
    assert aws.wait_execution(arn)["status"] == "SUCCEEDED"
    used_token = aws.wait_job(first_id, ("COMPLETED",))["taskToken"]

    job_id = str(uuid.uuid4())
    aws.send_job(
        {"jobId": job_id, "exportId": f"t{_tag()}-files-1", "userId": "u", "taskToken": used_token}
    )

    job = aws.wait_job(job_id, ("CANCELLED",), timeout=60)
    assert job["callbackStatus"] == "FAILED"
    assert job["callbackError"] in ("TaskTimedOut", "InvalidToken")
    assert job["callbackError"] in job["error"]["message"]
    assert job["totalTasks"] == job["completedTasks"] == 0
    lines = [json.loads(line) for line in service.logs().splitlines() if job_id in line]
    refused = [line for line in lines if line.get("event") == "heartbeat refused: task closed"]
    assert refused and refused[0]["task_token"] == mask_token(used_token)
    assert not [line for line in lines if line.get("event") == "workflow answered"]


def test_malformed_messages_are_rejected_with_a_reason_and_the_consumer_goes_on(
    aws: Aws, service: ServiceProcess
) -> None:
    aws.send_job("this is not json")
    aws.send_job({"exportId": "x-files-1", "userId": "u"})
    job_id = str(uuid.uuid4())
    aws.send_job({"jobId": job_id, "exportId": f"t{_tag()}-files-1", "userId": "u"})

    assert aws.wait_job(job_id, ("COMPLETED",))["completedTasks"] == 1
    logs = [json.loads(line) for line in service.logs().splitlines() if line.startswith("{")]
    reasons = [e["reason"] for e in logs if e.get("event") == "invalid export-job message"]
    assert any("Invalid JSON" in r for r in reasons)
    assert any("jobId: Field required" in r for r in reasons)
    dlq = aws.env["SQS_EXPORT_JOBS_URL"] + "-dlq"
    received = aws.sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    ).get("Messages", [])
    bodies = {m["Body"]: m["MessageAttributes"]["rejectReason"]["StringValue"] for m in received}
    assert "this is not json" in bodies
    assert "Invalid JSON" in bodies["this is not json"]
    assert any("jobId: Field required" in reason for reason in bodies.values())


def test_the_admin_api_exposes_callback_and_download_counters(service: ServiceProcess) -> None:
    import urllib.request

    url = f"http://127.0.0.1:{service.port}/metrics"
    request = urllib.request.Request(url, headers={"X-API-Key": service.api_key})
    with urllib.request.urlopen(request, timeout=5) as r:
        text = r.read().decode()
    delivered = [
        line for line in text.splitlines()
        if line.startswith("export_callbacks_total{") and 'outcome="delivered"' in line
    ]  # fmt: skip
    assert delivered and all(float(line.rsplit(" ", 1)[1]) >= 1 for line in delivered)
    assert 'export_callbacks_total{code="TaskTimedOut",kind="heartbeat",outcome="rejected"}' in text
    assert 'export_downloads_total{outcome="failed"}' in text
    assert 'export_downloads_total{outcome="stored"}' in text


def test_no_full_task_token_ever_appears_in_the_service_logs(
    aws: Aws, service: ServiceProcess
) -> None:
    tokens = {job["taskToken"] for job in aws.all_jobs() if job.get("taskToken")}
    assert len(tokens) >= 4, "the flows above should have produced tokens"
    logs = service.logs()
    assert logs
    for token in tokens:
        assert token not in logs
        assert mask_token(token) in logs or token[-4:] in logs
    assert "X-Amz-Signature=" not in logs
