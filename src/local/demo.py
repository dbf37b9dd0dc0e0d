"""Demo executions of the export-job state machine against the embedded stack."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3


@dataclass(frozen=True)
class Scenario:
    name: str
    export_id: str
    expected_status: str  # execution status, or the job status for a no-token job
    expected_error: str | None = None
    with_token: bool = True


SCENARIOS = (
    Scenario("three-files", "demo-files-3", "SUCCEEDED"),
    Scenario("partial-failure", "demo-files-10-fail-3", "FAILED", "JobCompletedWithFailures"),
    Scenario("zero-files", "demo-files-0", "SUCCEEDED"),
    Scenario("export-failed", "demo-failed", "FAILED", "ExportFailed"),
    Scenario("no-token", "demo-files-2", "COMPLETED", with_token=False),
    # Two files fail once (404, then served): for the console's "retry failed files".
    Scenario("retryable", "demo-files-4-fail-2-failfirst-1", "COMPLETED", with_token=False),
)


@dataclass(frozen=True)
class DemoResult:
    scenario: Scenario
    status: str
    detail: str

    @property
    def as_expected(self) -> bool:
        if self.status != self.scenario.expected_status:
            return False
        return self.scenario.expected_error is None or self.scenario.expected_error in self.detail

    def line(self) -> str:
        mark = "ok  " if self.as_expected else "FAIL"
        return f"{mark} {self.scenario.name:<16} {self.status:<10} {self.detail}"


def _clients(env: dict[str, str]) -> dict[str, Any]:
    kwargs = {
        "endpoint_url": env["AWS_ENDPOINT"],
        "region_name": env["AWS_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    return {s: boto3.client(s, **kwargs) for s in ("stepfunctions", "sqs", "dynamodb")}


def _wait(check: Callable[[], tuple[str, str] | None], timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.3)
    return "TIMEOUT", f"no result within {timeout:.0f}s"


def run_demo(env: dict[str, str], timeout: float = 90.0) -> list[DemoResult]:
    """Start every scenario at once, wait for each, return one result per scenario."""
    clients = _clients(env)
    sfn, sqs, ddb = clients["stepfunctions"], clients["sqs"], clients["dynamodb"]
    started: list[tuple[Scenario, str]] = []
    for scenario in SCENARIOS:
        job_id = str(uuid.uuid4())
        body = {"jobId": job_id, "exportId": scenario.export_id, "userId": "demo-user"}
        if scenario.with_token:
            arn = sfn.start_execution(
                stateMachineArn=env["STATE_MACHINE_ARN"],
                name=f"demo-{scenario.name}-{job_id[:8]}",
                input=json.dumps(body),
            )["executionArn"]
            started.append((scenario, arn))
        else:
            sqs.send_message(QueueUrl=env["SQS_EXPORT_JOBS_URL"], MessageBody=json.dumps(body))
            started.append((scenario, job_id))

    def execution(arn: str) -> tuple[str, str] | None:
        d = sfn.describe_execution(executionArn=arn)
        if d["status"] == "RUNNING":
            return None
        detail = d.get("output") or f"{d.get('error')}: {d.get('cause')}"
        return d["status"], detail

    def job(job_id: str) -> tuple[str, str] | None:
        item = ddb.get_item(TableName=env["DYNAMODB_TABLE_NAME"], Key={"jobId": {"S": job_id}})
        status = item.get("Item", {}).get("status", {}).get("S")
        if status not in ("COMPLETED", "FAILED", "CANCELLED"):
            return None
        counts = {k: item["Item"][k]["N"] for k in ("totalTasks", "completedTasks", "failedTasks")}
        return status, f"job {job_id} (no task token, no callback) {json.dumps(counts)}"

    results = []
    for scenario, ref in started:
        check = (lambda r=ref: execution(r)) if scenario.with_token else (lambda r=ref: job(r))
        status, detail = _wait(check, timeout)
        results.append(DemoResult(scenario, status, detail))
    return results
