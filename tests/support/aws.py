"""Sync boto3 helpers for tests: clients on the emulator and polling waits."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from boto3.dynamodb.types import TypeDeserializer

T = TypeVar("T")
_deserializer = TypeDeserializer()


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None and result is not False:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Aws:
    env: dict[str, str]

    def __post_init__(self) -> None:
        kwargs = {
            "endpoint_url": self.env["AWS_ENDPOINT"],
            "region_name": self.env["AWS_REGION"],
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        self.sfn = boto3.client("stepfunctions", **kwargs)
        self.sqs = boto3.client("sqs", **kwargs)
        self.ddb = boto3.client("dynamodb", **kwargs)
        self.s3 = boto3.client("s3", **kwargs)
        self.sns = boto3.client("sns", **kwargs)

    # Step Functions
    def start_execution(self, payload: dict[str, Any]) -> str:
        return self.sfn.start_execution(
            stateMachineArn=self.env["STATE_MACHINE_ARN"],
            name=f"e2e-{uuid.uuid4()}",
            input=json.dumps(payload),
        )["executionArn"]

    def wait_execution(self, arn: str, timeout: float = 60.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            d = self.sfn.describe_execution(executionArn=arn)
            return None if d["status"] == "RUNNING" else d

        return wait_for(done, timeout, f"execution {arn}")

    def history(self, arn: str) -> list[dict[str, Any]]:
        return self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]

    # DynamoDB
    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job item; while DOWNLOADING, with its file counters as counted on their
        own item in the tasks table (as the service shows them: the job item gets the
        final counts when the job ends)."""
        item = self.ddb.get_item(
            TableName=self.env["DYNAMODB_TABLE_NAME"],
            Key={"jobId": {"S": job_id}},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return None
        job = {k: _deserializer.deserialize(v) for k, v in item.items()}
        progress = self.task(job_id, "#progress") if job.get("status") == "DOWNLOADING" else None
        if progress:
            job["completedTasks"], job["failedTasks"] = progress["completed"], progress["failed"]
        return job

    def task(self, job_id: str, task_id: str) -> dict[str, Any] | None:
        item = self.ddb.get_item(
            TableName=self.env["DYNAMODB_TASKS_TABLE_NAME"],
            Key={"jobId": {"S": job_id}, "taskId": {"S": task_id}},
            ConsistentRead=True,
        ).get("Item")
        return {k: _deserializer.deserialize(v) for k, v in item.items()} if item else None

    def wait_job(
        self, job_id: str, statuses: tuple[str, ...], timeout: float = 60.0
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job and job["status"] in statuses else None

        return wait_for(reached, timeout, f"job {job_id} in {statuses}")

    def wait_answered(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The job once its answer is recorded as delivered: an execution ends when Step
        Functions takes the answer, and the job records that just after."""

        def answered() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job and job.get("callbackStatus") == "DELIVERED" else None

        return wait_for(answered, timeout, f"job {job_id} answer recorded")

    def all_jobs(self) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.env["DYNAMODB_TABLE_NAME"])["Items"]
        return [{k: _deserializer.deserialize(v) for k, v in i.items()} for i in items]

    # SQS
    def send_job(self, body: dict[str, Any] | str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.env["SQS_EXPORT_JOBS_URL"], MessageBody=text)

    # S3
    def object_bytes(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.env["S3_BUCKET_NAME"], Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        response = self.s3.list_objects_v2(Bucket=self.env["S3_BUCKET_NAME"], Prefix=prefix)
        return sorted(o["Key"] for o in response.get("Contents", []))
