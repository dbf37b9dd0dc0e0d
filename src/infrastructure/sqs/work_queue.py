"""SqsWorkQueue: download-task work items via SendMessageBatch, per-entry retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from src.application.ports.work_queue import PublishFailed, TaskRef
from src.domain.time import iso_ms

log = structlog.get_logger(__name__)
_DEPTH = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SqsWorkQueue:  # implements WorkQueue
    def __init__(
        self, client: Any, queue_url: str, *, batch_size: int = 10, max_attempts: int = 3
    ) -> None:
        self._client = client
        self._url = queue_url
        self._batch = max(1, min(batch_size, 10))
        self._attempts = max_attempts

    async def publish(self, refs: Sequence[TaskRef]) -> None:
        batches = [refs[i : i + self._batch] for i in range(0, len(refs), self._batch)]
        results = await asyncio.gather(*(self._send(b) for b in batches), return_exceptions=True)
        unsent = [  # a batch that raised anything else is unsent whole, the others are not
            ref
            for batch, result in zip(batches, results, strict=True)
            for ref in (batch if isinstance(result, BaseException) else result)
        ]
        if unsent:
            raise PublishFailed(
                f"{len(unsent)} of {len(refs)} work items could not be queued", unsent
            )

    async def backlog(self) -> int:
        response = await self._client.get_queue_attributes(
            QueueUrl=self._url, AttributeNames=_DEPTH
        )
        attributes = response.get("Attributes", {})
        return sum(int(attributes.get(name, 0)) for name in _DEPTH)

    async def _send(self, batch: Sequence[TaskRef]) -> list[TaskRef]:
        """The refs of `batch` still unsent after the retries. A request that fails as a
        whole (throttled, unreachable) is tried again like failed entries."""
        pending = {str(i): ref for i, ref in enumerate(batch)}
        for attempt in range(1, self._attempts + 1):
            entries = [{"Id": i, "MessageBody": self._body(r)} for i, r in pending.items()]
            try:
                response = await self._client.send_message_batch(
                    QueueUrl=self._url, Entries=entries
                )
            except (BotoCoreError, ClientError) as err:
                log.warning("work items not queued", error=type(err).__name__, attempt=attempt)
            else:
                failed = response.get("Failed", [])
                for entry in failed:
                    log.warning("work item not queued", code=entry.get("Code"), attempt=attempt)
                pending = {e["Id"]: pending[e["Id"]] for e in failed if e["Id"] in pending}
                if not pending:
                    return []
            if attempt < self._attempts:
                await asyncio.sleep(0.2 * attempt)
        return list(pending.values())

    @staticmethod
    def _body(ref: TaskRef) -> str:
        body: dict[str, object] = {"jobId": ref.job_id, "taskId": ref.task_id, "index": ref.index}
        if ref.execution_arn:
            body["executionArn"] = ref.execution_arn
        task = ref.dispatched
        if task is not None:
            body["task"] = {
                "url": task.url,
                "fileName": task.file_name,
                "outputKey": task.output_key,
                "createdAt": iso_ms(task.created_at),
                "expectedSize": task.expected_size,
                "expectedSha256": task.expected_sha256,
                "urlExpiresAt": iso_ms(task.url_expires_at) if task.url_expires_at else None,
            }
        return json.dumps(body)
