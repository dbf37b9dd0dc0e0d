"""TableMigration on the emulator: cases the end-to-end swap test does not reach (a
PROVISIONED original table, an index still being built, the created table's PITR)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from src.infrastructure.aws.template import TableSpec, load_template, table_specs
from src.infrastructure.dynamodb.migration import TableMigration
from src.local.stack import EmbeddedStack
from tests.integration.conftest import REGION, service_client, sync_client

SPECS = {spec.logical_id: spec for spec in table_specs(load_template())}


def _named(prefix: str) -> list[TableSpec]:
    return [
        replace(SPECS["JobTable"], name=f"{prefix}export-job-state"),
        replace(SPECS["TasksTable"], name=f"{prefix}export-job-tasks"),
    ]


def _original_table(ddb: Any, name: str, **capacity: Any) -> None:
    """The original's job table: its key and its two indexes, nothing else."""
    indexes = []
    for index in ("status-index", "userId-index"):
        spec: dict[str, Any] = {
            "IndexName": index,
            "KeySchema": [
                {"AttributeName": index.split("-")[0], "KeyType": "HASH"},
                {"AttributeName": "createdAt", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
        if capacity:
            spec["ProvisionedThroughput"] = capacity["ProvisionedThroughput"]
        indexes.append(spec)
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "jobId", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": a, "AttributeType": "S"}
            for a in ("jobId", "status", "userId", "createdAt")
        ],
        GlobalSecondaryIndexes=indexes,
        **(capacity if capacity else {"BillingMode": "PAY_PER_REQUEST"}),
    )


def _gsi(stack: EmbeddedStack, table: str, index: str) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    found = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables[table].global_indexes
    return next(gsi for gsi in found if gsi.name == index)


async def test_a_provisioned_table_gets_indexes_with_its_own_capacity(
    embedded_stack: EmbeddedStack,
) -> None:
    prefix = f"mig-prov-{uuid.uuid4().hex[:6]}-"
    ddb = sync_client(embedded_stack, "dynamodb")
    capacity = {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3}
    _original_table(ddb, f"{prefix}export-job-state", ProvisionedThroughput=capacity)

    async with service_client(embedded_stack, "dynamodb") as client:
        steps = await TableMigration(client, _named(prefix), poll_seconds=0.05).apply()

    assert [s.state for s in steps if s.what.startswith("index due-index")] == ["created"]
    table = ddb.describe_table(TableName=f"{prefix}export-job-state")["Table"]
    due = next(i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == "due-index")
    throughput = due["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (7, 3)


async def test_an_index_still_being_built_is_pending_and_waited_for(
    embedded_stack: EmbeddedStack,
) -> None:
    prefix = f"mig-pend-{uuid.uuid4().hex[:6]}-"
    ddb = sync_client(embedded_stack, "dynamodb")
    _original_table(ddb, f"{prefix}export-job-state")
    gsi = _gsi(embedded_stack, f"{prefix}export-job-state", "userId-index")
    gsi.status = "CREATING"  # as DynamoDB shows an index backfilling

    async with service_client(embedded_stack, "dynamodb") as client:
        migration = TableMigration(client, _named(prefix), poll_seconds=0.05, wait_seconds=30)
        checked = await migration.check()
        pending = [s for s in checked if s.state == "pending"]
        assert [s.what for s in pending] == [f"index userId-index on {prefix}export-job-state"]

        async def finish_backfill() -> None:
            await asyncio.sleep(0.5)
            gsi.status = "ACTIVE"

        finishing = asyncio.create_task(finish_backfill())
        applied = await migration.apply()
        await finishing

    assert not [s for s in applied if s.state == "pending"]
    assert gsi.status == "ACTIVE"
    table = ddb.describe_table(TableName=f"{prefix}export-job-state")["Table"]
    assert len(table["GlobalSecondaryIndexes"]) == 5


async def test_a_created_table_has_point_in_time_recovery_as_the_template_says(
    embedded_stack: EmbeddedStack,
) -> None:
    prefix = f"mig-pitr-{uuid.uuid4().hex[:6]}-"
    ddb = sync_client(embedded_stack, "dynamodb")
    _original_table(ddb, f"{prefix}export-job-state")

    async with service_client(embedded_stack, "dynamodb") as client:
        await TableMigration(client, _named(prefix), poll_seconds=0.05).apply()

    backups = ddb.describe_continuous_backups(TableName=f"{prefix}export-job-tasks")
    recovery = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert recovery["PointInTimeRecoveryStatus"] == "ENABLED"
