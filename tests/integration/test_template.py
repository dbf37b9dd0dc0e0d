"""infra/template.yaml: deployed on the emulator it creates everything the service needs;
what the emulator cannot create is exactly the listed types; its roles are least privilege."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from src.infrastructure.aws.template import load_template, resources_of_type
from src.infrastructure.config.settings import REQUIRED_TO_SERVE
from src.local import template_deploy
from src.local.provision import Resources
from src.local.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template()
REGION = "us-east-1"
# Where AWS accepts no narrower resource, each with why (see the template's comments).
WILDCARD_RESOURCE_ACTIONS = {
    "states:SendTaskSuccess",  # acts on a task token, not an ARN
    "states:SendTaskFailure",
    "states:SendTaskHeartbeat",
    "ecr:GetAuthorizationToken",  # no resource type (execution role only)
}


def client(stack: EmbeddedStack, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=stack.aws.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def deployed(embedded_stack: EmbeddedStack) -> Resources:
    return embedded_stack.provision(f"tpl-{uuid.uuid4().hex[:6]}-")


def test_the_deployed_stack_has_every_queue_table_bucket_topic_and_state_machine(
    embedded_stack: EmbeddedStack, deployed: Resources
) -> None:
    sqs, ddb = client(embedded_stack, "sqs"), client(embedded_stack, "dynamodb")
    for url, dlq_url, receives in (
        (deployed.export_jobs_url, deployed.export_jobs_dlq_url, 5),
        (deployed.download_tasks_url, deployed.download_tasks_dlq_url, 10),
    ):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        assert json.loads(attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": receives,
        }
        assert attributes["VisibilityTimeout"] == "60"

    wanted = {
        spec["Properties"]["TableName"]["Fn::Sub"].replace("${NamePrefix}", ""): spec
        for spec in resources_of_type(TEMPLATE, "AWS::DynamoDB::Table").values()
    }
    for table in (deployed.table_name, deployed.tasks_table_name):
        spec = wanted[table.split("-", 2)[2]]["Properties"]
        described = ddb.describe_table(TableName=table)["Table"]
        assert described["KeySchema"] == spec["KeySchema"]
        indexes = {i["IndexName"]: i for i in described.get("GlobalSecondaryIndexes", [])}
        assert sorted(indexes) == sorted(
            i["IndexName"] for i in spec.get("GlobalSecondaryIndexes", [])
        )
        for index in spec.get("GlobalSecondaryIndexes", []):
            assert indexes[index["IndexName"]]["KeySchema"] == index["KeySchema"]
            assert indexes[index["IndexName"]]["Projection"] == index["Projection"]
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")

    s3 = client(embedded_stack, "s3")
    rules = s3.get_bucket_lifecycle_configuration(Bucket=deployed.bucket)["Rules"]
    assert {(r["ID"], r["Filter"].get("Prefix")) for r in rules} == {
        ("expire-exports", "exports/"),
        ("abort-incomplete-multipart-uploads", ""),
    }
    block = s3.get_public_access_block(Bucket=deployed.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    encryption = s3.get_bucket_encryption(Bucket=deployed.bucket)
    assert encryption["ServerSideEncryptionConfiguration"]["Rules"]

    topics = client(embedded_stack, "sns").list_topics()["Topics"]
    assert {"TopicArn": deployed.notification_topic_arn} in topics

    sfn = client(embedded_stack, "stepfunctions")
    for arn in (deployed.state_machine_arn, deployed.batch_state_machine_arn):
        definition = sfn.describe_state_machine(stateMachineArn=arn)["definition"]
        assert "${" not in definition
        json.loads(definition)
    export_job = sfn.describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    assert deployed.export_jobs_url in export_job["definition"]


def test_only_the_listed_types_are_left_out_and_the_ecs_service_is_wired_from_the_stack(
    embedded_stack: EmbeddedStack,
) -> None:
    prefix = f"ecs-{uuid.uuid4().hex[:6]}-"
    cloudformation = client(embedded_stack, "cloudformation")
    deployed = template_deploy.deploy(
        cloudformation,
        prefix,
        {
            "ContainerImage": "export-service:test",
            "SubnetIds": "subnet-0123456789abcdef0",
            "SecurityGroupIds": "sg-0123456789abcdef0",
            "AdminApiKeysSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k",
        },
    )
    created = {
        r["LogicalResourceId"]: r["ResourceType"]
        for r in cloudformation.list_stack_resources(StackName=deployed.stack_name)[
            "StackResourceSummaries"
        ]
    }
    every = {logical_id: r["Type"] for logical_id, r in TEMPLATE["Resources"].items()}

    left_out = {logical_id: kind for logical_id, kind in every.items() if logical_id not in created}
    assert set(left_out.values()) == set(template_deploy.EMULATOR_UNSUPPORTED)
    assert left_out == deployed.skipped

    ecs = client(embedded_stack, "ecs")
    cluster = deployed.outputs["ClusterName"]
    services = ecs.describe_services(cluster=cluster, services=[f"{prefix}export-service"])
    (service,) = services["services"]
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
    (container,) = definition["taskDefinition"]["containerDefinitions"]
    environment = {item["name"]: item["value"] for item in container["environment"]}
    assert environment["SQS_EXPORT_JOBS_URL"] == deployed.outputs["ExportJobsQueueUrl"]
    assert environment["SQS_DOWNLOAD_TASKS_URL"] == deployed.outputs["DownloadTasksQueueUrl"]
    assert environment["DYNAMODB_TABLE_NAME"] == deployed.outputs["JobTableName"]
    assert environment["DYNAMODB_TASKS_TABLE_NAME"] == deployed.outputs["TasksTableName"]
    assert environment["S3_BUCKET_NAME"] == deployed.outputs["BucketName"]
    assert [s["name"] for s in container["secrets"]] == ["ADMIN_API_KEYS"]


def test_the_task_definition_sets_every_required_setting_from_the_templates_resources() -> None:
    (task,) = resources_of_type(TEMPLATE, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    for setting in (*REQUIRED_TO_SERVE, "dynamodb_table_name", "dynamodb_tasks_table_name"):
        value = environment[setting.upper()]
        assert value.get("Ref") in TEMPLATE["Resources"], setting


def test_the_stop_timeout_covers_the_longest_grace_the_template_allows() -> None:
    # The service exits within SHUTDOWN_GRACE_SECONDS of SIGTERM, its hand-back included
    # (src/processing/service.py); ECS kills it StopTimeout after SIGTERM.
    (task,) = resources_of_type(TEMPLATE, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    grace = TEMPLATE["Parameters"]["ShutdownGraceSeconds"]
    exit_margin = 20
    assert container["StopTimeout"] >= grace["MaxValue"] + exit_margin
    assert container["StopTimeout"] <= 120  # Fargate's maximum
    assert {"Name": "SHUTDOWN_GRACE_SECONDS", "Value": {"Ref": "ShutdownGraceSeconds"}} in (
        container["Environment"]
    )


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if isinstance(statement, dict) and "Fn::If" in statement:
                statement = statement["Fn::If"][1]  # the statement when its condition holds
            found.append(statement)
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_role_has_a_wildcard_action_or_resource_except_where_aws_requires_it() -> None:
    roles = resources_of_type(TEMPLATE, "AWS::IAM::Role")
    assert {"ServiceTaskRole", "ExportJobStateMachineRole", "BatchExportStateMachineRole"} <= set(
        roles
    )
    for logical_id, role in roles.items():
        for statement in _statements(role):
            actions = _listed(statement["Action"])
            assert not [a for a in actions if a == "*" or a.endswith(":*")], logical_id
            if "*" in _listed(statement["Resource"]):
                assert set(actions) <= WILDCARD_RESOURCE_ACTIONS, (logical_id, actions)
    service_wildcards = [
        statement
        for statement in _statements(roles["ServiceTaskRole"])
        if "*" in _listed(statement["Resource"])
    ]
    assert [sorted(s["Action"]) for s in service_wildcards] == [
        ["states:SendTaskFailure", "states:SendTaskHeartbeat", "states:SendTaskSuccess"]
    ]


def test_every_trust_policy_names_the_source_account() -> None:
    for logical_id, role in resources_of_type(TEMPLATE, "AWS::IAM::Role").items():
        for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            condition = statement.get("Condition", {}).get("StringEquals", {})
            assert condition.get("aws:SourceAccount") == {"Ref": "AWS::AccountId"}, logical_id


# IAM actions authorised by a call named otherwise (S3's multipart calls are PutObject's).
_CALLS_OF = {
    "s3:ListMultipartUploadParts": ["list_parts"],
    "s3:PutObject": ["put_object", "upload_part", "create_multipart_upload"],
}


def test_the_service_role_grants_only_actions_the_code_calls() -> None:
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for path in (ROOT / "src").rglob("*.py")
        if "local" not in path.relative_to(ROOT / "src").parts
    )
    role = resources_of_type(TEMPLATE, "AWS::IAM::Role")["ServiceTaskRole"]
    unused = []
    for statement in _statements(role):
        for action in _listed(statement["Action"]):
            operation = action.split(":", 1)[1]
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
            calls = _CALLS_OF.get(action, [snake])
            if not any(re.search(rf"\.{call}\b", code) for call in calls):
                unused.append(action)
    assert unused == []


def test_every_log_metric_filter_matches_a_line_the_service_writes() -> None:
    code = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "src").rglob("*.py"))
    filters = resources_of_type(TEMPLATE, "AWS::Logs::MetricFilter")
    assert filters
    for logical_id, metric_filter in filters.items():
        (event,) = re.findall(
            r'\$\.event = "([^"]+)"', metric_filter["Properties"]["FilterPattern"]
        )
        assert re.search(rf'log\.\w+\(\s*"{re.escape(event)}"', code), (logical_id, event)
