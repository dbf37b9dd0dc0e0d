"""A 20-job workload for the fault-injection suite, and how to check nothing was lost."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from src.local.sandbox import SandboxExportApi
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws

# Settings that make leases, visibility and retries short enough for a bounded suite.
FAST = {
    "POLLING_INTERVAL_MS": "300",
    "POLLING_MAX_INTERVAL_MS": "1000",
    "POLLER_TICK_MS": "200",
    "POLL_LEASE_SECONDS": "2",
    "SQS_WAIT_TIME_SECONDS": "1",
    "SQS_VISIBILITY_TIMEOUT": "4",
    "DOWNLOAD_TIMEOUT_MS": "4000",
    "DOWNLOAD_MAX_ATTEMPTS": "2",
    "EXPORT_API_TIMEOUT": "1000",
    "EXPORT_API_MAX_RETRIES": "1",
    "REAPER_INTERVAL_SECONDS": "1",
    "CALLBACK_LEASE_SECONDS": "10",
    "DOWNLOAD_STALL_SECONDS": "8",
    "SHUTDOWN_GRACE_SECONDS": "3",
}

# (export spec, execution status, execution error, files expected in S3, files failed;
# None: the export failed, no file was counted)
PLAN = (
    [("files-3-filedelay-300", "SUCCEEDED", None, 3, 0)] * 12
    + [("files-4-fail-1-filedelay-200", "FAILED", "JobCompletedWithFailures", 3, 1)] * 3
    + [("pending-3-files-2", "SUCCEEDED", None, 2, 0)] * 2
    + [("files-0", "SUCCEEDED", None, 0, 0)]
    + [("pending-1-failed", "FAILED", "ExportFailed", 0, None)] * 2
)
assert len(PLAN) == 20


@dataclass(frozen=True)
class Run:
    job_id: str
    export_id: str
    arn: str
    status: str
    error: str | None
    files: int
    failed: int | None


@dataclass(frozen=True)
class Result:
    scenario: str
    jobs: int
    faults: int
    lost: int
    duplicates: int
    refused_sends: int
    problems: tuple[str, ...]


RESULTS: list[Result] = []
# Each test's rows travel on its report under this name (user_properties): under xdist
# they are made on a worker and printed by the controller (tests/conftest.py).
ROW_PROPERTY = "fault_injection_row"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The suite's table: a header and one line per scenario (Result fields as a dict)."""
    header = f"{'scenario':<34}{'jobs':>6}{'faults injected':>17}{'jobs lost':>11}{'duplicate callbacks':>21}{'refused extra sends':>21}"
    return [header] + [
        f"{r['scenario']:<34}{r['jobs']:>6}{r['faults']:>17}{r['lost']:>11}{r['duplicates']:>21}{r['refused_sends']:>21}"
        for r in rows
    ]


def start(aws: Aws) -> list[Run]:
    runs = []
    for spec, status, error, files, failed in PLAN:
        job_id, export_id = str(uuid.uuid4()), f"f{uuid.uuid4().hex[:8]}-{spec}"
        arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "faults"})
        runs.append(Run(job_id, export_id, arn, status, error, files, failed))
    return runs


def callback_calls(stack: EmbeddedStack) -> int:
    return sum(stack.aws.calls(op) for op in ("SendTaskSuccess", "SendTaskFailure"))


def verify(
    scenario: str,
    aws: Aws,
    runs: list[Run],
    *,
    faults: int,
    timeout: float = 150.0,
) -> Result:
    """Every job terminal with the expected outcome, exactly one answer per workflow (from
    its history), every file counted exactly once (the job's final counts and its counters
    item), every object whole (sha256)."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    lost = duplicates = 0
    for run in runs:
        execution = _finished(aws, run.arn, deadline)
        job = aws.job(run.job_id)
        if execution is None or job is None or job["status"] not in ("COMPLETED", "FAILED"):
            lost += 1
            problems.append(f"{run.export_id}: not finished ({job and job['status']})")
            continue
        # The answers to RunExport (its SQS task), not the notification's SNS task.
        answers = [
            e
            for e in aws.history(run.arn)
            if e["type"] in ("TaskSucceeded", "TaskFailed")
            and (e.get("taskSucceededEventDetails") or e.get("taskFailedEventDetails", {})).get(
                "resourceType"
            )
            == "sqs"
        ]
        if len(answers) != 1:
            duplicates += 1
        if (execution["status"], execution.get("error")) != (run.status, run.error):
            problems.append(f"{run.export_id}: {execution['status']} {execution.get('error')}")
        problems += _counts(aws, run, job)
        problems += _objects(aws, run)
    result = Result(scenario, len(runs), faults, lost, duplicates, 0, tuple(problems))
    RESULTS.append(result)
    return result


def _finished(aws: Aws, arn: str, deadline: float) -> dict | None:
    while time.monotonic() < deadline:
        described = aws.sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.5)
    return None


def _counts(aws: Aws, run: Run, job: dict[str, Any]) -> list[str]:
    """Each file counted once, on the counters item and in the job's final counts: a file
    counted twice (redelivery, two replicas, a SIGKILL between copy and count) or not at
    all shows here."""
    if run.failed is None:
        return []  # the export failed: no file was dispatched
    want = (run.files + run.failed, run.files, run.failed)
    got = tuple(int(job.get(k, 0)) for k in ("totalTasks", "completedTasks", "failedTasks"))
    problems = [] if got == want else [f"{run.export_id}: job counts {got}, want {want}"]
    progress = aws.task(run.job_id, "#progress")
    if run.files + run.failed and progress is None:
        problems.append(f"{run.export_id}: no counters item")
    elif progress is not None:
        counted = (int(progress["completed"]), int(progress["failed"]))
        if counted != want[1:]:
            problems.append(f"{run.export_id}: counters item {counted}, want {want[1:]}")
    return problems


def _objects(aws: Aws, run: Run) -> list[str]:
    import hashlib

    keys = aws.keys(f"exports/{run.job_id}/")
    problems = [] if len(keys) == run.files else [f"{run.export_id}: {len(keys)} objects"]
    for key in keys:
        index = int(key.rsplit("/", 1)[1].split("_", 1)[0])
        digest = hashlib.sha256(aws.object_bytes(key)).hexdigest()
        if digest != SandboxExportApi.file_sha256(run.export_id, index, 1024):
            problems.append(f"{key}: truncated or corrupt")
    return problems


def describe(result: Result) -> str:
    return json.dumps(result.__dict__, default=list)
