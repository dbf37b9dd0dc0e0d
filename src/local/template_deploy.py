"""Deploy infra/template.yaml on an emulator's CloudFormation (moto, LocalStack).

The template is the one definition of the service's resources; the embedded stack, the tests
and `python -m src.local.provision` all create them through here. Two things differ from a
deploy on AWS, both mechanical:

* State machine definitions: `aws cloudformation package` uploads `DefinitionS3Location` and
  CloudFormation fills `DefinitionSubstitutions` into the text. Emulators do neither, so each
  definition is rendered here by the same renderer (src/local/asl.py) into a
  `DefinitionString` whose placeholders are the template's own expressions (`Fn::Join` of the
  text around each placeholder and the substitution's `Ref`/`GetAtt`), which the emulator
  resolves as CloudFormation would.
* Resource types the emulator does not implement are left out (`EMULATOR_UNSUPPORTED`, each
  with what it would do on AWS), and properties moto's CloudFormation ignores on the resources
  the service uses are applied with the API afterwards (`_apply_ignored_properties`): tables'
  TTL, the bucket's public access block, encryption and lifecycle.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from src.infrastructure.aws.template import TEMPLATE_PATH, load_template, resources_of_type
from src.local.asl import Text, segments

STACK_SUFFIX = "export-service"

# Resource types moto's CloudFormation does not implement, and what they do on AWS. A test
# deploys the template and checks that exactly these were left out.
EMULATOR_UNSUPPORTED: dict[str, str] = {
    "AWS::S3::BucketPolicy": "denies requests without TLS",
    "AWS::ApplicationAutoScaling::ScalableTarget": "the ECS service's task count range",
    "AWS::ApplicationAutoScaling::ScalingPolicy": "target tracking on backlog per task",
    "AWS::CloudWatch::Alarm": "alarms: DLQs, oldest message, executions, answer failures",
    "AWS::Logs::MetricFilter": "answer counts from the service's logs, for the alarm",
}


class DeployError(RuntimeError):
    """The stack did not reach CREATE_COMPLETE / UPDATE_COMPLETE."""


@dataclass(frozen=True)
class Deployed:
    stack_name: str
    outputs: dict[str, str]
    skipped: dict[str, str]  # logical id -> resource type left out


def stack_name(name_prefix: str) -> str:
    return f"{name_prefix}{STACK_SUFFIX}"


def emulator_template(
    template: dict[str, Any] | None = None, template_path: Path | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The template as the emulator can deploy it, and the resources left out."""
    template_path = template_path or TEMPLATE_PATH
    template = copy.deepcopy(template if template is not None else load_template(template_path))
    resources: dict[str, Any] = template["Resources"]
    skipped = {
        logical_id: resource["Type"]
        for logical_id, resource in resources.items()
        if resource["Type"] in EMULATOR_UNSUPPORTED
    }
    for logical_id in skipped:
        del resources[logical_id]
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if depends is not None:
            depends = [depends] if isinstance(depends, str) else depends
            kept = [name for name in depends if name not in skipped]
            if kept:
                resource["DependsOn"] = kept
            else:
                del resource["DependsOn"]
    template["Outputs"] = {
        key: output
        for key, output in template.get("Outputs", {}).items()
        if not _refers_to(output, set(skipped))
    }
    for resource in resources_of_type(template, "AWS::StepFunctions::StateMachine").values():
        _inline_definition(resource["Properties"], template_path.parent)
    return template, skipped


def _refers_to(value: Any, names: set[str]) -> bool:
    if isinstance(value, dict):
        if value.get("Ref") in names:
            return True
        get_att = value.get("Fn::GetAtt")
        if isinstance(get_att, list) and get_att and get_att[0] in names:
            return True
        return any(_refers_to(item, names) for item in value.values())
    if isinstance(value, list):
        return any(_refers_to(item, names) for item in value)
    return False


