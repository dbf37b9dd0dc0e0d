"""The drop-in swap as an operator does it: the original service's resources only, then
`export-service migrate`, then a real export end to end on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.local.provision import STATE_MACHINE_ROLE_ARN, render_definition
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws
from tests.support.service_process import ROOT, ServiceProcess

pytestmark = pytest.mark.e2e

ORIGINAL_INDEXES = ("status-index", "userId-index")


def _original_resources(aws: Aws, prefix: str) -> dict[str, str]:
    """What the original (NestJS) service's deployment has: its job table with its two
    indexes, its queues with their DLQs, its bucket and the export-job state machine."""
    table = f"{prefix}export-job-state"
    aws.ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "jobId", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("jobId", "status", "userId", "createdAt")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": index.split("-")[0], "KeyType": "HASH"},
                    {"AttributeName": "createdAt", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in ORIGINAL_INDEXES
        ],
    )
    urls = {}
    for queue in ("export-jobs", "download-tasks"):
        dlq = aws.sqs.create_queue(QueueName=f"{prefix}{queue}-dlq")["QueueUrl"]
        dlq_arn = aws.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        urls[queue] = aws.sqs.create_queue(
            QueueName=f"{prefix}{queue}",
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
            },
        )["QueueUrl"]
    bucket = f"{prefix}export-service-bucket"
    aws.s3.create_bucket(Bucket=bucket)
    definition = render_definition(
        "export-job",
        {
            "ExportJobsQueueUrl": urls["export-jobs"],
            "TaskTimeoutSeconds": 600,
            "HeartbeatSeconds": 300,
            "NotificationTopicArn": f"arn:aws:sns:us-east-1:123456789012:{prefix}none",
        },
    )
    machine = aws.sfn.create_state_machine(
        name=f"{prefix}export-job", definition=definition, roleArn=STATE_MACHINE_ROLE_ARN
    )["stateMachineArn"]
    return {
        "SQS_EXPORT_JOBS_URL": urls["export-jobs"],
        "SQS_DOWNLOAD_TASKS_URL": urls["download-tasks"],
        "DYNAMODB_TABLE_NAME": table,
        "DYNAMODB_TASKS_TABLE_NAME": f"{prefix}export-job-tasks",
        "S3_BUCKET_NAME": bucket,
        "STATE_MACHINE_ARN": machine,
    }


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    base = embedded_stack.env(embedded_stack.resources)
    prefix = f"orig-{uuid.uuid4().hex[:6]}-"
    return {**base, **_original_resources(Aws(base), prefix)}


def migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "src.main", "migrate", *args],
        cwd=ROOT,
        env={**os.environ, **env, "LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def runs(env: dict[str, str]) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    before = migrate(env, "--check")
    applied = migrate(env)
    again = migrate(env)
    after = migrate(env, "--check")
    yield {"before": before, "applied": applied, "again": again, "after": after}


def test_check_before_lists_what_the_original_lacks_and_changes_nothing(
    env: dict[str, str], runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    before = runs["before"]
    table, tasks = env["DYNAMODB_TABLE_NAME"], env["DYNAMODB_TASKS_TABLE_NAME"]

    assert before.returncode == 1, before.stderr
    lines = before.stdout.splitlines()
    assert f"ok       table {table}" in lines
    for index in ORIGINAL_INDEXES:
        assert f"ok       index {index} on {table}" in lines
    missing = sorted(line.split(":")[0] for line in lines if line.startswith("missing"))
    assert missing == sorted(
        [
            f"missing  index callbackDue-index on {table}",
            f"missing  index due-index on {table}",
            f"missing  index heartbeat-index on {table}",
            f"missing  TTL on {table}.ttl",
            f"missing  table {tasks}",
        ]
    )
    assert "5 missing" in before.stderr


def test_migrate_creates_what_is_missing_once_and_check_then_finds_nothing(
    env: dict[str, str], runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    applied, again, after = runs["applied"], runs["again"], runs["after"]
    table, tasks = env["DYNAMODB_TABLE_NAME"], env["DYNAMODB_TASKS_TABLE_NAME"]

    assert applied.returncode == 0, applied.stderr
    created = sorted(line.split(":")[0] for line in applied.stdout.splitlines()
                     if line.startswith("created"))  # fmt: skip
    assert created == sorted(
        [
            f"created  index callbackDue-index on {table}",
            f"created  index due-index on {table}",
            f"created  index heartbeat-index on {table}",
            f"created  TTL on {table}.ttl",
            f"created  table {tasks}",
            f"created  TTL on {tasks}.ttl",
        ]
    )
    assert again.returncode == 0 and "created" not in again.stdout  # idempotent
    assert after.returncode == 0, after.stdout
    assert not [line for line in after.stdout.splitlines() if not line.startswith("ok")]
    assert "nothing missing" in after.stderr


def test_an_export_runs_end_to_end_on_the_migrated_resources(
    env: dict[str, str],
    runs: dict[str, subprocess.CompletedProcess[str]],
    tmp_path: Path,
    services: list[ServiceProcess],
) -> None:
    assert runs["applied"].returncode == 0
    aws = Aws(env)
    service = ServiceProcess(env, tmp_path / "service.log", POLLING_INTERVAL_MS="200",
                             SQS_WAIT_TIME_SECONDS="1")  # fmt: skip
    services.append(service.start())
    job_id = str(uuid.uuid4())

    arn = aws.start_execution({"jobId": job_id, "exportId": "migrated-files-3", "userId": "u"})
    execution = aws.wait_execution(arn)

    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert (output["status"], output["completedTasks"], output["failedTasks"]) == (
        "COMPLETED", 3, 0,
    )  # fmt: skip
    assert len(aws.keys(f"exports/{job_id}/")) == 3


def test_a_table_whose_key_differs_is_refused_with_the_reason(
    embedded_stack: EmbeddedStack,
) -> None:
    base = embedded_stack.env(embedded_stack.resources)
    aws = Aws(base)
    table = f"wrong-{uuid.uuid4().hex[:6]}-export-job-state"
    aws.ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )

    result = migrate({**base, "DYNAMODB_TABLE_NAME": table})

    assert result.returncode == 1
    assert f"conflict table {table}: key is id HASH, this service needs jobId HASH" in (
        result.stderr
    )
    tables = aws.ddb.list_tables()["TableNames"]
    assert base["DYNAMODB_TASKS_TABLE_NAME"] in tables  # the embedded stack's, untouched
