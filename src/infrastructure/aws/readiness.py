"""Whether this replica can reach what it needs: both tables, both queues, the bucket
(and, for `export-service check`, the Export API). Each check is one cheap call with a
short timeout; the results are cached for a few seconds so probes cannot load AWS."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from src.infrastructure.dynamodb.errors import error_code

_PROBE_KEY = ".readiness-probe"  # never an object of an export (those are under jobId/)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


class DependencyProbe:
    def __init__(
        self,
        *,
        dynamodb: Any,
        sqs: Any,
        s3: Any,
        jobs_table: str,
        tasks_table: str,
        queues: dict[str, str],
        bucket: str,
        prefix: str,
        timeout: float = 2.0,
        cache_seconds: float = 5.0,
    ) -> None:
        self._dynamodb, self._sqs, self._s3 = dynamodb, sqs, s3
        self._tables = {"jobs table": (jobs_table, {"jobId": {"S": _PROBE_KEY}})}
        self._tables["tasks table"] = (
            tasks_table,
            {"jobId": {"S": _PROBE_KEY}, "taskId": {"S": _PROBE_KEY}},
        )
        self._queues = queues
        self._bucket, self._prefix = bucket, prefix
        self._timeout, self._cache_seconds = timeout, cache_seconds
        self._cached: tuple[float, list[Check]] | None = None
        self._lock = asyncio.Lock()

    async def checks(self) -> list[Check]:
        async with self._lock:  # concurrent probes share one round of checks
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            found = list(await asyncio.gather(*self._all()))
            self._cached = (time.monotonic(), found)
            return found

    def _all(self) -> list[Any]:
        calls = [
            self._check(f"{name} {table}", self._dynamodb.get_item(TableName=table, Key=key))
            for name, (table, key) in self._tables.items()
        ]
        calls += [
            self._check(
                f"{name} queue",
                self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]),
            )
            for name, url in self._queues.items()
        ]
        calls.append(self._bucket_check())
        return calls

    async def _check(self, name: str, call: Any) -> Check:
        try:
            await asyncio.wait_for(call, self._timeout)
        except TimeoutError:
            return Check(name, False, f"no answer within {self._timeout:g}s")
        except ClientError as err:
            return Check(name, False, error_code(err) or "error")
        except (BotoCoreError, OSError) as err:
            return Check(name, False, type(err).__name__)
        return Check(name, True, "ok")

    async def _bucket_check(self) -> Check:
        """A GET of a key that does not exist: NoSuchKey (or AccessDenied, without
        s3:ListBucket) says the bucket is there, using only s3:GetObject."""
        name = f"bucket {self._bucket}"
        try:
            found = await asyncio.wait_for(
                self._s3.get_object(Bucket=self._bucket, Key=self._prefix + _PROBE_KEY),
                self._timeout,
            )
            found["Body"].close()
        except TimeoutError:
            return Check(name, False, f"no answer within {self._timeout:g}s")
        except ClientError as err:
            code = error_code(err)
            if code in ("NoSuchKey", "AccessDenied"):
                return Check(name, True, "ok")
            return Check(name, False, code or "error")
        except (BotoCoreError, OSError) as err:
            return Check(name, False, type(err).__name__)
        return Check(name, True, "ok")
