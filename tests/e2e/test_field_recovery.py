"""Issue 8's acceptance, in the field: at the DEFAULT lease, timeout and visibility settings
(only what a case states is changed), a crash costs about one lease, a big file resumes
from its last stored part, expired URLs are replaced, copies are byte-exact, a throttled
first write is retried soon, heartbeats are read as AWS documents them (also on plain
moto, with a state machine without HeartbeatSeconds), and every workflow that reuses a
jobId gets the job's one answer."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from src.local.provision import provision
from src.local.sandbox import SandboxExportApi
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.plain_emulator import PlainEmulator
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
PART = 8 * MIB  # S3_PART_SIZE_MB's default


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    return embedded_stack.env(embedded_stack.provision(f"field-{uuid.uuid4().hex[:6]}-"))


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


def _start(
    started: list[ServiceProcess], env: dict[str, str], tmp: Path, **overrides: str
) -> ServiceProcess:
    name = f"replica-{len(started)}"
    service = ServiceProcess(env, tmp / f"{name}.log", INSTANCE_ID=name, **overrides).start()
    started.append(service)
    return service


def _answers(stack: EmbeddedStack) -> int:
    return sum(stack.aws.calls(op) for op in ("SendTaskSuccess", "SendTaskFailure"))


def _export(spec: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}-{spec}"


def _input(export_id: str, job_id: str | None = None) -> dict[str, Any]:
    return {"jobId": job_id or str(uuid.uuid4()), "exportId": export_id, "userId": "u"}


def _object_sha256(aws: Aws, key: str) -> tuple[int, str]:
    body = aws.s3.get_object(Bucket=aws.env["S3_BUCKET_NAME"], Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in body.iter_chunks(4 * MIB):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _settled_bytes(sandbox: SandboxExportApi, export_id: str) -> int:
    """The sandbox's byte counter once it stops moving (it counts each write as it returns)."""
    last = -1
    while (now := sandbox.bytes_sent(export_id)) != last:
        last = now
        time.sleep(0.3)
    return last


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _in_kernel(port: int) -> int:
    """Bytes on the TCP connections to `port` that the kernel holds: sent and not yet
    acknowledged, or received and not yet read (Linux's /proc/net/tcp, tx and rx queues)."""
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, remote, _, queues, *_ = line.split()
        if port in (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)):
            tx, rx = (int(queue, 16) for queue in queues.split(":"))
            held += tx + rx
    return held


def _kernel_buffers_max() -> int:
    """The most one loopback connection's two ends can hold: the receiver's tcp_rmem and
    the sender's tcp_wmem maxima (Linux autotunes each up to these)."""
    rmem = Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()
    wmem = Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()
    return int(rmem[2]) + int(wmem[2])


# --- a crash costs about one lease ----------------------------------------------------


def test_sigkill_at_60_percent_of_a_512_mib_file_resumes_on_the_other_replica(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    size = 512 * MIB
    export_id = _export("files-1-sizemb-512-ratemb-48")
    replicas = {s.env["INSTANCE_ID"]: s for s in (_start(services, env, tmp_path) for _ in "ab")}
    before = _answers(embedded_stack)
    job = _input(export_id)
    arn = aws.start_execution(job)

    def sixty_percent() -> dict[str, Any] | None:
        task = aws.task(job["jobId"], "00000")
        parts = (task or {}).get("upload", {}).get("parts", [])
        return task if parts and int(parts[-1][3]) >= 0.6 * size else None

    task = wait_for(sixty_percent, 120, "60 % of the file stored")
    stored_at_kill = int(task["upload"]["parts"][-1][3])
    in_kernel = _in_kernel(_port(embedded_stack.sandbox.base_url))
    replicas[task["leaseOwner"].split("/")[0]].kill()  # owner = replica/handling
    killed_at = time.monotonic()

    execution = aws.wait_execution(arn, timeout=120)  # the acceptance bound: 2 minutes
    recovered_in = time.monotonic() - killed_at
    assert execution["status"] == "SUCCEEDED", execution
    key = f"exports/{job['jobId']}/0_file-0.bin"
    assert _object_sha256(aws, key) == (size, SandboxExportApi.file_sha256(export_id, 0, size))
    stored = aws.task(job["jobId"], "00000")
    assert stored is not None and stored["sha256"] == SandboxExportApi.file_sha256(
        export_id, 0, size
    )
    sent = _settled_bytes(embedded_stack.sandbox, export_id)
    again = sent - size
    # Re-read: what the victim had read past its last stored part (parts in flight, the
    # buffer), never what was already stored; plus what the file server had sent and the
    # kernel still held on the connection, at either end (autotuned socket buffers grow
    # with the machine's load, each up to its sysctl maximum: measured, and bounded).
    assert in_kernel <= _kernel_buffers_max()
    read_again = again - in_kernel
    assert read_again <= 4 * PART, (
        f"{again / MIB:.1f} MiB downloaded twice, {in_kernel / MIB:.1f} MiB of it in socket buffers"
    )
    assert again < stored_at_kill  # not read again from the start
    assert embedded_stack.sandbox.range_requests(export_id) == 1  # resumed, not restarted
    assert _answers(embedded_stack) - before == 1
    print(
        f"recovered in {recovered_in:.0f} s; re-downloaded {again / MIB:.1f} MiB, "
        f"{in_kernel / MIB:.1f} MiB of it in socket buffers at the kill"
    )


def test_sigkill_mid_download_of_small_files_completes_within_two_minutes(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    victim = _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="4")
    _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="4")
    before = _answers(embedded_stack)
    export_id = _export("files-16-filedelay-1500")
    job = _input(export_id)
    arn = aws.start_execution(job)

    def some_done_on_the_victim() -> bool:
        """The victim has stored files and downloads are in flight (small files take no
        lease, so the file server's count tells what is being served)."""
        stored = aws.job(job["jobId"])
        if not stored or stored["status"] != "DOWNLOADING" or stored["completedTasks"] < 2:
            return False
        served = embedded_stack.sandbox.file_requests(export_id)
        in_flight = served - stored["completedTasks"] - stored["failedTasks"]
        return in_flight >= 4 and '"file stored"' in victim.logs()

    wait_for(some_done_on_the_victim, 60, "the first replica mid-download")
    victim.kill()

    assert aws.wait_execution(arn, timeout=120)["status"] == "SUCCEEDED"
    stored = aws.job(job["jobId"])
    assert stored is not None and (stored["completedTasks"], stored["failedTasks"]) == (16, 0)
    assert _answers(embedded_stack) - before == 1


