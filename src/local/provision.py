"""Provision the export service's AWS resources on an emulator (moto or LocalStack).

Mirrors ``infra/template.yaml`` (the production definition); keep the two in step. The state
machines are rendered from the same files production deploys (``state-machines/*/definition.asl.json``)
by ``src.local.asl``, with the same placeholders CloudFormation fills through
``DefinitionSubstitutions``.

Idempotent: calling it twice with the same arguments leaves one set of resources. The
``name_prefix`` lets parallel test runs isolate themselves on one emulator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from src.local import asl

# --- Names and shapes shared with infra/template.yaml (keep in step) ---------------------

EXPORT_JOBS_QUEUE = "export-jobs"
DOWNLOAD_TASKS_QUEUE = "download-tasks"
DLQ_SUFFIX = "-dlq"
# The service sets its own visibility (SQS_VISIBILITY_TIMEOUT, 60 s) on every receive;
# the queue's default only applies to other readers, so it says the same.
QUEUE_VISIBILITY_TIMEOUT_SECONDS = 60
# Invalid messages go to the DLQ at once (the service rejects them); this count is for
# handler failures (throttling, outages), retried after 2, 4, 8, 16 s: about 30 s in all
# with the receive waits, below HEARTBEAT_INTERVAL_SECONDS (60), which is itself below
# the state machine's HeartbeatSeconds (300). See the README's "Timing".
DLQ_MAX_RECEIVE_COUNT = 5
# Work items are legitimately received more than once (job not DOWNLOADING yet for a
# moment after dispatch, the task's lease still held by a replica that just died), so
# their queue allows more receives before a message counts as poison.
DOWNLOAD_DLQ_MAX_RECEIVE_COUNT = 10
DLQ_RETENTION_SECONDS = 14 * 24 * 3600

JOB_TABLE = "export-job-state"
JOB_TABLE_HASH_KEY = "jobId"
STATUS_INDEX = "status-index"
USER_ID_INDEX = "userId-index"
INDEX_RANGE_KEY = "createdAt"
TASKS_TABLE = "export-job-tasks"
TASKS_TABLE_HASH_KEY = "jobId"
TASKS_TABLE_RANGE_KEY = "taskId"
TTL_ATTRIBUTE = "ttl"

BUCKET = "export-service-bucket"

STATE_MACHINE = "export-job"
BATCH_STATE_MACHINE = "batch-export"
STATE_MACHINE_ROLE_ARN = "arn:aws:iam::123456789012:role/export-job-sfn"
NOTIFICATION_TOPIC = "export-notifications"
_DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class Resources:
    export_jobs_url: str
    export_jobs_dlq_url: str
    download_tasks_url: str
    download_tasks_dlq_url: str
    table_name: str
    tasks_table_name: str
    bucket: str
    state_machine_arn: str
    notification_topic_arn: str = ""
    batch_state_machine_arn: str = ""

    def as_env(self) -> dict[str, str]:
        """The service's settings (environment names) for these resources."""
        return {
            "SQS_EXPORT_JOBS_URL": self.export_jobs_url,
            "SQS_DOWNLOAD_TASKS_URL": self.download_tasks_url,
            "DYNAMODB_TABLE_NAME": self.table_name,
            "DYNAMODB_TASKS_TABLE_NAME": self.tasks_table_name,
            "S3_BUCKET_NAME": self.bucket,
            "STATE_MACHINE_ARN": self.state_machine_arn,
        }


