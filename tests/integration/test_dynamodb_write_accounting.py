"""The embedded emulator bills DynamoDB writes per caller as AWS would (item sizes, write
units, transactions twice, secondary indexes): what the bench's bytes-per-file figures
are made of."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from src.local.dynamodb_writes import number_size
from src.local.provision import STATUS_INDEX, USER_ID_INDEX, Resources
from src.local.stack import EmbeddedStack
from tests.integration.conftest import REGION, provision_for

KIB = 1024


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "writes")


@pytest.fixture
def caller() -> str:
    """An access key of this test alone: nothing else's writes are counted with it."""
    return f"w{uuid.uuid4().hex[:12]}"


def ddb(stack: EmbeddedStack, caller: str) -> Any:
    return boto3.client(
        "dynamodb", endpoint_url=stack.aws.endpoint_url, region_name=REGION,
        aws_access_key_id=caller, aws_secret_access_key=caller,
    )  # fmt: skip


def task_item(job: str, task: str, size: int) -> dict[str, Any]:
    """A tasks-table item of exactly `size` bytes by DynamoDB's rules."""
    fixed = len("jobId") + len(job) + len("taskId") + len(task) + len("n") + 2 + len("blob")
    return {
        "jobId": {"S": job}, "taskId": {"S": task}, "n": {"N": "1"},
        "blob": {"S": "x" * (size - fixed)},
    }  # fmt: skip


def add_one(table: str, job: str, task: str) -> dict[str, Any]:
    """ADD n 1: the item keeps its size (n 1 -> 2)."""
    return {
        "TableName": table, "Key": {"jobId": {"S": job}, "taskId": {"S": task}},
        "UpdateExpression": "ADD n :one", "ExpressionAttributeValues": {":one": {"N": "1"}},
    }  # fmt: skip


def test_item_sizes_units_and_transactions_are_billed_as_aws_does(
    embedded_stack: EmbeddedStack, resources: Resources, caller: str
) -> None:
    client, table, job = ddb(embedded_stack, caller), resources.tasks_table_name, str(uuid.uuid4())
    writes = lambda: embedded_stack.aws.writes_by(caller)[table]  # noqa: E731
    unaccounted = embedded_stack.aws.writes_unaccounted

    client.put_item(TableName=table, Item=task_item(job, "small", KIB))
    assert writes() == {"items": 1, "bytes": KIB, "write_units": 1, "failed": 0}

    client.put_item(TableName=table, Item=task_item(job, "big", 100 * KIB))
    assert writes()["write_units"] == 1 + 100

    # One small attribute of a 100 KiB item: the whole item is billed, not the change.
    client.update_item(**add_one(table, job, "big"))
    assert writes() == {"items": 3, "bytes": 201 * KIB, "write_units": 201, "failed": 0}

    # A transaction: twice the units; its ConditionCheck is a read, not billed here.
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": task_item(job, "other", KIB)}},
            {"Update": add_one(table, job, "big")},
            {"ConditionCheck": {"TableName": table,
                                "Key": {"jobId": {"S": job}, "taskId": {"S": "small"}},
                                "ConditionExpression": "attribute_exists(n)"}},
        ]
    )  # fmt: skip
    assert writes() == {"items": 5, "bytes": 302 * KIB, "write_units": 201 + 2 + 200, "failed": 0}

    # A failed condition is billed at the existing item's size; a delete at the item's.
    with pytest.raises(ClientError):
        client.put_item(
            TableName=table,
            Item=task_item(job, "small", 2 * KIB),
            ConditionExpression="attribute_not_exists(n)",
        )
    client.delete_item(TableName=table, Key={"jobId": {"S": job}, "taskId": {"S": "big"}})
    assert writes() == {"items": 7, "bytes": 403 * KIB, "write_units": 403 + 1 + 100, "failed": 1}

    assert embedded_stack.aws.writes_unaccounted == unaccounted  # every request looked up
    embedded_stack.aws.reset_calls()
    assert embedded_stack.aws.writes_by(caller) == {}


def test_a_write_to_an_item_in_all_projection_indexes_is_billed_per_index(
    embedded_stack: EmbeddedStack, resources: Resources, caller: str
) -> None:
    client, table, job = ddb(embedded_stack, caller), resources.table_name, str(uuid.uuid4())
    item = {
        "jobId": {"S": job}, "status": {"S": "PENDING"}, "userId": {"S": "u"},
        "createdAt": {"S": "2026-01-01T00:00:00.000Z"}, "metadata": {"S": "m" * 10 * KIB},
    }  # fmt: skip
    client.put_item(TableName=table, Item=item)
    client.update_item(
        TableName=table,
        Key={"jobId": {"S": job}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "RUNNING"}},
    )
    billed = embedded_stack.aws.writes_by(caller)
    units = {name: figures["write_units"] for name, figures in billed.items()}
    # The put: one entry in each index. The update: status-index's key changed (a delete
    # and a put), userId-index's projection changed (one write). 11 units each.
    assert units == {table: 22, f"{table}/{STATUS_INDEX}": 33, f"{table}/{USER_ID_INDEX}": 22}


def test_number_sizes_follow_significant_digits() -> None:
    assert [number_size(n) for n in ("0", "7", "12", "123", "-1.50", "1000", "1E+30")] == [
        2, 2, 2, 3, 2, 2, 2,
    ]  # fmt: skip
