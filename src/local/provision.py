"""Provision the export service's AWS resources on an emulator (moto or LocalStack).

The resources are those of ``infra/template.yaml``, the production definition: the template is
deployed on the emulator's CloudFormation (``src.local.template_deploy``), with the state
machine definitions rendered from ``state-machines/`` by the same renderer. Nothing here
defines a resource; the constants below are read from the template for tests that build
their own queues alike.

Idempotent: calling it twice with the same arguments leaves one stack and one set of
resources. The ``name_prefix`` lets parallel test runs isolate themselves on one emulator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from src.infrastructure.aws.template import load_template, resources_of_type
from src.local import asl
from src.local.template_deploy import apply_ignored_properties, deploy

_TEMPLATE = load_template()


def _queue_property(logical_id: str, name: str) -> Any:
    return _TEMPLATE["Resources"][logical_id]["Properties"][name]


# Read from the template, for tests that create queues of the same shape.
QUEUE_VISIBILITY_TIMEOUT_SECONDS = int(_queue_property("ExportJobsQueue", "VisibilityTimeout"))
DLQ_MAX_RECEIVE_COUNT = int(_queue_property("ExportJobsQueue", "RedrivePolicy")["maxReceiveCount"])
DOWNLOAD_DLQ_MAX_RECEIVE_COUNT = int(
    _queue_property("DownloadTasksQueue", "RedrivePolicy")["maxReceiveCount"]
)
DLQ_SUFFIX = "-dlq"
STATUS_INDEX = "status-index"
USER_ID_INDEX = "userId-index"
# Any role ARN does on the emulator (it does not check IAM); for machines tests build.
STATE_MACHINE_ROLE_ARN = "arn:aws:iam::123456789012:role/export-job-sfn"

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
    batch_state_machine_arn: str
    notification_topic_arn: str

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
    task_timeout_seconds: int | None = None,
    heartbeat_seconds: int | None = None,
    max_concurrency: int | None = None,
    parameters: dict[str, str | int] | None = None,
) -> Resources:
    """Deploy the template (or bring its stack up to date); its resources' names and URLs.

    Unset parameters keep the template's defaults."""

    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
            **_DUMMY_CREDENTIALS,
        )

    values: dict[str, str | int] = dict(parameters or {})
    for key, value in (
        ("TaskTimeoutSeconds", task_timeout_seconds),
        ("HeartbeatSeconds", heartbeat_seconds),
        ("BatchMaxConcurrency", max_concurrency),
    ):
        if value is not None:
            values[key] = value
    cloudformation = client("cloudformation")
    deployed = deploy(cloudformation, name_prefix, values)
    stack_resources = _physical_ids(cloudformation, deployed.stack_name)
    stack_parameters = _parameter_values(cloudformation, deployed.stack_name)
    apply_ignored_properties(
        _TEMPLATE,
        stack_resources,
        stack_parameters,
        client("dynamodb"),
        client("s3"),
    )
    sqs = client("sqs")

    def queue_url(output: str) -> str:
        # moto's CloudFormation names queues by their AWS URL; the endpoint's form is the
        # one its SQS API returns (and the one LocalStack's stack outputs carry already).
        name = deployed.outputs[output].rstrip("/").rsplit("/", 1)[-1]
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])

    _ensure_state_machines(client, stack_resources, stack_parameters)
    return Resources(
        export_jobs_url=queue_url("ExportJobsQueueUrl"),
        export_jobs_dlq_url=queue_url("ExportJobsDlqUrl"),
        download_tasks_url=queue_url("DownloadTasksQueueUrl"),
        download_tasks_dlq_url=queue_url("DownloadTasksDlqUrl"),
        table_name=deployed.outputs["JobTableName"],
        tasks_table_name=deployed.outputs["TasksTableName"],
        bucket=deployed.outputs["BucketName"],
        state_machine_arn=deployed.outputs["StateMachineArn"],
        batch_state_machine_arn=deployed.outputs["BatchStateMachineArn"],
        notification_topic_arn=deployed.outputs["NotificationTopicArn"],
    )


def _physical_ids(cloudformation: Any, stack: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        for summary in page["StackResourceSummaries"]:
            ids[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
    return ids


def _parameter_values(cloudformation: Any, stack: str) -> dict[str, str]:
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in described.get("Parameters", [])}


def _ensure_state_machines(client: Any, ids: dict[str, str], parameters: dict[str, str]) -> None:
    """moto's CloudFormation creates state machines in a backend its Step Functions API does
    not serve when executions are simulated (moto 5.2.5): DescribeStateMachine does not find
    them. Each one missing is created through the API, with the definition rendered from the
    same file and the stack's own values; nothing is created where the stack's are found
    (LocalStack, a fixed moto)."""
    sfn = client("stepfunctions")
    for logical_id, resource in resources_of_type(
        _TEMPLATE, "AWS::StepFunctions::StateMachine"
    ).items():
        arn = ids[logical_id]
        properties = resource["Properties"]
        values: dict[str, str | int] = {
            name: _resolve(value, ids, parameters, client)
            for name, value in properties["DefinitionSubstitutions"].items()
        }
        machine = Path(properties["DefinitionS3Location"]).parent.name
        definition = asl.render(machine, values)
        role_arn = _resolve(properties["RoleArn"], ids, parameters, client)
        try:
            found = sfn.describe_state_machine(stateMachineArn=arn)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "StateMachineDoesNotExist":
                raise
            sfn.create_state_machine(
                name=arn.rsplit(":", 1)[-1], definition=definition, roleArn=role_arn
            )
            continue
        if found["definition"] != definition:  # new parameters on an existing stack
            sfn.update_state_machine(stateMachineArn=arn, definition=definition, roleArn=role_arn)


def _resolve(value: Any, ids: dict[str, str], parameters: dict[str, str], client: Any) -> str:
    """A substitution's value: a parameter, a resource's Ref, or a role's Arn."""
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        if name in parameters:
            return parameters[name]
        if name in ids:
            physical = ids[name]
            if physical.startswith("https://sqs."):
                queue = physical.rsplit("/", 1)[-1]
                return str(client("sqs").get_queue_url(QueueName=queue)["QueueUrl"])
            return physical
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        if attribute == "Arn" and logical_id in ids:
            return str(client("iam").get_role(RoleName=ids[logical_id])["Role"]["Arn"])
    if isinstance(value, str | int):
        return str(value)
    raise ValueError(f"cannot resolve {value!r} on the emulator")


def render_definition(machine: str, values: dict[str, str | int]) -> str:
    """`state-machines/<machine>/definition.asl.json` rendered and validated."""
    return asl.render(machine, values)


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