def test_sigkill_during_dispatch_is_carried_on_by_the_other_replica(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    # Small chunks only so that the dispatch lasts long enough to be caught in the middle;
    # the lease and the resume interval are the defaults (30 s, 10 s).
    chunked = {"DISPATCH_CHUNK_SIZE": "5"}
    replicas = {
        s.env["INSTANCE_ID"]: s for s in (_start(services, env, tmp_path, **chunked) for _ in "ab")
    }
    before = _answers(embedded_stack)
    files = 400
    export_id = _export(f"files-{files}-size-64")
    job = _input(export_id)
    arn = aws.start_execution(job)

    def mid_dispatch() -> dict[str, Any] | None:
        stored = aws.job(job["jobId"])
        if stored and int(stored.get("dispatchCursor", 0)) >= 50:
            return stored
        return None

    at_kill = wait_for(mid_dispatch, 90, "the dispatch some chunks in")
    replicas[str(at_kill["leaseOwner"])].kill()

    # The cursor is written ahead of each chunk's sends: if the kill came between the
    # two, that chunk's items were never sent, and the reaper sends them once the job
    # has been quiet for two minutes with nothing queued (at the default settings).
    execution = aws.wait_execution(arn, timeout=420)
    assert execution["status"] == "SUCCEEDED", execution
    stored = aws.job(job["jobId"])
    assert stored is not None
    assert (stored["totalTasks"], stored["completedTasks"], stored["failedTasks"]) == (
        files,
        files,
        0,
    )
    assert "dispatchCursor" not in stored and "dueKind" not in stored
    assert len(aws.keys(f"exports/{job['jobId']}/")) == files
    records = aws.ddb.query(
        TableName=env["DYNAMODB_TASKS_TABLE_NAME"],
        KeyConditionExpression="jobId = :j",
        FilterExpression="taskId <> :counters",
        ExpressionAttributeValues={":j": {"S": job["jobId"]}, ":counters": {"S": "#progress"}},
        Select="COUNT",
        ConsistentRead=True,
    )["Count"]
    assert records == files
    assert _answers(embedded_stack) - before == 1
    # No work item was sent twice: files fetched twice are at most the copies the victim
    # had in flight when it died (DOWNLOAD_CONCURRENCY), taken up again once their
    # messages became visible again.
    fetched = embedded_stack.sandbox.bytes_sent(export_id) // 64
    assert files <= fetched <= files + int(env.get("DOWNLOAD_CONCURRENCY", "32"))


# --- fresh URLs, byte-exact copies ----------------------------------------------------


def test_urls_expiring_during_a_30_s_outage_are_replaced_and_the_job_succeeds(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    sandbox = embedded_stack.sandbox
    files = 8
    export_id = _export(f"files-{files}-urlttl-20-filedelay-2000")
    first = _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="1")
    job = _input(export_id)
    arn = aws.start_execution(job)
    wait_for(
        lambda: (aws.job(job["jobId"]) or {}).get("completedTasks", 0) >= 2,
        60,
        "two files copied",
    )
    assert first.terminate() == 0
    reads_at_stop = sandbox.poll_count(export_id)
    time.sleep(30)  # the outage: every URL handed out so far has expired
    _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="1")

    execution = aws.wait_execution(arn, timeout=120)
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"])["completedTasks"] == files
    done = aws.job(job["jobId"])
    assert done is not None and done["failedTasks"] == 0
    left = files - 2
    # Each file still to copy was fetched through a URL the Export API handed out anew.
    assert sandbox.poll_count(export_id) - reads_at_stop >= left - 1
    for index in range(files):
        key = f"exports/{job['jobId']}/{index}_file-{index}.bin"
        assert aws.object_bytes(key) == SandboxExportApi.file_bytes(export_id, index, 1024)