def _inline_definition(properties: dict[str, Any], base: Path) -> None:
    """DefinitionS3Location + DefinitionSubstitutions -> DefinitionString (Fn::Join)."""
    location = properties.pop("DefinitionS3Location")
    if not isinstance(location, str):
        raise DeployError(f"DefinitionS3Location must be a local path, not {location!r}")
    substitutions: Mapping[str, Any] = properties.pop("DefinitionSubstitutions", {})
    text = (base / location).resolve().read_text(encoding="utf-8")
    parts: list[Any] = []
    for segment in segments(text):
        if isinstance(segment, Text):
            parts.append(segment.value)
        else:
            if segment.name not in substitutions:
                raise DeployError(f"{location}: no DefinitionSubstitutions for ${{{segment.name}}}")
            parts.append(substitutions[segment.name])
    properties["DefinitionString"] = {"Fn::Join": ["", parts]}


def deploy(
    cloudformation: Any,
    name_prefix: str = "",
    parameters: Mapping[str, str | int] | None = None,
    *,
    template_path: Path | None = None,
    timeout_seconds: float = 120,
) -> Deployed:
    """Create the stack, or update it when it exists (idempotent)."""
    template, skipped = emulator_template(template_path=template_path)
    name = stack_name(name_prefix)
    values = {"NamePrefix": name_prefix, **(parameters or {})}
    request = {
        "StackName": name,
        "TemplateBody": json.dumps(template),
        "Parameters": [
            {"ParameterKey": key, "ParameterValue": str(value)} for key, value in values.items()
        ],
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
    }
    try:
        status = cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
    except ClientError:
        status = None  # no such stack
    if status == "ROLLBACK_COMPLETE":  # a failed first create: it can only be deleted
        cloudformation.delete_stack(StackName=name)
        cloudformation.get_waiter("stack_delete_complete").wait(
            StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": int(timeout_seconds)}
        )
    try:
        cloudformation.create_stack(**request)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise
        try:
            cloudformation.update_stack(**request)
        except ClientError as update_err:
            if "No updates are to be performed" not in str(update_err):
                raise
    stack = _wait(cloudformation, name, timeout_seconds)
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
    return Deployed(stack_name=name, outputs=outputs, skipped=skipped)


def _wait(cloudformation: Any, name: str, timeout_seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            return dict(stack)
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            reason = stack.get("StackStatusReason", "")
            raise DeployError(f"stack {name} ended {status} {reason}".strip())
        time.sleep(0.2)


def apply_ignored_properties(
    template: dict[str, Any],
    name_of: Mapping[str, str],
    parameters: Mapping[str, str],
    dynamodb: Any,
    s3: Any,
) -> None:
    """Apply what moto's CloudFormation ignores on the resources the service uses.

    `name_of` maps a logical id to the physical name the stack gave it; `parameters` are the
    stack's parameter values (a `Ref` to one is resolved)."""

    def value(item: Any) -> Any:
        if isinstance(item, dict) and set(item) == {"Ref"} and item["Ref"] in parameters:
            return parameters[item["Ref"]]
        if isinstance(item, dict):
            return {key: value(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [value(inner) for inner in item]
        return item

    for logical_id, table in resources_of_type(template, "AWS::DynamoDB::Table").items():
        ttl = table["Properties"].get("TimeToLiveSpecification")
        if not ttl or not ttl.get("Enabled"):
            continue
        name = name_of[logical_id]
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
    for logical_id, bucket in resources_of_type(template, "AWS::S3::Bucket").items():
        properties = bucket["Properties"]
        name = name_of[logical_id]
        if "PublicAccessBlockConfiguration" in properties:
            s3.put_public_access_block(
                Bucket=name,
                PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"],
            )
        encryption = properties.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration")
        if encryption:
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": rule[
                                "ServerSideEncryptionByDefault"
                            ]
                        }
                        for rule in encryption
                    ]
                },
            )
        lifecycle = value(properties.get("LifecycleConfiguration", {})).get("Rules")
        if lifecycle:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name,
                LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in lifecycle]},
            )


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in PutBucketLifecycleConfiguration's terms."""
    converted: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    abort = rule.get("AbortIncompleteMultipartUpload")
    if abort:
        converted["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(abort["DaysAfterInitiation"])
        }
    return converted
