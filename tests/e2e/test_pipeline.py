"""The pipeline under load and faults: two replicas, redelivered work items, zero files,
failed and never-ready exports, and SIGKILL while polling and while downloading."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from src.local.sandbox import SandboxExportApi
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

FAST = {
    "POLLING_INTERVAL_MS": "200",
    "POLLING_MAX_INTERVAL_MS": "1000",
    "POLLER_TICK_MS": "200",
    "POLL_LEASE_SECONDS": "3",
    "EXPORT_API_TIMEOUT": "1000",
    "EXPORT_API_MAX_RETRIES": "1",
    "SQS_WAIT_TIME_SECONDS": "1",
    "SQS_VISIBILITY_TIMEOUT": "5",
    "DOWNLOAD_TIMEOUT_MS": "5000",
    "DOWNLOAD_MAX_ATTEMPTS": "2",
    "SHUTDOWN_GRACE_SECONDS": "10",
}


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    return {**embedded_stack.env(embedded_stack.provision("pipe-")), **FAST}


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


def _start(
    started: list[ServiceProcess], env: dict[str, str], tmp: Path, **overrides: str
) -> ServiceProcess:
    service = ServiceProcess(env, tmp / f"replica-{len(started)}.log", **overrides).start()
    started.append(service)
    return service


def _callbacks(stack: EmbeddedStack) -> int:
    return sum(stack.aws.calls(op) for op in ("SendTaskSuccess", "SendTaskFailure"))


def _export(spec: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}-{spec}"


def _run(aws: Aws, export_id: str) -> tuple[str, str]:
    job_id = str(uuid.uuid4())
    arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "u"})
    return job_id, arn


def _queue_idle(aws: Aws, url_key: str) -> bool:
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=aws.env[url_key],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attrs.values())


def _tasks(aws: Aws, job_id: str) -> list[dict[str, object]]:
    items = aws.ddb.query(
        TableName=aws.env["DYNAMODB_TASKS_TABLE_NAME"],
        KeyConditionExpression="jobId = :j",
        FilterExpression="taskId <> :counters",  # the job's counters are not a task
        ExpressionAttributeValues={":j": {"S": job_id}, ":counters": {"S": "#progress"}},
        ConsistentRead=True,
    )["Items"]
    return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]


def _assert_objects(aws: Aws, job_id: str, export_id: str, count: int, size: int = 1024) -> None:
    keys = aws.keys(f"exports/{job_id}/")
    assert keys == sorted(f"exports/{job_id}/{i}_file-{i}.bin" for i in range(count))
    for i in range(count):
        key = f"exports/{job_id}/{i}_file-{i}.bin"
        assert aws.object_bytes(key) == SandboxExportApi.file_bytes(export_id, i, size)


def test_two_replicas_share_25_files_and_answer_the_workflow_once(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    first = _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="4")
    second = _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="4")
    before = _callbacks(embedded_stack)
    export_id = _export("files-25-filedelay-150")
    job_id, arn = _run(aws, export_id)

    execution = aws.wait_execution(arn, timeout=90)

    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert (output["totalTasks"], output["completedTasks"], output["failedTasks"]) == (25, 25, 0)
    job = aws.wait_job(job_id, ("COMPLETED",))
    assert (job["totalTasks"], job["completedTasks"], job["failedTasks"]) == (25, 25, 0)
    _assert_objects(aws, job_id, export_id, 25)
    assert _callbacks(embedded_stack) - before == 1
    stored = [s.logs().count('"file stored"') for s in (first, second)]
    assert sum(stored) == 25 and all(n > 0 for n in stored), stored
    tasks = _tasks(aws, job_id)
    assert len(tasks) == 25 and {t["status"] for t in tasks} == {"COMPLETED"}
    for task in tasks:
        index = int(str(task["index"]))
        assert task["sha256"] == SandboxExportApi.file_sha256(export_id, index, 1024)


def test_redelivered_work_items_after_completion_change_nothing(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    _start(services, env, tmp_path)
    export_id = _export("files-6-fail-1")
    job_id, arn = _run(aws, export_id)
    assert aws.wait_execution(arn)["status"] == "FAILED"
    finished = aws.wait_answered(job_id)
    callbacks = _callbacks(embedded_stack)

    for task in _tasks(aws, job_id):
        body = {"jobId": job_id, "taskId": task["taskId"], "index": int(str(task["index"]))}
        aws.sqs.send_message(QueueUrl=env["SQS_DOWNLOAD_TASKS_URL"], MessageBody=json.dumps(body))
    wait_for(lambda: _queue_idle(aws, "SQS_DOWNLOAD_TASKS_URL"), 30, "redeliveries consumed")

    assert aws.job(job_id) == finished
    assert (finished["completedTasks"], finished["failedTasks"]) == (5, 1)
    assert _callbacks(embedded_stack) == callbacks


def test_zero_file_export_succeeds_at_once(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    _start(services, env, tmp_path)
    job_id, arn = _run(aws, _export("files-0"))

    execution = aws.wait_execution(arn)

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["totalTasks"] == 0
    assert aws.keys(f"exports/{job_id}/") == []


def test_failed_export_fails_the_execution_with_export_failed(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    _start(services, env, tmp_path)
    job_id, arn = _run(aws, _export("pending-1-failed"))

    execution = aws.wait_execution(arn)

    assert (execution["status"], execution.get("error")) == ("FAILED", "ExportFailed")
    assert execution.get("cause") == "Export generation failed in sandbox"
    job = aws.job(job_id)
    assert job is not None and job["status"] == "FAILED"
    assert job["error"] == {
        "code": "EXPORT_API_FAILED",
        "message": "Export generation failed in sandbox",
    }


def test_never_ready_export_times_out_at_the_configured_deadline(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    _start(services, env, tmp_path, POLLING_TIMEOUT_MS="3000")
    job_id, arn = _run(aws, _export("neverready"))

    execution = aws.wait_execution(arn, timeout=30)

    assert (execution["status"], execution.get("error")) == ("FAILED", "ExportTimedOut")
    job = aws.job(job_id)
    assert job is not None and job["error"]["code"] == "POLLING_TIMEOUT"
    assert job["pollAttempts"] >= 2


def test_sigkill_while_polling_and_while_downloading_loses_nothing(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    victim = _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="4")
    before = _callbacks(embedded_stack)
    polling_export = _export("pending-12-files-2")
    download_export = _export("files-20-filedelay-400")
    polling_job, polling_arn = _run(aws, polling_export)
    download_job, download_arn = _run(aws, download_export)

    def in_progress() -> bool:
        p, d = aws.job(polling_job), aws.job(download_job)
        return bool(
            p and p["status"] == "POLLING" and p.get("pollAttempts", 0) >= 2
            and d and d["status"] == "DOWNLOADING" and 1 <= d["completedTasks"] < 20
        )  # fmt: skip

    wait_for(in_progress, 60, "one job polling and one downloading")
    victim.kill()
    _start(services, env, tmp_path)

    try:
        assert aws.wait_execution(polling_arn, timeout=120)["status"] == "SUCCEEDED"
        assert aws.wait_execution(download_arn, timeout=120)["status"] == "SUCCEEDED"
    except TimeoutError:
        print(json.dumps(_tasks(aws, download_job), indent=1, default=str))
        print(aws.job(download_job))
        print(services[-1].logs()[-5000:])
        raise
    polled = aws.wait_job(polling_job, ("COMPLETED",))
    downloaded = aws.wait_job(download_job, ("COMPLETED",))
    assert (polled["completedTasks"], polled["failedTasks"]) == (2, 0)
    assert (downloaded["completedTasks"], downloaded["failedTasks"]) == (20, 0)
    _assert_objects(aws, download_job, download_export, 20)
    assert _callbacks(embedded_stack) - before == 2


def test_a_traversal_file_name_lands_under_the_jobs_prefix_with_a_safe_name(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    _start(services, env, tmp_path)
    export_id = _export("files-2-traversal")
    job_id, arn = _run(aws, export_id)

    assert aws.wait_execution(arn)["status"] == "SUCCEEDED"

    assert aws.keys(f"exports/{job_id}/") == [
        f"exports/{job_id}/0_passwd",
        f"exports/{job_id}/1_file-1.bin",
    ]
    everything = aws.keys("")
    assert not [k for k in everything if "etc/passwd" in k or k.startswith(("/", "."))]
    assert aws.object_bytes(f"exports/{job_id}/0_passwd") == SandboxExportApi.file_bytes(
        export_id, 0, 1024
    )
