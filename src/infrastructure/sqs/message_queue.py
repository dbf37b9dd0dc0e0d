"""SqsMessageQueue: long polling, per-entry deletes, visibility control, DLQ rejects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from botocore.exceptions import ClientError

from src.application.ports.message_queue import MessageLost, QueueMessage
from src.infrastructure.sqs.dead_letters import dead_letter_queue_url

log = structlog.get_logger(__name__)


# The receipt no longer holds the message (deleted, or received again by someone else).
_RECEIPT_GONE = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.MessageNotInflight",
        "MessageNotInflight",
        "InvalidReceiptHandle",
    }
)


class SqsMessageQueue:  # implements MessageQueue
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url
        self._dlq_url: str | None = None

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_seconds: int
    ) -> Sequence[QueueMessage]:
        response = await self._client.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            QueueMessage(
                message_id=m["MessageId"],
                body=m.get("Body", ""),
                receipt_handle=m["ReceiptHandle"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    async def delete(self, messages: Sequence[QueueMessage]) -> Sequence[QueueMessage]:
        failed: list[QueueMessage] = []
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(batch)
            ]
            response = await self._client.delete_message_batch(QueueUrl=self._url, Entries=entries)
            for entry in response.get("Failed", []):
                message = batch[int(entry["Id"])]
                log.warning("delete failed", message_id=message.message_id, code=entry.get("Code"))
                failed.append(message)
        return failed

    async def change_visibility(self, message: QueueMessage, seconds: int) -> None:
        try:
            await self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
            )
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            detail = str(err.response.get("Error", {}).get("Message", "")).lower()
            stale = code == "InvalidParameterValue" and "receipt handle" in detail
            if code in _RECEIPT_GONE or stale:
                raise MessageLost(code) from None
            raise

    async def reject(self, message: QueueMessage, reason: str) -> None:
        """Move a message that can never be processed to the queue's DLQ at once, with the
        reason as a message attribute; without a DLQ, let the redrive policy take it."""
        dlq = await self._dead_letter_queue()
        if dlq is None:
            await self.change_visibility(message, 0)
            return
        await self._client.send_message(
            QueueUrl=dlq,
            MessageBody=message.body or "<empty>",
            MessageAttributes={
                "rejectReason": {"DataType": "String", "StringValue": reason[:1024]},
                "sourceMessageId": {"DataType": "String", "StringValue": message.message_id},
            },
        )
        await self.delete([message])

    async def _dead_letter_queue(self) -> str | None:
        if self._dlq_url is None:
            try:
                self._dlq_url = await dead_letter_queue_url(self._client, self._url)
            except ClientError:
                return None
        return self._dlq_url
