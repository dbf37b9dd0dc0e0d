"""Heartbeats keep a slow export's workflow alive; a workflow that gave up cancels its job."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

HEARTBEAT_SECONDS = 3
FAST = {
    "POLLING_INTERVAL_MS": "500",
    "POLLING_MAX_INTERVAL_MS": "500",
    "POLLER_TICK_MS": "200",
    "SQS_WAIT_TIME_SECONDS": "1",
    "POLL_LEASE_SECONDS": "3",
    "EXPORT_API_TIMEOUT": "1000",
    "EXPORT_API_MAX_RETRIES": "1",
    "DOWNLOAD_CONCURRENCY": "1",
}


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    resources = embedded_stack.provision(
        "hb-", task_timeout_seconds=120, heartbeat_seconds=HEARTBEAT_SECONDS
    )
    return {**embedded_stack.env(resources), **FAST}


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


@pytest.fixture
def service(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ServiceProcess]:
    interval = request.param
    process = ServiceProcess(env, tmp_path / "service.log", HEARTBEAT_INTERVAL_SECONDS=interval)
    process.start()
    yield process
    process.stop()


def _slow_export() -> str:
    # About 8 s of "processing" answers: well past HeartbeatSeconds (3 s).
    return f"t{uuid.uuid4().hex[:8]}-pending-16-files-1"


@pytest.mark.parametrize("service", ["1"], indirect=True)
def test_a_slow_export_survives_heartbeat_seconds_because_of_heartbeats(
    aws: Aws, service: ServiceProcess, embedded_stack: EmbeddedStack
) -> None:
    before = embedded_stack.aws.calls("SendTaskHeartbeat")
    job_id = str(uuid.uuid4())
    arn = aws.start_execution({"jobId": job_id, "exportId": _slow_export(), "userId": "u"})

    execution = aws.wait_execution(arn, timeout=60)

    assert execution["status"] == "SUCCEEDED", execution
    job = aws.wait_answered(job_id)  # recorded just after Step Functions took the answer
    assert job["status"] == "COMPLETED"
    assert embedded_stack.aws.calls("SendTaskHeartbeat") - before >= 3


@pytest.mark.parametrize("service", ["0"], indirect=True)
def test_the_same_export_without_heartbeats_misses_heartbeat_seconds(
    aws: Aws, service: ServiceProcess
) -> None:
    job_id = str(uuid.uuid4())
    arn = aws.start_execution({"jobId": job_id, "exportId": _slow_export(), "userId": "u"})

    execution = aws.wait_execution(arn, timeout=60)

    assert execution["status"] == "FAILED"
    events = aws.history(arn)
    timed_out = [e for e in events if e["type"] == "TaskTimedOut"]
    assert timed_out and timed_out[0]["taskTimedOutEventDetails"]["error"] in (
        "States.Timeout",
        "States.HeartbeatTimeout",
    )
    # The job runs on; its late answer is refused and recorded, never retried forever.
    job = wait_for(lambda: (j := aws.job(job_id)) and j.get("callbackStatus") == "FAILED" and j, 60)
    assert job["status"] == "COMPLETED"
    assert job["callbackError"] == "TaskTimedOut"


@pytest.mark.parametrize("service", ["1"], indirect=True)
def test_a_workflow_that_stopped_waiting_cancels_its_job_and_its_pending_downloads(
    aws: Aws, service: ServiceProcess, embedded_stack: EmbeddedStack
) -> None:
    job_id = str(uuid.uuid4())
    export_id = f"t{uuid.uuid4().hex[:8]}-files-8-filedelay-700"
    arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "u"})
    wait_for(
        lambda: (
            (j := aws.job(job_id)) and j["status"] == "DOWNLOADING" and j["completedTasks"] >= 1
        ),
        30,
        "downloading",
    )

    aws.sfn.stop_execution(executionArn=arn, error="Operator", cause="stopped by test")

    job = aws.wait_job(job_id, ("CANCELLED",), timeout=30)
    assert job["error"]["code"] == "CANCELLED"
    assert job["callbackStatus"] == "FAILED"
    assert job["callbackError"] in ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken")
    wait_for(lambda: "job cancelled" in service.logs(), 10, "cancel logged")
    # Workers see the cancel within RecentJobs' ttl (2 s): let a download that started
    # before then finish.
    time.sleep(2 + 1.5)
    requests = embedded_stack.sandbox.file_requests(export_id)
    stored = len(aws.keys(f"exports/{job_id}/"))
    time.sleep(3)
    # The pending downloads do not start: no new file requests, no new objects.
    assert embedded_stack.sandbox.file_requests(export_id) == requests
    assert len(aws.keys(f"exports/{job_id}/")) == stored < 8
