"""DynamoDbJobQueries: what the admin API lists, through the tables' indexes.

- by status: `status-index` (hash status, range createdAt), newest first;
- by user (and status): `userId-index` (hash userId, range createdAt), the status as a
  filter;
- neither: every status's partition of `status-index` merged newest first. Each page
  reads at most `limit` jobs per status, and the top `limit` of what was read is exact
  (a job older than another partition's last read one cannot be among them, because
  that partition alone gave `limit` newer ones).

Cursors are opaque to callers: base64 of the query's kind and DynamoDB's keys."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from src.application.ports.job_queries import BadCursor, JobPage, TaskPage
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.infrastructure.dynamodb import job_mapping, progress, task_mapping
from src.infrastructure.dynamodb.codec import from_item

STATUS_INDEX = "status-index"
USER_INDEX = "userId-index"
_MAX_FILTERED_READS = 5  # queries per page when a filter drops items (then a cursor)
_DONE = "done"
_STATUS_KEY = ("jobId", "status", "createdAt")


def _encode(kind: str, state: Any) -> str:
    raw = json.dumps({"q": kind, "k": state}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str | None, kind: str, names: tuple[str, ...]) -> Any:
    """The DynamoDB start key(s) a cursor holds, checked: `names` are the key's
    attributes (each a string); the merged listing holds one per status, or "done"."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise BadCursor("the cursor is not one this service handed out") from err
    if not isinstance(decoded, dict) or decoded.get("q") != kind:
        raise BadCursor("the cursor belongs to another query (other filters)")
    state = decoded.get("k")
    if kind == "all":
        statuses = {s.value for s in JobStatus}
        if (
            not isinstance(state, dict)
            or not set(state) <= statuses
            or not all(v is None or v == _DONE or _is_key(v, names) for v in state.values())
        ):
            raise BadCursor("the cursor is not one this service handed out")
        return {**{s: _DONE for s in statuses}, **state}
    if not _is_key(state, names):
        raise BadCursor("the cursor is not one this service handed out")
    return state


def _is_key(value: Any, names: tuple[str, ...]) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == set(names)
        and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str)
                for v in value.values())
    )  # fmt: skip


def _index_key(item: dict[str, Any], hash_key: str) -> dict[str, Any]:
    return {name: item[name] for name in ("jobId", hash_key, "createdAt")}


def _newest_first(item: dict[str, Any]) -> tuple[str, str]:
    return (item["createdAt"]["S"], item["jobId"]["S"])


class DynamoDbJobQueries:  # implements JobQueries
    def __init__(self, client: Any, table_name: str, tasks_table: str) -> None:
        self._client = client
        self._table = table_name
        self._tasks = tasks_table

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        user_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        if user_id is not None:
            return await self._by_user(user_id, status, limit, cursor)
        if status is not None:
            kind = f"status:{status.value}"
            start = _decode(cursor, kind, _STATUS_KEY)
            items, last = await self._page(STATUS_INDEX, "status", status.value, limit, start)
            return JobPage(await self._jobs(items), _encode(kind, last) if last else None)
        return await self._merged(limit, cursor)

    async def _page(
        self,
        index: str,
        key: str,
        value: str,
        limit: int,
        start: dict[str, Any] | None,
        *,
        status_filter: JobStatus | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":v": {"S": value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if status_filter is not None:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"]["#s"] = "status"
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status_filter.value}
        if start:
            kwargs["ExclusiveStartKey"] = start
        items: list[dict[str, Any]] = []
        for _ in range(_MAX_FILTERED_READS):
            response = await self._client.query(**kwargs)
            items += response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if last is None:
                return items[:limit], None
            if len(items) >= limit:
                return items[:limit], _index_key(items[limit - 1], key)
            kwargs["ExclusiveStartKey"] = last
            kwargs["Limit"] = limit - len(items)
        return items, last

    async def _by_user(
        self, user_id: str, status: JobStatus | None, limit: int, cursor: str | None
    ) -> JobPage:
        kind = f"user:{user_id}:{status.value if status else ''}"
        start = _decode(cursor, kind, ("jobId", "userId", "createdAt"))
        items, last = await self._page(
            USER_INDEX, "userId", user_id, limit, start, status_filter=status
        )
        return JobPage(await self._jobs(items), _encode(kind, last) if last else None)

    async def _merged(self, limit: int, cursor: str | None) -> JobPage:
        state: dict[str, Any] = _decode(cursor, "all", _STATUS_KEY) or {
            s.value: None for s in JobStatus
        }
        fetched: dict[str, tuple[list[dict[str, Any]], bool]] = {}
        for status, start in state.items():
            if start == _DONE:
                continue
            items, last = await self._page(STATUS_INDEX, "status", status, limit, start)
            fetched[status] = (items, last is not None)
        # Each partition gives a prefix of what it returned, in its own order (among
        # jobs created in the same millisecond that order is DynamoDB's), so its cursor
        # (the last item taken) never skips or repeats one.
        merged: list[tuple[dict[str, Any], str]] = []
        taken = dict.fromkeys(fetched, 0)
        while len(merged) < limit:
            heads = [(status, items[taken[status]]) for status, (items, _) in fetched.items()
                     if taken[status] < len(items)]  # fmt: skip
            if not heads:
                break
            status, item = max(heads, key=lambda head: _newest_first(head[1]))
            merged.append((item, status))
            taken[status] += 1
        new_state = dict(state)
        for status, (items, more) in fetched.items():
            count = taken.get(status, 0)
            if count == len(items) and not more:
                new_state[status] = _DONE
            elif count:
                new_state[status] = _index_key(items[count - 1], "status")
        finished = all(value == _DONE for value in new_state.values())
        return JobPage(
            await self._jobs([item for item, _ in merged]),
            None if finished else _encode("all", new_state),
        )

    async def _jobs(self, items: list[dict[str, Any]]) -> list[ExportJob]:
        """The jobs, DOWNLOADING ones with their file counters as counted apart (one
        BatchGetItem per 100 of them): progress bars move while files are copied."""
        jobs = [job_mapping.from_item(from_item(item)) for item in items]
        downloading = [j.job_id for j in jobs if j.status is JobStatus.DOWNLOADING]
        counters: dict[str, dict[str, Any]] = {}
        for start in range(0, len(downloading), 100):
            keys = [progress.key(job_id) for job_id in downloading[start : start + 100]]
            request: dict[str, Any] = {self._tasks: {"Keys": keys}}
            while request:
                response = await self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._tasks, []):
                    counters[item["jobId"]["S"]] = from_item(item)
                request = response.get("UnprocessedKeys") or {}
        return [
            job.with_progress(*progress.counters(counters[job.job_id]))
            if job.job_id in counters
            else job
            for job in jobs
        ]

    async def list_tasks(
        self, job_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> TaskPage:
        kind = f"tasks:{job_id}"
        kwargs: dict[str, Any] = {
            "TableName": self._tasks,
            # the counters item ("#progress") sorts before every task id: left out
            "KeyConditionExpression": "jobId = :j AND taskId > :p",
            "ExpressionAttributeValues": {":j": {"S": job_id}, ":p": {"S": progress.TASK_ID}},
            "Limit": limit,
        }
        start = _decode(cursor, kind, ("jobId", "taskId"))
        if start:
            kwargs["ExclusiveStartKey"] = start
        response = await self._client.query(**kwargs)
        tasks = [task_mapping.from_item(from_item(i)) for i in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return TaskPage(tasks, _encode(kind, last) if last else None)
