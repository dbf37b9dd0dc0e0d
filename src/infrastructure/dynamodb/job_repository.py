"""DynamoDbJobRepository: jobs in the `export-job-state` table, every write conditional."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from src.application.ports.job_repository import AttachOutcome, ConditionFailed
from src.domain.dispatch_progress import DispatchProgress
from src.domain.export_job import ExportJob
from src.domain.job_status import TERMINAL, JobStatus
from src.domain.task_token import TaskToken
from src.domain.time import iso_ms
from src.infrastructure.dynamodb import due_index, job_claims, job_mapping, job_tokens, progress
from src.infrastructure.dynamodb.codec import from_item, to_attr
from src.infrastructure.dynamodb.errors import is_condition_failure, lost_race


class DynamoDbJobRepository:  # implements JobRepository
    """A DOWNLOADING job is shown with its file counters as counted on their own item
    in the tasks table (see progress.py): one more read, for that status only."""

    def __init__(self, client: Any, table_name: str, tasks_table: str | None = None) -> None:
        self._client = client
        self._table = table_name
        self._tasks = tasks_table
        # Ids this process is claiming right now: overlapping rounds (and the heartbeat)
        # of one replica skip them instead of losing a conditional write to themselves.
        self._claiming: set[tuple[str, str]] = set()

    async def create(self, job: ExportJob) -> bool:
        item = {k: to_attr(v) for k, v in job_mapping.to_item(job).items() if v is not None}
        if "heartbeatDue" in item:  # on the heartbeat schedule, due at once
            item["nextHeartbeatAt"] = {"S": due_index.DUE_AT_ONCE}
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

    async def get(self, job_id: str, *, counted: bool = True) -> ExportJob | None:
        response = await self._client.get_item(
            TableName=self._table, Key={"jobId": {"S": job_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            return None
        job = job_mapping.from_item(from_item(item))
        return await self._with_progress(job) if counted else job

    async def _with_progress(self, job: ExportJob) -> ExportJob:
        if job.status is not JobStatus.DOWNLOADING or self._tasks is None:
            return job
        response = await self._client.get_item(
            TableName=self._tasks, Key=progress.key(job.job_id), ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:  # dispatched by an earlier version: counted on the job item
            return job
        return job.with_progress(*progress.counters(from_item(item)))

    async def save(self, job: ExportJob) -> ExportJob:
        """UpdateItem (not PutItem) so attributes other writers own survive."""
        saved = replace(job, version=job.version + 1)
        request = update_request(self._table, saved)
        request["ExpressionAttributeValues"].update(
            {
                ":expected": {"N": str(job.version)},
                ":same": {"S": job.status.value},
                **{f":t{i}": {"S": s.value} for i, s in enumerate(TERMINAL)},
            }
        )
        try:
            await self._client.update_item(**request, ConditionExpression=self._save_condition(job))
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
        self,
        now: datetime,
        owner: str,
        until: datetime,
        limit: int,
        heartbeat_at: datetime | None = None,
    ) -> list[ExportJob]:
        claim = functools.partial(job_claims.claim_poll, heartbeat_at=heartbeat_at)
        return await self._claim_due(due_index.POLL, claim, now, owner, until, limit)

    async def renew_poll(self, job_id: str, owner: str, until: datetime) -> bool:
        return await job_claims.renew_poll(self._client, self._table, job_id, owner, until)

    async def advance_dispatch(
        self,
        job_id: str,
        owner: str,
        cursor: int,
        to: int | None,
        until: datetime,
        now: datetime | None = None,
    ) -> bool:
        return await job_claims.advance(
            self._client, self._table, job_id, owner, cursor, to, until, now
        )

    async def record_dispatch_failure(
        self, job_id: str, owner: str, cursor: int, error: str, retry_at: datetime
    ) -> bool:
        return await job_claims.record_failure(
            self._client, self._table, job_id, owner, cursor, error, retry_at
        )

    async def rewind_dispatch(
        self,
        job_id: str,
        owner: str,
        cursor: int,
        progress: DispatchProgress,
        retry_at: datetime,
    ) -> bool:
        return await job_claims.rewind(
            self._client, self._table, job_id, owner, cursor, progress, retry_at
        )

    async def restart_dispatch(self, job_id: str, now: datetime) -> bool:
        return await job_claims.restart(self._client, self._table, job_id, now)

    async def claim_unfinished_dispatches(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[ExportJob]:
        return await self._claim_due(
            due_index.DISPATCH, job_claims.claim_dispatch, now, owner, until, limit
        )

    async def _claim_due(
        self, kind: str, claim: Any, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[ExportJob]:
        due = await due_index.due(self._client, self._table, kind, now, limit)
        with self._reserved(kind, due) as mine:
            items = await asyncio.gather(
                *(claim(self._client, self._table, job_id, owner, until, now) for job_id in mine)
            )
        # None: another replica claimed it (or the index lagged)
        return [job_mapping.from_item(from_item(item)) for item in items if item is not None]

    @contextlib.contextmanager
    def _reserved(self, kind: str, job_ids: Iterable[str]) -> Iterator[list[str]]:
        """The ids no other round of this process is claiming, reserved (all at once,
        right after the query) until this round's claims are done."""
        mine = [job_id for job_id in job_ids if (kind, job_id) not in self._claiming]
        self._claiming.update((kind, job_id) for job_id in mine)
        try:
            yield mine
        finally:
            self._claiming.difference_update((kind, job_id) for job_id in mine)

    async def adopt_unscheduled(self, now: datetime, limit: int) -> int:
        waiting = "(attribute_exists(taskToken) OR attribute_exists(waitingTokens))"
        unbeaten = f"({waiting} AND attribute_not_exists(heartbeatDue))"
        adopted = 0
        for status in (JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING):
            unscheduled = f"{unbeaten} OR attribute_not_exists(dueKind)"
            condition = unscheduled if status is JobStatus.POLLING else unbeaten
            for job in await self._query_status(status, condition, {}, limit - adopted):
                adopted += await self._adopt(job, now)
        return adopted

    async def _adopt(self, job: ExportJob, now: datetime) -> int:
        sets, values = [], {":s": {"S": job.status.value}}
        if due_index.heartbeat_due(job):
            sets.append(
                "heartbeatDue = :hb, nextHeartbeatAt = if_not_exists(nextHeartbeatAt, :hb0)"
            )
            values |= {":hb": {"S": due_index.HEARTBEAT_DUE}, ":hb0": {"S": due_index.DUE_AT_ONCE}}
        if job.status is JobStatus.POLLING:
            sets.append(
                "dueKind = if_not_exists(dueKind, :kind), dueAt = if_not_exists(dueAt, :now)"
            )
            values |= {":kind": {"S": due_index.POLL}, ":now": {"S": iso_ms(now)}}
        if not sets:
            return 0
        try:
            await self._client.update_item(
                TableName=self._table,
                Key={"jobId": {"S": job.job_id}},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#st = :s",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if lost_race(err):
                return 0  # it moved on meanwhile: its own writes schedule it
            raise
        return 1

    async def claim_due_heartbeats(
        self, now: datetime, next_at: datetime, limit: int
    ) -> list[ExportJob]:
        claimed = []
        due = await due_index.heartbeats_due(self._client, self._table, now, limit)
        with self._reserved("heartbeat", due) as mine:
            items = await asyncio.gather(
                *(self._move_heartbeat(job_id, now, next_at) for job_id in mine)
            )
        for item in items:
            if item is not None:
                claimed.append(job_mapping.from_item(from_item(item)))
        return claimed

    async def _move_heartbeat(
        self, job_id: str, now: datetime, next_at: datetime
    ) -> dict[str, Any] | None:
        """nextHeartbeatAt is owned by the heartbeats (this claim, or a poll claim that sends
        them with the poll): save() never moves it."""
        try:
            response = await self._client.update_item(
                TableName=self._table,
                Key={"jobId": {"S": job_id}},
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
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if lost_race(err):
                return None  # another replica has it (or will, next round)
            raise
        attributes: dict[str, Any] = response["Attributes"]
        return attributes

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
        candidates = await self._query_status(
            status, "updatedAt <= :before", {":before": {"S": iso_ms(updated_before)}}, limit
        )
        current = [await self._with_progress(job) for job in candidates]
        return [job for job in current if job.updated_at <= updated_before]

    async def list_overdue(
        self, status: JobStatus, created_before: datetime, limit: int
    ) -> list[ExportJob]:
        # createdAt is the index's range key: a key condition, not a filter
        before = {":before": {"S": iso_ms(created_before)}}
        return await self._query_status(status, "", before, limit, "createdAt <= :before")

    async def _query_status(
        self,
        status: JobStatus,
        condition: str,
        values: dict[str, Any],
        limit: int,
        range_condition: str = "",
    ) -> list[ExportJob]:
        return await self._query(
            "status-index", "status", status.value, condition, values, limit, range_condition
        )

    async def _query(
        self,
        index: str,
        key: str,
        value: str,
        condition: str,
        values: dict[str, Any],
        limit: int,
        range_condition: str = "",
    ) -> list[ExportJob]:
        """Jobs whose index `key` is `value` and that match `condition`, from a GSI
        (eventually consistent: the conditional write that follows is what decides).
        One page of at most `limit` items read (oldest created first): a periodic round
        reads its batch, never a whole partition, and the next round reads again."""
        if limit <= 0:
            return []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :key"
            + (f" AND {range_condition}" if range_condition else ""),
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":key": {"S": value}, **values},
            "Limit": limit,
        }
        if condition:
            kwargs["FilterExpression"] = condition
        response = await self._client.query(**kwargs)
        return [job_mapping.from_item(from_item(i)) for i in response.get("Items", [])]


def update_request(table: str, saved: ExportJob) -> dict[str, Any]:
    """An UpdateItem writing every attribute of `saved` (absent ones removed), leaving
    the attributes other writers own; names #v and #st are version and status."""
    values = job_mapping.to_item(saved)
    del values["jobId"]
    names: dict[str, str] = {"#v": "version", "#st": "status"}
    attrs: dict[str, Any] = {}
    sets, removes = [], []
    for i, (name, value) in enumerate(values.items()):
        names[f"#a{i}"] = name
        if value is None:
            removes.append(f"#a{i}")
        else:
            sets.append(f"#a{i} = :a{i}")
            attrs[f":a{i}"] = to_attr(value)
    if values.get("heartbeatDue"):  # on the heartbeat schedule (which its claims move)
        sets.append("nextHeartbeatAt = if_not_exists(nextHeartbeatAt, :hb0)")
        attrs[":hb0"] = {"S": due_index.DUE_AT_ONCE}
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    return {
        "TableName": table,
        "Key": {"jobId": {"S": saved.job_id}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": attrs,
    }