def test_a_gzip_encoded_file_is_stored_exactly_as_served(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    _start(services, env, tmp_path)
    size = 200_000
    export_id = _export(f"files-1-gzip-checksum-size-{size}")
    job = _input(export_id)
    execution = aws.wait_execution(aws.start_execution(job), timeout=60)
    assert execution["status"] == "SUCCEEDED", execution
    key = f"exports/{job['jobId']}/0_file-0.bin"
    stored = aws.s3.get_object(Bucket=env["S3_BUCKET_NAME"], Key=key)
    served = SandboxExportApi.served_bytes(export_id, 0, size)
    assert stored["Body"].read() == served
    assert stored["ContentEncoding"] == "gzip"
    task = aws.task(job["jobId"], "00000")
    assert task is not None
    assert (task["bytes"], task["sha256"]) == (len(served), hashlib.sha256(served).hexdigest())


# --- a failed first write is retried soon ---------------------------------------------


def test_job_table_throttled_past_the_sdk_retries_still_starts_soon_and_succeeds(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    service = _start(services, env, tmp_path, REAPER_INTERVAL_SECONDS="0")
    throttled = {"left": 6}  # the SDK makes 5 attempts: the whole first handling fails

    def fault(operation: str) -> bool:
        if operation == "PutItem" and throttled["left"] > 0:
            throttled["left"] -= 1
            return True
        return False

    embedded_stack.aws.set_fault(fault)
    try:
        job = _input(_export("files-2"))
        sent = time.monotonic()
        arn = aws.start_execution(job)
        wait_for(lambda: aws.job(job["jobId"]), 60, "the job to exist")
        started_after = time.monotonic() - sent
    finally:
        embedded_stack.aws.set_fault(None)
    assert throttled["left"] == 0
    assert started_after < 60  # HEARTBEAT_INTERVAL_SECONDS' default: before any heartbeat
    assert aws.wait_execution(arn, timeout=60)["status"] == "SUCCEEDED"
    assert "message handling failed; it will be retried" in service.logs()


# --- heartbeats as AWS documents them, on plain moto ----------------------------------

NO_HEARTBEAT_MACHINE = {
    "Comment": "Shaped like the integration guide's: no HeartbeatSeconds.",
    "StartAt": "RunExport",
    "States": {
        "RunExport": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {
                "QueueUrl": "QUEUE_URL",
                "MessageBody": {
                    "jobId.$": "$.jobId",
                    "exportId.$": "$.exportId",
                    "userId.$": "$.userId",
                    "taskToken.$": "$$.Task.Token",
                },
            },
            "TimeoutSeconds": 300,
            "Catch": [{"ErrorEquals": ["JobCompletedWithFailures"], "Next": "PartlyFailed"}],
            "End": True,
        },
        "PartlyFailed": {"Type": "Fail", "ErrorPath": "$.Error", "CausePath": "$.Cause"},
    },
}
ONE_FILE_TIMES_OUT = {
    "HEARTBEAT_INTERVAL_SECONDS": "1",  # several heartbeats while the job runs
    "DOWNLOAD_TIMEOUT_MS": "3000",
    "DOWNLOAD_MAX_ATTEMPTS": "1",
}


def _machine_without_heartbeats(endpoint: str, prefix: str) -> tuple[dict[str, str], Aws]:
    resources = provision(endpoint, name_prefix=prefix)
    definition = json.dumps(NO_HEARTBEAT_MACHINE).replace("QUEUE_URL", resources.export_jobs_url)
    aws = Aws({"AWS_ENDPOINT": endpoint, "AWS_REGION": "us-east-1", **resources.as_env()})
    arn = aws.sfn.create_state_machine(
        name=f"{prefix}no-heartbeats",
        definition=definition,
        roleArn="arn:aws:iam::123456789012:role/export-job-sfn",
    )["stateMachineArn"]
    aws.env["STATE_MACHINE_ARN"] = arn
    return {**resources.as_env(), "STATE_MACHINE_ARN": arn}, aws


def _run_partly_failing_job(
    endpoint: str, stack: EmbeddedStack, services: list[ServiceProcess], tmp_path: Path
) -> tuple[dict[str, Any], dict[str, Any], Aws]:
    resources, aws = _machine_without_heartbeats(endpoint, f"nohb-{uuid.uuid4().hex[:6]}-")
    env = {**stack.env(), **resources, "AWS_ENDPOINT": endpoint, **ONE_FILE_TIMES_OUT}
    _start(services, env, tmp_path)
    job = _input(_export("files-3-hangfile-1-filedelay-2500"))
    execution = aws.wait_execution(aws.start_execution(job), timeout=90)
    stored = aws.job(job["jobId"])
    assert stored is not None
    return execution, stored, aws


def test_plain_moto_without_heartbeat_seconds_takes_the_catch_and_never_cancels(
    plain_emulator: PlainEmulator, embedded_stack: EmbeddedStack,
    services: list[ServiceProcess], tmp_path: Path,
) -> None:  # fmt: skip
    execution, job, aws = _run_partly_failing_job(
        plain_emulator.endpoint_url, embedded_stack, services, tmp_path
    )
    assert (execution["status"], execution.get("error")) == ("FAILED", "JobCompletedWithFailures")
    entered = [
        e["stateEnteredEventDetails"]["name"]
        for e in aws.history(execution["executionArn"])
        if "stateEnteredEventDetails" in e
    ]
    assert entered[-1] == "PartlyFailed"  # the Catch on JobCompletedWithFailures
    assert (job["status"], job["completedTasks"], job["failedTasks"]) == ("COMPLETED", 2, 1)
    assert job.get("heartbeatStopped"), "plain moto answered InvalidToken: heartbeats stopped"
    assert job["callbackStatus"] == "DELIVERED"
    logs = services[-1].logs()
    assert "InvalidToken" in logs and "workflow gave up" not in logs


def test_patched_emulator_same_machine_gets_the_exact_cause(
    embedded_stack: EmbeddedStack, services: list[ServiceProcess], tmp_path: Path
) -> None:
    execution, job, _aws = _run_partly_failing_job(
        embedded_stack.aws.endpoint_url, embedded_stack, services, tmp_path
    )
    assert (execution["status"], execution.get("error")) == ("FAILED", "JobCompletedWithFailures")
    assert execution.get("cause") == "Job completed with 1 failed tasks out of 3 total"
    assert job["status"] == "COMPLETED"


# --- every workflow that reuses a jobId gets the one answer ---------------------------


def test_three_executions_with_one_job_id_get_the_same_outcome_once_each(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path,
    embedded_stack: EmbeddedStack,
) -> None:  # fmt: skip
    _start(services, env, tmp_path, DOWNLOAD_CONCURRENCY="2")
    before = _answers(embedded_stack)
    job = _input(_export("files-6-filedelay-1500"))
    first = aws.start_execution(job)
    aws.wait_job(job["jobId"], ("DOWNLOADING",), timeout=60)
    second = aws.start_execution(job)  # a re-run with the same input, while it downloads
    wait_for(lambda: (aws.job(job["jobId"]) or {}).get("waitingTokens"), 60, "the second to attach")
    outputs = [aws.wait_execution(first, timeout=90), aws.wait_execution(second, timeout=90)]
    third = aws.start_execution(job)  # after it finished
    outputs.append(aws.wait_execution(third, timeout=60))

    assert [o["status"] for o in outputs] == ["SUCCEEDED"] * 3
    answers = [json.loads(o["output"]) for o in outputs]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["completedTasks"] == 6
    for arn in (first, second, third):
        succeeded = [e for e in aws.history(arn) if e["type"] == "TaskSucceeded"]
        assert len(succeeded) == 1
    assert _answers(embedded_stack) - before == 3
    assert len([j for j in aws.all_jobs() if j["jobId"] == job["jobId"]]) == 1


def test_the_same_job_id_for_another_export_is_answered_job_id_conflict(
    aws: Aws, env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    service = _start(services, env, tmp_path)
    job = _input(_export("files-1"))
    assert aws.wait_execution(aws.start_execution(job), timeout=60)["status"] == "SUCCEEDED"
    other = {**job, "exportId": _export("files-2")}
    execution = aws.wait_execution(aws.start_execution(other), timeout=60)
    assert (execution["status"], execution.get("error")) == ("FAILED", "JobIdConflict")
    stored = aws.job(job["jobId"])
    assert stored is not None and stored["exportId"] == job["exportId"]
    assert "jobId conflict" in service.logs()
