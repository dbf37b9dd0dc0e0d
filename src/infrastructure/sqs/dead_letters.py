"""SqsDeadLetters: look into a queue's DLQ and send its messages back (operator CLI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from src.infrastructure.dynamodb.errors import error_code
from src.infrastructure.redaction import mask_message_body


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    body: str  # masked: tokens and URL query strings never shown
    receive_count: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class Redrive:
    method: str  # "message-move-task" (SQS moves them itself) or "receive-send-delete"
    moved: int | None  # None: SQS's task moves them in the background
    task_handle: str | None = None
    note: str = ""


# Endpoints without SQS's own message-move task (moto answers 500, LocalStack may not
# know the action): the messages are then copied one by one instead.
_NO_MOVE_TASK = frozenset(
    {"500", "InternalFailure", "InvalidAction", "UnsupportedOperation",
     "AWS.SimpleQueueService.UnsupportedOperation", "NotImplemented"}
)  # fmt: skip


class _NoMoveTask(Exception):
    pass


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
        self._move_task = True  # False once the endpoint said it has no such action

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

    async def redrive_all(self) -> Redrive:
        """Every message back to its queue with SQS's own message-move task (it keeps
        attributes and runs in the background); where the endpoint lacks it, up to 1,000
        copied one by one (`redrive`)."""
        dlq = await self._require_dlq()
        arns = {}
        for name, url in (("dlq", dlq), ("source", self._source)):
            attrs = await self._client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )
            arns[name] = attrs["Attributes"]["QueueArn"]
        try:
            if not self._move_task:
                raise _NoMoveTask
            task = await self._client.start_message_move_task(
                SourceArn=arns["dlq"], DestinationArn=arns["source"]
            )
        except (ClientError, _NoMoveTask) as err:
            if isinstance(err, ClientError) and error_code(err) not in _NO_MOVE_TASK:
                raise
            if not isinstance(err, ClientError) or error_code(err) not in (
                "500",
                "InternalFailure",
            ):
                self._move_task = False  # the action is unknown here: not asked again
            moved = await self.redrive(1000)
            note = "this endpoint has no StartMessageMoveTask: messages copied one by one"
            return Redrive("receive-send-delete", moved, note=note)
        return Redrive("message-move-task", None, str(task.get("TaskHandle", "")))

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
