"""DynamoDbJobRepository: jobs in the `export-job-state` table, every write conditional."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from src.application.ports.job_repository import AttachOutcome, ConditionFailed
from src.domain.export_job import ExportJob
from src.domain.job_status import TERMINAL, JobStatus
from src.domain.task_token import TaskToken
from src.domain.time import iso_ms
from src.infrastructure.dynamodb import job_mapping, job_tokens
from src.infrastructure.dynamodb.codec import from_item, to_attr
from src.infrastructure.dynamodb.errors import is_condition_failure, lost_race


class DynamoDbJobRepository:  # implements JobRepository
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def create(self, job: ExportJob) -> bool:
        item = {k: to_attr(v) for k, v in job_mapping.to_item(job).items() if v is not None}
        try:
            await self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(jobId)",
            )
        except ClientError as err:
            if lost_race(err):
                return False  # another replica has it (or will, next round)
            raise
        return True

    async def get(self, job_id: str) -> ExportJob | None:
        response = await self._client.get_item(
            TableName=self._table, Key={"jobId": {"S": job_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return job_mapping.from_item(from_item(item)) if item else None

    async def save(self, job: ExportJob) -> ExportJob:
        """UpdateItem (not PutItem) so attributes other writers own survive."""
        saved = replace(job, version=job.version + 1)
        values = job_mapping.to_item(saved)
        del values["jobId"]
        names: dict[str, str] = {"#v": "version", "#st": "status"}
        attrs: dict[str, Any] = {
            ":expected": {"N": str(job.version)},
            ":same": {"S": job.status.value},
            **{f":t{i}": {"S": s.value} for i, s in enumerate(TERMINAL)},
        }
        sets, removes = [], []
        for i, (name, value) in enumerate(values.items()):
            names[f"#a{i}"] = name
            if value is None:
                removes.append(f"#a{i}")
            else:
                sets.append(f"#a{i} = :a{i}")
                attrs[f":a{i}"] = to_attr(value)
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            await self._client.update_item(
                TableName=self._table,
                Key={"jobId": {"S": job.job_id}},
                UpdateExpression=expression,
                ConditionExpression=self._save_condition(job),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attrs,
            )
        except ClientError as err:
            if is_condition_failure(err):
                raise ConditionFailed(job.job_id) from err
            raise
        return saved

    async def attach_workflow(
        self, job_id: str, token: TaskToken, max_waiting: int
    ) -> AttachOutcome:
        return await job_tokens.attach(self._client, self._table, job_id, token, max_waiting)

    async def mark_answered(self, job_id: str, digests: Iterable[str]) -> None:
        await job_tokens.add_digests(
            self._client, self._table, job_id, job_tokens.ANSWERED_TOKENS, digests
        )

    async def stop_heartbeats(self, job_id: str, digests: Iterable[str]) -> None:
        await job_tokens.add_digests(
            self._client, self._table, job_id, job_tokens.HEARTBEAT_STOPPED, digests
        )

    @staticmethod
    def _save_condition(job: ExportJob) -> str:
        # Items written by the original service have no version yet; and whatever the
        # version says, a finished job never changes into another status.
        version = (
            "#v = :expected" if job.version else "(attribute_not_exists(#v) OR #v = :expected)"
        )
        terminal = ", ".join(f":t{i}" for i in range(len(TERMINAL)))
        return f"attribute_exists(jobId) AND {version} AND (NOT #st IN ({terminal}) OR #st = :same)"

    async def claim_due_for_polling(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[ExportJob]:
        claimed: list[ExportJob] = []
        for job in await self._due(now, limit):
            try:
                claimed.append(await self.save(job.claimed_for_polling(owner, until)))
            except ConditionFailed:
                continue  # another replica claimed it (or the index was stale)
        return claimed

    async def claim_due_heartbeats(
        self, now: datetime, next_at: datetime, limit: int
    ) -> list[ExportJob]:
        found: list[ExportJob] = []
        for status in (JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING):
            found += await self._query_status(
                status,
                "(attribute_exists(taskToken) OR attribute_exists(waitingTokens)) AND "
                "(attribute_not_exists(nextHeartbeatAt) OR nextHeartbeatAt <= :now)",
                {":now": {"S": iso_ms(now)}},
                limit - len(found),
            )
            if len(found) >= limit:
                break
        claimed = []
        for job in found:
            if await self._move_heartbeat(job, now, next_at):
                claimed.append(job)
        return claimed

    async def _move_heartbeat(self, job: ExportJob, now: datetime, next_at: datetime) -> bool:
        """nextHeartbeatAt is owned by the heartbeat alone: save() never writes it."""
        try:
            await self._client.update_item(
                TableName=self._table,
                Key={"jobId": {"S": job.job_id}},
                UpdateExpression="SET nextHeartbeatAt = :next",
                ConditionExpression="(attribute_not_exists(nextHeartbeatAt) OR "
                "nextHeartbeatAt <= :now) AND #s IN (:p, :po, :d)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":next": {"S": iso_ms(next_at)},
                    ":now": {"S": iso_ms(now)},
                    ":p": {"S": JobStatus.PROCESSING.value},
                    ":po": {"S": JobStatus.POLLING.value},
                    ":d": {"S": JobStatus.DOWNLOADING.value},
                },
            )
        except ClientError as err:
            if lost_race(err):
                return False  # another replica has it (or will, next round)
            raise
        return True

    async def list_owing_callbacks(self, now: datetime, limit: int) -> list[ExportJob]:
        return await self._query(
            "callbackDue-index",
            "callbackDue",
            "DUE",
            "attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now",
            {":now": {"S": iso_ms(now)}},
            limit,
        )

    async def list_stalled(
        self, status: JobStatus, updated_before: datetime, limit: int
    ) -> list[ExportJob]:
        return await self._query_status(
            status, "updatedAt <= :before", {":before": {"S": iso_ms(updated_before)}}, limit
        )

    async def list_overdue(
        self, status: JobStatus, created_before: datetime, limit: int
    ) -> list[ExportJob]:
        return await self._query_status(
            status, "createdAt <= :before", {":before": {"S": iso_ms(created_before)}}, limit
        )

    async def _query_status(
        self, status: JobStatus, condition: str, values: dict[str, Any], limit: int
    ) -> list[ExportJob]:
        return await self._query("status-index", "status", status.value, condition, values, limit)

    async def _query(
        self,
        index: str,
        key: str,
        value: str,
        condition: str,
        values: dict[str, Any],
        limit: int,
    ) -> list[ExportJob]:
        """Jobs whose index `key` is `value` and that match `condition`, from a GSI
        (eventually consistent: the conditional write that follows is what decides)."""
        found: list[ExportJob] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :key",
            "FilterExpression": condition,
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":key": {"S": value}, **values},
        }
        while len(found) < limit:
            response = await self._client.query(**kwargs)
            found += [job_mapping.from_item(from_item(i)) for i in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit]

    async def _due(self, now: datetime, limit: int) -> list[ExportJob]:
        return await self._query_status(
            JobStatus.POLLING,
            # No nextPollAt: left POLLING by the original service (drop-in swap): due now.
            "(attribute_not_exists(nextPollAt) OR nextPollAt <= :now) AND "
            "(attribute_not_exists(leaseExpiresAt) OR leaseExpiresAt <= :now)",
            {":now": {"S": iso_ms(now)}},
            limit,
        )
