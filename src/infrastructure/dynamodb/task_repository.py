"""DynamoDbTaskRepository: per-file records in their own table; results counted once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.job_status import JobStatus
from src.domain.time import iso_ms
from src.domain.upload_checkpoint import UploadCheckpoint
from src.infrastructure.dynamodb import task_mapping
from src.infrastructure.dynamodb.codec import from_item, to_attr
from src.infrastructure.dynamodb.errors import error_code, is_condition_failure

_PUT_CONCURRENCY = 16
_TRANSACTION_ATTEMPTS = 6


class _Contended(Exception):
    """The transaction was cancelled for a reason other than a failed condition."""


class DynamoDbTaskRepository:  # implements TaskRepository
    def __init__(self, client: Any, tasks_table: str, jobs_table: str) -> None:
        self._client = client
        self._tasks = tasks_table
        self._jobs = jobs_table

    async def add_all(self, tasks: Sequence[DownloadTask]) -> list[DownloadTask]:
        gate = asyncio.Semaphore(_PUT_CONCURRENCY)

        async def put(task: DownloadTask) -> DownloadTask:
            async with gate:
                try:
                    await self._client.put_item(
                        TableName=self._tasks,
                        Item=self._attrs(task),
                        ConditionExpression="attribute_not_exists(taskId)",
                        # the existing record, without another read
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                except ClientError as err:
                    if not is_condition_failure(err):
                        raise
                    old: dict[str, Any] | None = err.response.get("Item")  # type: ignore[assignment]
                    return task_mapping.from_item(from_item(old)) if old else task
                return task

        return list(await asyncio.gather(*(put(t) for t in tasks)))

    async def get(self, job_id: str, task_id: str) -> DownloadTask | None:
        response = await self._client.get_item(
            TableName=self._tasks,
            Key={"jobId": {"S": job_id}, "taskId": {"S": task_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return task_mapping.from_item(from_item(item)) if item else None

    async def list_for_job(self, job_id: str) -> list[DownloadTask]:
        kwargs: dict[str, Any] = {
            "TableName": self._tasks,
            "KeyConditionExpression": "jobId = :j",
            "ExpressionAttributeValues": {":j": {"S": job_id}},
            "ConsistentRead": True,
        }
        tasks: list[DownloadTask] = []
        while True:
            response = await self._client.query(**kwargs)
            tasks += [task_mapping.from_item(from_item(i)) for i in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                return tasks
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def claim(
        self, task: DownloadTask, owner: str, until: datetime, now: datetime
    ) -> DownloadTask | None:
        try:
            response = await self._client.update_item(
                TableName=self._tasks,
                Key=self._key(task),
                UpdateExpression="SET #s = :running, leaseOwner = :owner, "
                "leaseExpiresAt = :until ADD attempts :one",
                # The owner may take its own task again (its earlier try was cut short).
                ConditionExpression="#s = :pending OR (#s = :running AND "
                "(leaseExpiresAt <= :now OR leaseOwner = :owner))",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":running": {"S": TaskStatus.RUNNING.value},
                    ":pending": {"S": TaskStatus.PENDING.value},
                    ":owner": {"S": owner},
                    ":until": {"S": iso_ms(until)},
                    ":now": {"S": iso_ms(now)},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if is_condition_failure(err):
                return None
            raise
        return task_mapping.from_item(from_item(response["Attributes"]))

    async def renew(
        self, task: DownloadTask, owner: str, until: datetime, upload: UploadCheckpoint | None
    ) -> bool:
        values: dict[str, Any] = {
            ":until": {"S": iso_ms(until)},
            ":running": {"S": TaskStatus.RUNNING.value},
            ":owner": {"S": owner},
        }
        expression = "SET leaseExpiresAt = :until"
        if upload is not None:
            expression += ", #u = :upload"
            values[":upload"] = to_attr(task_mapping.checkpoint_to_item(upload))
        try:
            await self._client.update_item(
                TableName=self._tasks,
                Key=self._key(task),
                UpdateExpression=expression,
                ConditionExpression="#s = :running AND leaseOwner = :owner",
                ExpressionAttributeNames={"#s": "status", **({"#u": "upload"} if upload else {})},
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if is_condition_failure(err):
                return False
            raise
        return True

    async def release(self, task: DownloadTask, owner: str) -> None:
        try:
            await self._client.update_item(
                TableName=self._tasks,
                Key=self._key(task),
                UpdateExpression="SET #s = :pending REMOVE leaseOwner, leaseExpiresAt",
                ConditionExpression="#s = :running AND leaseOwner = :owner",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":pending": {"S": TaskStatus.PENDING.value},
                    ":running": {"S": TaskStatus.RUNNING.value},
                    ":owner": {"S": owner},
                },
            )
        except ClientError as err:
            if not is_condition_failure(err):
                raise

    async def record_result(self, task: DownloadTask, owner: str, *, leased: bool = True) -> bool:
        """Conflicts with other writers of the same job item (many workers finishing
        files at once) are retried: only a failed *condition* means "already recorded"."""
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                return await self._record_once(task, owner, leased)
            except _Contended:
                if attempt == _TRANSACTION_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _record_once(self, task: DownloadTask, owner: str, leased: bool) -> bool:
        counter = "completedTasks" if task.status is TaskStatus.COMPLETED else "failedTasks"
        try:
            await self._client.transact_write_items(
                TransactItems=[
                    {"Put": self._finished_task(task, owner, leased)},
                    {"Update": self._count(task.job_id, counter, task.finished_at)},
                ]
            )
        except ClientError as err:
            if error_code(err) != "TransactionCanceledException":
                raise
            codes = [r.get("Code", "None") for r in err.response.get("CancellationReasons", [])]
            task_refused = len(codes) > 0 and codes[0] == "ConditionalCheckFailed"
            job_refused = len(codes) > 1 and codes[1] == "ConditionalCheckFailed"
            if not (task_refused or job_refused):
                raise _Contended(",".join(codes)) from err  # conflict or throttling: retry
            if job_refused and not task_refused:
                await self._record_task_only(task, owner, leased)  # job ended: keep the story
            return False
        return True

    def _finished_task(self, task: DownloadTask, owner: str, leased: bool) -> dict[str, Any]:
        running = {"S": TaskStatus.RUNNING.value}
        if leased:
            condition = "#s = :running AND leaseOwner = :owner"
            values = {":running": running, ":owner": {"S": owner}}
        else:  # not finished yet, whoever may hold it
            condition = "#s IN (:pending, :running)"
            values = {":running": running, ":pending": {"S": TaskStatus.PENDING.value}}
        return {
            "TableName": self._tasks,
            "Item": self._attrs(task),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": values,
        }

    def _count(self, job_id: str, counter: str, at: datetime | None) -> dict[str, Any]:
        return {
            "TableName": self._jobs,
            "Key": {"jobId": {"S": job_id}},
            # version moves too, so a stale read-modify-write of the job cannot undo a count
            "UpdateExpression": "ADD #c :one, version :one SET updatedAt = :at",
            "ConditionExpression": "#s = :downloading",
            "ExpressionAttributeNames": {"#c": counter, "#s": "status"},
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":downloading": {"S": JobStatus.DOWNLOADING.value},
                ":at": {"S": iso_ms(at) if at else ""},
            },
        }

    async def _record_task_only(self, task: DownloadTask, owner: str, leased: bool) -> None:
        try:
            await self._client.put_item(**self._finished_task(task, owner, leased))
        except ClientError as err:
            if not is_condition_failure(err):
                raise

    @staticmethod
    def _key(task: DownloadTask) -> dict[str, Any]:
        return {"jobId": {"S": task.job_id}, "taskId": {"S": task.task_id}}

    @staticmethod
    def _attrs(task: DownloadTask) -> dict[str, Any]:
        return {k: to_attr(v) for k, v in task_mapping.to_item(task).items() if v is not None}
