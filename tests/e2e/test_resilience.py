"""Deploys and throttling: SIGTERM drains and hands work back; a callback that could not
be delivered is delivered later by the reaper."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from src.local.sandbox import SandboxExportApi
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 4
FAST = {
    "POLLING_INTERVAL_MS": "200",
    "POLLER_TICK_MS": "200",
    "SQS_WAIT_TIME_SECONDS": "1",
    "SQS_VISIBILITY_TIMEOUT": "30",
    "POLL_LEASE_SECONDS": "3",
    "EXPORT_API_TIMEOUT": "1000",
    "EXPORT_API_MAX_RETRIES": "1",
    "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    "REAPER_INTERVAL_SECONDS": "1",
}


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    return {**embedded_stack.env(embedded_stack.provision("res-")), **FAST}


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


def _callbacks(stack: EmbeddedStack) -> int:
    return sum(stack.aws.calls(op) for op in ("SendTaskSuccess", "SendTaskFailure"))


def test_sigterm_during_downloads_exits_within_grace_and_the_job_completes_on_next_start(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    first = ServiceProcess(env, tmp_path / "first.log", DOWNLOAD_CONCURRENCY="2").start()
    services.append(first)
    before = _callbacks(embedded_stack)
    job_id, export_id = str(uuid.uuid4()), f"t{uuid.uuid4().hex[:8]}-files-8-filedelay-10000"
    arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "u"})

    # Small files are copied without a lease (no record until their result): the file
    # server tells when two of them are being served.
    served = embedded_stack.sandbox.file_requests
    wait_for(lambda: served(export_id) >= 2, 60, "two downloads under way")
    time.sleep(1)  # each takes 10 s: both are still mid-download when the grace runs out

    started = time.monotonic()
    code = first.terminate(timeout=30)
    took = time.monotonic() - started

    assert code == 0
    # grace + one long-poll receive (1 s) + start-up/shutdown slack
    assert took < GRACE_SECONDS + 4, took
    logs = first.logs()
    assert '"in-flight message released"' in logs
    assert aws.job(job_id)["status"] == "DOWNLOADING"

    services.append(ServiceProcess(env, tmp_path / "second.log").start())
    assert aws.wait_execution(arn, timeout=90)["status"] == "SUCCEEDED"
    keys = aws.keys(f"exports/{job_id}/")
    assert keys == sorted(f"exports/{job_id}/{i}_file-{i}.bin" for i in range(8))
    for i in range(8):
        key = f"exports/{job_id}/{i}_file-{i}.bin"
        assert aws.object_bytes(key) == SandboxExportApi.file_bytes(export_id, i, 1024)
    assert _callbacks(embedded_stack) - before == 1


def test_a_throttled_callback_is_delivered_later_by_the_reaper(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    throttling = threading.Event()
    throttling.set()
    refused = []

    def throttle_successes(operation: str) -> bool:
        if throttling.is_set() and operation.endswith("SendTaskSuccess"):
            refused.append(operation)
            return True
        return False

    services.append(ServiceProcess(env, tmp_path / "service.log").start())
    embedded_stack.aws.set_fault(throttle_successes)
    try:
        job_id = str(uuid.uuid4())
        arn = aws.start_execution(
            {"jobId": job_id, "exportId": f"t{uuid.uuid4().hex[:8]}-files-1", "userId": "u"}
        )
        # botocore's retries run out: the answer is left RETRYING for the reaper.
        undelivered = wait_for(
            lambda: (j := aws.job(job_id)) and j.get("callbackStatus") == "RETRYING" and j,
            90,
            "callback left for the reaper",
        )
    finally:
        throttling.clear()
        embedded_stack.aws.set_fault(None)

    assert undelivered["status"] == "COMPLETED"
    assert undelivered["callbackDue"] == "DUE"
    assert len(refused) >= 2  # the first try and botocore's retries
    execution = aws.wait_execution(arn, timeout=60)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["jobId"] == job_id
    job = aws.wait_answered(job_id)
    assert job["callbackAttempts"] == 2
    assert "callbackDue" not in job
    logs = [json.loads(line) for line in services[0].logs().splitlines() if job_id in line]
    failed = [e for e in logs if e.get("event") == "workflow callback failed"]
    assert [(e["error_code"], e["retryable"]) for e in failed] == [("ThrottlingException", True)]


def test_dlq_cli_lists_with_tokens_masked_and_redrives(aws: Aws, env: dict[str, str]) -> None:
    import subprocess
    import sys

    from src.domain.task_token import mask_token
    from tests.support.service_process import ROOT

    token = "AAAAKgAAAAIAAAAAAAAAAf" + uuid.uuid4().hex * 4
    body = json.dumps({"jobId": "not-a-uuid", "exportId": "e", "userId": "u", "taskToken": token})
    dlq = env["SQS_EXPORT_JOBS_URL"] + "-dlq"
    aws.sqs.send_message(
        QueueUrl=dlq,
        MessageBody=body,
        MessageAttributes={
            "rejectReason": {"DataType": "String", "StringValue": "jobId: must be a UUID"}
        },
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "src.main", "dlq", *args, "--queue", "export-jobs"],
            cwd=ROOT, env={**__import__("os").environ, **env}, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip

    listed = cli("list")
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert token not in listed.stdout + listed.stderr
    [letter] = [line for line in lines if mask_token(token) in line["body"]]
    assert letter["reason"] == "jobId: must be a UUID"

    moved = cli("redrive")
    assert "1 message(s) sent back" in moved.stderr
    received = aws.sqs.receive_message(
        QueueUrl=env["SQS_EXPORT_JOBS_URL"], MaxNumberOfMessages=10, WaitTimeSeconds=2
    ).get("Messages", [])
    assert [m["Body"] for m in received] == [body]
    assert cli("list").stdout == ""


def test_lost_work_items_are_requeued_by_the_reaper(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    """A replica dies mid-download and its work items are gone from the queue (purged
    here; in production: a DLQ'd message, an operator's mistake). The reaper finds the
    stalled job with nothing queued and dispatches it again (the files not recorded yet);
    the job completes with one answer."""
    overrides = {
        "DOWNLOAD_STALL_SECONDS": "2",
        "DOWNLOAD_CONCURRENCY": "1",
        # the dead replica's task lease: 3 s x 1 attempt + 1 s
        "DOWNLOAD_TIMEOUT_MS": "3000",
        "DOWNLOAD_MAX_ATTEMPTS": "1",
    }
    victim = ServiceProcess(env, tmp_path / "victim.log", **overrides).start()
    services.append(victim)
    before = _callbacks(embedded_stack)
    job_id, export_id = str(uuid.uuid4()), f"t{uuid.uuid4().hex[:8]}-files-6-filedelay-800"
    arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "u"})
    wait_for(
        lambda: (
            (j := aws.job(job_id)) and j["status"] == "DOWNLOADING" and j["completedTasks"] >= 1
        ),
        60,
        "downloading",
    )
    victim.kill()
    aws.sqs.purge_queue(QueueUrl=env["SQS_DOWNLOAD_TASKS_URL"])

    survivor = ServiceProcess(env, tmp_path / "survivor.log", **overrides).start()
    services.append(survivor)

    assert aws.wait_execution(arn, timeout=90)["status"] == "SUCCEEDED"
    assert '"download job stalled; dispatching its unrecorded files again"' in survivor.logs()
    keys = aws.keys(f"exports/{job_id}/")
    assert keys == sorted(f"exports/{job_id}/{i}_file-{i}.bin" for i in range(6))
    assert _callbacks(embedded_stack) - before == 1
