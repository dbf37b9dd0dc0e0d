"""SqsDeadLetters: look into a queue's DLQ and send its messages back (operator CLI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from src.infrastructure.redaction import mask_message_body


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    body: str  # masked: tokens and URL query strings never shown
    receive_count: int
    reason: str | None


async def dead_letter_queue_url(client: Any, queue_url: str) -> str | None:
    """The DLQ named by the queue's RedrivePolicy, if any."""
    attrs = await client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    policy = attrs.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]
    _, _, _, _, account, name = arn.split(":", 5)
    response = await client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
    return str(response["QueueUrl"])


class SqsDeadLetters:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._source = queue_url

    async def peek(self, limit: int = 50) -> list[DeadLetter]:
        """Messages are hidden while being read, then made visible again at once."""
        dlq = await self._require_dlq()
        seen: dict[str, DeadLetter] = {}
        handles: list[str] = []
        for message in await self._receive(dlq, limit):
            handles.append(message["ReceiptHandle"])
            attrs = message.get("MessageAttributes", {})
            seen.setdefault(
                message["MessageId"],
                DeadLetter(
                    message_id=message["MessageId"],
                    body=mask_message_body(message.get("Body", "")),
                    receive_count=int(message["Attributes"].get("ApproximateReceiveCount", 0)),
                    reason=attrs.get("rejectReason", {}).get("StringValue"),
                ),
            )
        for handle in handles:
            await self._client.change_message_visibility(
                QueueUrl=dlq, ReceiptHandle=handle, VisibilityTimeout=0
            )
        return list(seen.values())

    async def redrive(self, limit: int = 50) -> int:
        """Send up to `limit` messages back to the source queue; each is deleted from the
        DLQ only after it was sent."""
        dlq = await self._require_dlq()
        moved = 0
        for message in await self._receive(dlq, limit):
            await self._client.send_message(QueueUrl=self._source, MessageBody=message["Body"])
            await self._client.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
        return moved

    async def _receive(self, dlq: str, limit: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < limit:
            response = await self._client.receive_message(
                QueueUrl=dlq,
                MaxNumberOfMessages=min(10, limit - len(messages)),
                WaitTimeSeconds=1,
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            batch = response.get("Messages", [])
            if not batch:
                break
            messages += batch
        return messages

    async def _require_dlq(self) -> str:
        dlq = await dead_letter_queue_url(self._client, self._source)
        if dlq is None:
            raise LookupError("this queue has no dead-letter queue (RedrivePolicy)")
        return dlq
