"""DynamoDbTaskRepository: per-file records in their own table; results counted once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from src.application.ports.job_repository import ConditionFailed
from src.application.ports.task_repository import Recorded, RecordOutcome
from src.domain.download_task import DownloadTask, TaskStatus, task_id_for
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.time import iso_ms
from src.domain.upload_checkpoint import UploadCheckpoint
from src.infrastructure.dynamodb import job_repository, progress, task_mapping
from src.infrastructure.dynamodb.codec import from_item, to_attr
from src.infrastructure.dynamodb.errors import error_code, is_condition_failure

_PUT_CONCURRENCY = 16
# Set by claim itself; every other attribute of the work item's task is kept if stored.
_CLAIM_OWNS = frozenset({"jobId", "taskId", "status", "attempts", "leaseOwner", "leaseExpiresAt"})
_TRANSACTION_ATTEMPTS = 6


class _Contended(Exception):
    """The transaction was cancelled for a reason other than a failed condition."""


class _Last(Exception):
    """The file would take the job's pending count to 0: record it as the last one."""

    def __init__(self, counters: dict[str, Any]) -> None:
        super().__init__("the last file")
        self.counters = counters  # as they were before it (raw attribute values)


class _NoProgressItem(Exception):
    """The job was dispatched before files were counted on their own item."""


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
            tasks += [
                task_mapping.from_item(from_item(i))
                for i in response.get("Items", [])
                if i["taskId"]["S"] != progress.TASK_ID
            ]
            if "LastEvaluatedKey" not in response:
                return tasks
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def claim(
        self, task: DownloadTask, owner: str, until: datetime, now: datetime
    ) -> DownloadTask | None:
        # A task has no record until a worker first takes it (the work item carries it):
        # the claim writes what the record needs, keeping whatever is stored already.
        described = {
            k: v
            for k, v in task_mapping.to_item(task).items()
            if v is not None and k not in _CLAIM_OWNS
        }
        names = {f"#k{i}": name for i, name in enumerate(described)}
        sets = [f"#k{i} = if_not_exists(#k{i}, :k{i})" for i in range(len(described))]
        values = {f":k{i}": to_attr(v) for i, v in enumerate(described.values())}
        try:
            response = await self._client.update_item(
                TableName=self._tasks,
                Key=self._key(task),
                UpdateExpression="SET #s = :running, leaseOwner = :owner, "
                "leaseExpiresAt = :until, " + ", ".join(sets) + " ADD attempts :one",
                # The owner may take its own task again (its earlier try was cut short).
                ConditionExpression="attribute_not_exists(#s) OR #s = :pending OR "
                "(#s = :running AND (leaseExpiresAt <= :now OR leaseOwner = :owner))",
                ExpressionAttributeNames={"#s": "status", **names},
                ExpressionAttributeValues={
                    ":running": {"S": TaskStatus.RUNNING.value},
                    ":pending": {"S": TaskStatus.PENDING.value},
                    ":owner": {"S": owner},
                    ":until": {"S": iso_ms(until)},
                    ":now": {"S": iso_ms(now)},
                    ":one": {"N": "1"},
                    **values,
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

    async def reopen_failed(
        self, job: ExportJob, reopened: ExportJob, tasks: Sequence[DownloadTask]
    ) -> ExportJob:
        saved = replace(reopened, version=job.version + 1)
        first = job_repository.update_request(self._jobs, saved)
        first["ConditionExpression"] = "#v = :expected AND #st = :seen AND callbackStatus = :cb"
        first["ExpressionAttributeValues"].update(
            {
                ":expected": {"N": str(job.version)},
                ":seen": {"S": job.status.value},
                ":cb": {"S": job.callback.status.value},
            }
        )
        # A transaction holds at most 100 items: the job, the counters and the tasks.
        chunks = [list(tasks[:98])] + [list(tasks[i : i + 99]) for i in range(98, len(tasks), 99)]
        for number, chunk in enumerate(chunks):
            items: list[dict[str, Any]] = [{"Update": first}] if number == 0 else []
            items.append({"Update": progress.reopen(self._tasks, job.job_id, len(chunk))})
            items += [
                {
                    "Put": {
                        "TableName": self._tasks,
                        "Item": self._attrs(task),
                        "ConditionExpression": "#s = :failed",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":failed": {"S": TaskStatus.FAILED.value}},
                    }
                }
                for task in chunk
            ]
            try:
                await self._client.transact_write_items(TransactItems=items)
            except ClientError as err:
                if error_code(err) == "TransactionCanceledException" and number == 0:
                    raise ConditionFailed(job.job_id) from err
                raise
        return saved

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

    async def start_counting(self, job_id: str, total: int, now: datetime) -> None:
        try:
            await self._client.put_item(
                TableName=self._tasks,
                Item=progress.new_item(job_id, total, now),
                ConditionExpression="attribute_not_exists(taskId)",
            )
        except ClientError as err:
            if not is_condition_failure(err):  # there already: files may be counted on it
                raise

    async def finished_indexes(self, job_id: str, first: int, end: int) -> set[int]:
        found: set[int] = set()
        for low, high in _same_width_ranges(first, end):
            kwargs: dict[str, Any] = {
                "TableName": self._tasks,
                "KeyConditionExpression": "jobId = :j AND taskId BETWEEN :lo AND :hi",
                "ProjectionExpression": "#i, #s",
                "ExpressionAttributeNames": {"#i": "index", "#s": "status"},
                "ExpressionAttributeValues": {
                    ":j": {"S": job_id},
                    ":lo": {"S": task_id_for(low)},
                    ":hi": {"S": task_id_for(high)},
                },
                "ConsistentRead": True,
            }
            while True:
                response = await self._client.query(**kwargs)
                for item in response.get("Items", []):
                    if TaskStatus(item["status"]["S"]).is_terminal:
                        found.add(int(item["index"]["N"]))
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    async def record_result(
        self, task: DownloadTask, owner: str, *, leased: bool = True
    ) -> Recorded:
        """Conflicts with other writers of the same counters (many workers finishing
        files at once) are retried: only a failed *condition* means "already recorded"."""
        before: dict[str, Any] | None = None  # the counters just before the last file
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            try:
                return await self._record_once(task, owner, leased, before)
            except _Last as last:
                before = last.counters  # the same file again, as the one that ends the job
            except _NoProgressItem:
                return await self._record_on_job_item(task, owner, leased)
            except _Contended:
                if attempt == _TRANSACTION_ATTEMPTS:
                    raise
                before = None  # look again from the start
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise _Contended("the job's counters kept changing")

    async def _record_once(
        self, task: DownloadTask, owner: str, leased: bool, before: dict[str, Any] | None
    ) -> Recorded:
        at = task.finished_at or datetime.now(UTC)
        succeeded = task.status is TaskStatus.COMPLETED
        count = progress.count(self._tasks, task.job_id, succeeded, at, last=before is not None)
        reasons = await self._transact(self._finished_task(task, owner, leased), count)
        if reasons is None:
            if before is None:
                return Recorded(RecordOutcome.COUNTED)
            completed, failed = progress.counts(before)
            final = (completed + succeeded, failed + (not succeeded))
            return Recorded(RecordOutcome.COUNTED_LAST, final)
        if reasons[0].get("Code") == "ConditionalCheckFailed":
            return Recorded(RecordOutcome.DUPLICATE)  # recorded already (or taken over)
        if reasons[1].get("Code") != "ConditionalCheckFailed":
            raise _Contended(",".join(r.get("Code", "None") for r in reasons))
        counters = reasons[1].get("Item")
        if progress.pending(counters) is None:  # not returned (some emulators), or none
            counters = await self._counters(task.job_id)
        left = progress.pending(counters)
        if left is None or counters is None:
            raise _NoProgressItem(task.job_id)
        if left == 1 and before is None:
            raise _Last(counters)
        if left > 1 and before is not None:
            raise _Contended("not the last file after all")  # counted meanwhile: again
        # Nothing left to count: every file was counted already. Keep the task's story.
        await self._record_task_only(task, owner, leased)
        return Recorded(RecordOutcome.DUPLICATE)

    async def _transact(self, *items: dict[str, Any]) -> list[dict[str, Any]] | None:
        """None when written; else the cancellation reasons, one per item."""
        try:
            await self._client.transact_write_items(
                TransactItems=[
                    {"Put": items[0]},
                    {"Update": items[1]},
                ]
            )
        except ClientError as err:
            if error_code(err) != "TransactionCanceledException":
                raise
            reasons: list[dict[str, Any]] = err.response.get("CancellationReasons", [])  # type: ignore[assignment]
            if len(reasons) < len(items):
                raise _Contended(str(reasons)) from err
            return reasons
        return None

    async def _counters(self, job_id: str) -> dict[str, Any] | None:
        response = await self._client.get_item(
            TableName=self._tasks, Key=progress.key(job_id), ConsistentRead=True
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    async def _record_on_job_item(self, task: DownloadTask, owner: str, leased: bool) -> Recorded:
        """A job dispatched by an earlier version counts on the job item itself (the last
        file is then found by CompleteJob's read, as it was)."""
        counter = "completedTasks" if task.status is TaskStatus.COMPLETED else "failedTasks"
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            count = self._count(task.job_id, counter, task.finished_at)
            reasons = await self._transact(self._finished_task(task, owner, leased), count)
            if reasons is None:
                return Recorded(RecordOutcome.COUNTED_MAYBE_LAST)
            task_refused = reasons[0].get("Code") == "ConditionalCheckFailed"
            job_refused = reasons[1].get("Code") == "ConditionalCheckFailed"
            if task_refused or job_refused:
                if job_refused and not task_refused:
                    await self._record_task_only(task, owner, leased)  # job ended
                return Recorded(RecordOutcome.DUPLICATE)
            if attempt < _TRANSACTION_ATTEMPTS:
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise _Contended("the job item kept changing")

    def _finished_task(self, task: DownloadTask, owner: str, leased: bool) -> dict[str, Any]:
        running = {"S": TaskStatus.RUNNING.value}
        if leased:
            condition = "#s = :running AND leaseOwner = :owner"
            values = {":running": running, ":owner": {"S": owner}}
        else:  # not finished yet (or never taken), whoever may hold it
            condition = "attribute_not_exists(#s) OR #s IN (:pending, :running)"
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


def _same_width_ranges(first: int, end: int) -> list[tuple[int, int]]:
    """[first, end) as inclusive ranges whose task ids have one width each, so that the
    ids' string order is their numeric order within each."""
    ranges: list[tuple[int, int]] = []
    low = first
    while low < end:
        width = len(task_id_for(low))
        high = min(end - 1, 10**width - 1)
        ranges.append((low, high))
        low = high + 1
    return ranges
