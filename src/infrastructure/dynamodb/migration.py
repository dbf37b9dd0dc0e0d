"""`export-service migrate`: bring the original service's tables to this one's schema.

The original (NestJS) service created the job table with its key and two indexes
(`status-index`, `userId-index`). This service also uses a tasks table, three sparse indexes
on the job table and TTL. Migration reads what is wanted from infra/template.yaml (the one
definition) and creates what is missing, idempotently; `check` only lists it.

On DynamoDB an UpdateTable creates one global secondary index at a time, and the next may
only start once the table is ACTIVE again: indexes are created one by one, each waited for
(backfilling an index of a large table can take minutes; nothing stops serving meanwhile,
the old service keeps working on the table, and this service only reads an index once it
is ACTIVE because its deploy comes after the migration).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from src.infrastructure.aws.template import TableSpec

State = Literal["ok", "missing", "pending", "created", "conflict"]
# States that leave the schema incomplete: `check` exits 1 on any of them.
INCOMPLETE: frozenset[str] = frozenset({"missing", "pending", "conflict"})


@dataclass(frozen=True)
class Step:
    """One thing the schema needs, and where it stands."""

    state: State
    what: str  # "table export-job-tasks", "index due-index on export-job-state", ...
    detail: str = ""

    def line(self) -> str:
        return f"{self.state:<8} {self.what}" + (f": {self.detail}" if self.detail else "")


class MigrationError(RuntimeError):
    """A table or index exists in a shape this service cannot use; nothing is changed."""


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _key_text(schema: list[dict[str, str]]) -> str:
    return ", ".join(f"{key['AttributeName']} {key['KeyType']}" for key in schema)


class TableMigration:
    """Creates missing tables, global secondary indexes and TTL, one step at a time."""

    def __init__(
        self,
        client: Any,
        specs: list[TableSpec],
        *,
        wait_seconds: float = 1800,
        poll_seconds: float = 5,
    ) -> None:
        self._client = client
        self._specs = specs
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds

    async def check(self) -> list[Step]:
        """What is there and what is missing; changes nothing."""
        steps: list[Step] = []
        for spec in self._specs:
            steps.extend(await self._table(spec, apply=False))
        return steps

    async def apply(self) -> list[Step]:
        """Create what is missing; a conflict stops before anything is changed."""
        planned = await self.check()
        conflicts = [step for step in planned if step.state == "conflict"]
        if conflicts:
            raise MigrationError("; ".join(step.line() for step in conflicts))
        steps: list[Step] = []
        for spec in self._specs:
            steps.extend(await self._table(spec, apply=True))
        return steps

    async def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            described = await self._client.describe_table(TableName=name)
        except ClientError as err:
            if _error_code(err) == "ResourceNotFoundException":
                return None
            raise
        return dict(described["Table"])

    async def _table(self, spec: TableSpec, *, apply: bool) -> list[Step]:
        what = f"table {spec.name}"
        table = await self._describe(spec.name)
        if table is None:
            if not apply:
                return [Step("missing", what, "with its indexes and TTL")]
            await self._create_table(spec)
            steps = [Step("created", what, f"{len(spec.global_secondary_indexes)} index(es)")]
            return steps + await self._ttl(spec, apply=True)
        if table["KeySchema"] != spec.key_schema:
            return [
                Step(
                    "conflict",
                    what,
                    f"key is {_key_text(table['KeySchema'])}, "
                    f"this service needs {_key_text(spec.key_schema)}",
                )
            ]
        steps = [Step("ok", what)]
        existing = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
        for index in spec.global_secondary_indexes:
            steps.append(await self._index(spec, index, existing.get(index["IndexName"]), apply))
        return steps + await self._ttl(spec, apply=apply)

    async def _index(
        self, spec: TableSpec, wanted: dict[str, Any], found: dict[str, Any] | None, apply: bool
    ) -> Step:
        what = f"index {wanted['IndexName']} on {spec.name}"
        if found is not None:
            if found["KeySchema"] != wanted["KeySchema"]:
                return Step(
                    "conflict",
                    what,
                    f"key is {_key_text(found['KeySchema'])}, "
                    f"this service needs {_key_text(wanted['KeySchema'])}",
                )
            found_projection = found.get("Projection", {}).get("ProjectionType")
            wanted_projection = wanted["Projection"]["ProjectionType"]
            if found_projection != wanted_projection and wanted_projection == "ALL":
                return Step(
                    "conflict",
                    what,
                    f"projects {found_projection}, this service reads ALL attributes from it",
                )
            status = found.get("IndexStatus", "ACTIVE")
            if status != "ACTIVE":
                if not apply:
                    return Step("pending", what, f"{status.lower()}: not usable until ACTIVE")
                await self._wait_active(spec.name, wanted["IndexName"])
            return Step("ok", what)
        if not apply:
            return Step("missing", what, _key_text(wanted["KeySchema"]))
        keys = [key["AttributeName"] for key in wanted["KeySchema"]]
        request = _index_request(wanted)
        throughput = await self._provisioned_throughput(spec.name)
        if throughput is not None:  # a PROVISIONED table: its indexes need capacity too
            request["ProvisionedThroughput"] = throughput
        # One index build at a time per table: wait for any other still being built.
        await self._wait_active(spec.name)
        await self._client.update_table(
            TableName=spec.name,
            AttributeDefinitions=[spec.attribute_definition(key) for key in keys],
            GlobalSecondaryIndexUpdates=[{"Create": request}],
        )
        await self._wait_active(spec.name, wanted["IndexName"])
        return Step("created", what, _key_text(wanted["KeySchema"]))

    async def _ttl(self, spec: TableSpec, *, apply: bool) -> list[Step]:
        if spec.ttl_attribute is None:
            return []
        what = f"TTL on {spec.name}.{spec.ttl_attribute}"
        described = await self._client.describe_time_to_live(TableName=spec.name)
        ttl = described.get("TimeToLiveDescription", {})
        status = ttl.get("TimeToLiveStatus", "DISABLED")
        if status in ("ENABLED", "ENABLING"):
            if ttl.get("AttributeName") != spec.ttl_attribute:
                return [Step("conflict", what, f"TTL is on {ttl.get('AttributeName')}")]
            return [Step("ok", what)]
        if not apply:
            return [Step("missing", what, "items whose ttl has passed will then be deleted")]
        await self._client.update_time_to_live(
            TableName=spec.name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )
        return [Step("created", what)]

    async def _provisioned_throughput(self, table: str) -> dict[str, int] | None:
        """The table's own read and write capacity when it is PROVISIONED, else None."""
        described = await self._describe(table) or {}
        mode = described.get("BillingModeSummary", {}).get("BillingMode")
        throughput = described.get("ProvisionedThroughput", {})
        if mode == "PAY_PER_REQUEST" or not throughput.get("ReadCapacityUnits"):
            return None
        return {
            "ReadCapacityUnits": int(throughput["ReadCapacityUnits"]),
            "WriteCapacityUnits": int(throughput["WriteCapacityUnits"]),
        }

    async def _create_table(self, spec: TableSpec) -> None:
        request: dict[str, Any] = {
            "TableName": spec.name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": spec.key_schema,
            "AttributeDefinitions": spec.attribute_definitions,
        }
        if spec.global_secondary_indexes:
            request["GlobalSecondaryIndexes"] = [
                _index_request(index) for index in spec.global_secondary_indexes
            ]
        try:
            await self._client.create_table(**request)
        except ClientError as err:  # created meanwhile (two migrations at once)
            if _error_code(err) != "ResourceInUseException":
                raise
        await self._wait_active(spec.name)
        if spec.point_in_time_recovery:
            await self._client.update_continuous_backups(
                TableName=spec.name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )

    async def _wait_active(self, table: str, index: str | None = None) -> None:
        deadline = time.monotonic() + self._wait_seconds
        while True:
            described = await self._describe(table)
            if described is not None and described.get("TableStatus") == "ACTIVE":
                statuses = {
                    i["IndexName"]: i.get("IndexStatus", "ACTIVE")
                    for i in described.get("GlobalSecondaryIndexes", [])
                }
                waiting = [statuses.get(index)] if index else list(statuses.values())
                if all(status == "ACTIVE" for status in waiting):
                    return
            if time.monotonic() > deadline:
                what = f"index {index} on {table}" if index else f"table {table}"
                raise MigrationError(f"{what} not ACTIVE after {self._wait_seconds:g}s")
            await asyncio.sleep(self._poll_seconds)


def _index_request(index: dict[str, Any]) -> dict[str, Any]:
    return {
        "IndexName": index["IndexName"],
        "KeySchema": index["KeySchema"],
        "Projection": index["Projection"],
    }