def provision(
    endpoint_url: str,
    region: str = "us-east-1",
    *,
    name_prefix: str = "",
    task_timeout_seconds: int = asl.DEFAULT_TASK_TIMEOUT_SECONDS,
    heartbeat_seconds: int = asl.DEFAULT_HEARTBEAT_SECONDS,
    max_concurrency: int = asl.DEFAULT_MAX_CONCURRENCY,
) -> Resources:
    """Create (or bring up to date) every resource; returns their names, URLs and ARN."""
    p = name_prefix

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
            **_DUMMY_CREDENTIALS,
        )

    sqs = client("sqs")
    export_jobs_url, export_jobs_dlq_url = _queue_with_dlq(sqs, p + EXPORT_JOBS_QUEUE)
    download_tasks_url, download_tasks_dlq_url = _queue_with_dlq(
        sqs, p + DOWNLOAD_TASKS_QUEUE, DOWNLOAD_DLQ_MAX_RECEIVE_COUNT
    )

    dynamodb = client("dynamodb")
    table_name = p + JOB_TABLE
    _table(dynamodb, table_name, _job_table_spec())
    tasks_table_name = p + TASKS_TABLE
    _table(dynamodb, tasks_table_name, _tasks_table_spec())

    bucket = p + BUCKET
    _bucket(client("s3"), bucket, region)

    topic_arn = str(client("sns").create_topic(Name=p + NOTIFICATION_TOPIC)["TopicArn"])
    sfn = client("stepfunctions")
    definition = asl.render(
        "export-job",
        {
            "ExportJobsQueueUrl": export_jobs_url,
            "TaskTimeoutSeconds": task_timeout_seconds,
            "HeartbeatSeconds": heartbeat_seconds,
            "NotificationTopicArn": topic_arn,
        },
    )
    state_machine_arn = _state_machine(sfn, p + STATE_MACHINE, definition)
    batch_definition = asl.render(
        "batch-export",
        {
            "ExportJobStateMachineArn": state_machine_arn,
            "NotificationTopicArn": topic_arn,
            "MaxConcurrency": max_concurrency,
            "TaskTimeoutSeconds": task_timeout_seconds,
        },
    )
    batch_state_machine_arn = _state_machine(sfn, p + BATCH_STATE_MACHINE, batch_definition)

    return Resources(
        export_jobs_url=export_jobs_url,
        export_jobs_dlq_url=export_jobs_dlq_url,
        download_tasks_url=download_tasks_url,
        download_tasks_dlq_url=download_tasks_dlq_url,
        table_name=table_name,
        tasks_table_name=tasks_table_name,
        bucket=bucket,
        state_machine_arn=state_machine_arn,
        notification_topic_arn=topic_arn,
        batch_state_machine_arn=batch_state_machine_arn,
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        # Exists with other attributes: bring it up to date.
        if _error_code(exc) not in {"QueueAlreadyExists", "QueueNameExists"}:
            raise
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url


def _queue_with_dlq(
    sqs: Any, name: str, max_receive_count: int = DLQ_MAX_RECEIVE_COUNT
) -> tuple[str, str]:
    dlq_url = _queue(sqs, name + DLQ_SUFFIX, {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = _queue(
        sqs,
        name,
        {
            "VisibilityTimeout": str(QUEUE_VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
            ),
        },
    )
    return url, dlq_url


CALLBACK_DUE_INDEX = "callbackDue-index"
CALLBACK_DUE_KEY = "callbackDue"
# Sparse: jobs with periodic work due at dueAt (a dispatch to resume), so a round reads
# what is due, not every job in flight.
DUE_INDEX = "due-index"
DUE_KIND_KEY = "dueKind"
DUE_AT_KEY = "dueAt"
HEARTBEAT_INDEX = "heartbeat-index"
HEARTBEAT_DUE_KEY = "heartbeatDue"
HEARTBEAT_AT_KEY = "nextHeartbeatAt"


def _job_table_spec() -> dict[str, Any]:
    def index(
        name: str, hash_key: str, range_key: str = INDEX_RANGE_KEY, projection: str = "ALL"
    ) -> dict[str, Any]:
        return {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": hash_key, "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": projection},
        }

    return {
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in (
                JOB_TABLE_HASH_KEY,
                "status",
                "userId",
                CALLBACK_DUE_KEY,
                INDEX_RANGE_KEY,
                DUE_KIND_KEY,
                DUE_AT_KEY,
                HEARTBEAT_DUE_KEY,
                HEARTBEAT_AT_KEY,
            )
        ],
        "KeySchema": [{"AttributeName": JOB_TABLE_HASH_KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            index(STATUS_INDEX, "status"),
            index(USER_ID_INDEX, "userId"),
            # Sparse: only finished jobs whose workflow is still owed an answer.
            index(CALLBACK_DUE_INDEX, CALLBACK_DUE_KEY),
            index(DUE_INDEX, DUE_KIND_KEY, DUE_AT_KEY, "KEYS_ONLY"),
            # Sparse: unfinished jobs with a waiting workflow, by their next heartbeat.
            index(HEARTBEAT_INDEX, HEARTBEAT_DUE_KEY, HEARTBEAT_AT_KEY, "KEYS_ONLY"),
        ],
    }


def _tasks_table_spec() -> dict[str, Any]:
    return {
        "AttributeDefinitions": [
            {"AttributeName": TASKS_TABLE_HASH_KEY, "AttributeType": "S"},
            {"AttributeName": TASKS_TABLE_RANGE_KEY, "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": TASKS_TABLE_HASH_KEY, "KeyType": "HASH"},
            {"AttributeName": TASKS_TABLE_RANGE_KEY, "KeyType": "RANGE"},
        ],
    }


def _table(dynamodb: Any, name: str, spec: dict[str, Any]) -> None:
    try:
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **spec)
    except ClientError as exc:
        if _error_code(exc) != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in {"ENABLED", "ENABLING"}:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )


def _bucket(s3: Any, name: str, region: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )


def _state_machine(sfn: Any, name: str, definition: str) -> str:
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page["stateMachines"]:
            if machine["name"] == name:
                arn = str(machine["stateMachineArn"])
                sfn.update_state_machine(
                    stateMachineArn=arn, definition=definition, roleArn=STATE_MACHINE_ROLE_ARN
                )
                return arn
    created = sfn.create_state_machine(
        name=name, definition=definition, roleArn=STATE_MACHINE_ROLE_ARN, type="STANDARD"
    )
    return str(created["stateMachineArn"])


def main(argv: list[str] | None = None) -> None:
    """`python -m src.local.provision --endpoint http://localstack:4566` (docker-compose)."""
    import argparse

    parser = argparse.ArgumentParser(description="Create the service's AWS resources.")
    parser.add_argument("--endpoint", required=True, help="AWS endpoint (LocalStack, emulator)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--prefix", default="")
    args = parser.parse_args(argv)
    resources = provision(args.endpoint, args.region, name_prefix=args.prefix)
    print(json.dumps(resources.as_env(), indent=2))


if __name__ == "__main__":
    main()
