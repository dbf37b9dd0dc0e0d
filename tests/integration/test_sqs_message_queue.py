"""SqsMessageQueue against the embedded SQS: receive, per-entry delete, visibility and
rejects to the dead-letter queue found from the provisioned RedrivePolicy; SqsWorkQueue's
batched sends and what it reports when some could not be queued."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from src.application.ports.message_queue import QueueMessage
from src.application.ports.work_queue import PublishFailed, TaskRef
from src.infrastructure.sqs.message_queue import SqsMessageQueue
from src.infrastructure.sqs.work_queue import SqsWorkQueue
from src.local.provision import (
    DLQ_MAX_RECEIVE_COUNT,
    DLQ_SUFFIX,
    QUEUE_VISIBILITY_TIMEOUT_SECONDS,
    Resources,
)
from src.local.stack import EmbeddedStack
from tests.integration.conftest import service_client, sync_client, unique_prefix


@dataclass(frozen=True)
class Queues:
    url: str
    dlq_url: str


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique_prefix("sqs")


@pytest.fixture(scope="module")
def sqs(embedded_stack: EmbeddedStack) -> Any:
    return sync_client(embedded_stack, "sqs")


@pytest.fixture
def queues(sqs: Any, prefix: str) -> Queues:
    """A fresh queue with a DLQ, shaped like the provisioned export-jobs queue (SQS allows
    one PurgeQueue a minute, so each test gets its own pair instead)."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}{DLQ_SUFFIX}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": DLQ_MAX_RECEIVE_COUNT}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(QUEUE_VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return Queues(url, dlq_url)


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack, prefix: str) -> Resources:
    return embedded_stack.provision(prefix)


@pytest.fixture
def queue_url(queues: Queues) -> str:
    return queues.url


@pytest.fixture
async def sqs_client(embedded_stack: EmbeddedStack) -> AsyncIterator[Any]:
    async with service_client(embedded_stack, "sqs") as client:
        yield client


@pytest.fixture
def queue(sqs_client: Any, queue_url: str) -> SqsMessageQueue:
    return SqsMessageQueue(sqs_client, queue_url)


def send(sqs: Any, queue_url: str, *bodies: str) -> list[str]:
    return [sqs.send_message(QueueUrl=queue_url, MessageBody=b)["MessageId"] for b in bodies]


def counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


async def receive_all(queue: SqsMessageQueue, expected: int) -> list[QueueMessage]:
    received: list[QueueMessage] = []
    for _ in range(5):
        received += await queue.receive(max_messages=10, wait_seconds=1, visibility_seconds=30)
        if len(received) >= expected:
            break
    return received


async def test_receive_returns_bodies_ids_and_receive_count(queue, sqs, queue_url) -> None:
    bodies = [json.dumps({"jobId": str(uuid.uuid4()), "n": n}) for n in range(3)]
    ids = send(sqs, queue_url, *bodies)

    messages = await receive_all(queue, 3)

    assert sorted(m.body for m in messages) == sorted(bodies)
    assert {m.message_id for m in messages} == set(ids)
    assert all(m.receive_count == 1 for m in messages)
    assert all(m.receipt_handle for m in messages)
    assert counts(sqs, queue_url) == (0, 3)  # in flight, not deleted
    assert await queue.receive(max_messages=10, wait_seconds=0, visibility_seconds=30) == []


async def test_delete_returns_nothing_when_every_entry_is_deleted(queue, sqs, queue_url) -> None:
    send(sqs, queue_url, *(f"body-{n}" for n in range(12)))
    messages = await receive_all(queue, 12)
    assert len(messages) == 12

    failed = await queue.delete(messages)  # two DeleteMessageBatch calls: 10 + 2

    assert list(failed) == []
    assert counts(sqs, queue_url) == (0, 0)


async def test_delete_returns_only_the_entries_that_failed(queue, sqs, queue_url) -> None:
    send(sqs, queue_url, "good-1", "good-2")
    good = await receive_all(queue, 2)
    bogus = QueueMessage(message_id="bogus", body="x", receipt_handle="not-a-receipt-handle")

    failed = await queue.delete([good[0], bogus, good[1]])

    assert list(failed) == [bogus]
    assert counts(sqs, queue_url) == (0, 0)


async def test_change_visibility_zero_makes_the_message_receivable_again(
    queue, sqs, queue_url
) -> None:
    [message_id] = send(sqs, queue_url, "again")
    [first] = await receive_all(queue, 1)
    assert await queue.receive(max_messages=10, wait_seconds=0, visibility_seconds=30) == []

    await queue.change_visibility(first, 0)

    [second] = await receive_all(queue, 1)
    assert (second.message_id, second.body) == (message_id, "again")
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle


async def test_reject_moves_the_body_to_the_dlq_with_the_reason(
    queue, sqs, queue_url, queues
) -> None:
    body = '{"jobId": "not-a-uuid", "exportId": 5}'
    [message_id] = send(sqs, queue_url, body)
    [message] = await receive_all(queue, 1)

    await queue.reject(message, "jobId: not a UUID")

    assert counts(sqs, queue_url) == (0, 0)  # the original is deleted
    dead = sqs.receive_message(
        QueueUrl=queues.dlq_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
    )["Messages"]
    assert len(dead) == 1
    assert dead[0]["Body"] == body
    attributes = dead[0]["MessageAttributes"]
    assert attributes["rejectReason"] == {"StringValue": "jobId: not a UUID", "DataType": "String"}
    assert attributes["sourceMessageId"]["StringValue"] == message_id


async def test_reject_keeps_a_blank_body_as_is_and_cuts_a_long_reason(
    queue, sqs, queue_url, queues
) -> None:
    # SQS refuses empty bodies, so the adapter's "<empty>" placeholder cannot be reached
    # here; a blank body is the closest real case and must arrive unchanged.
    send(sqs, queue_url, " ")
    [message] = await receive_all(queue, 1)

    await queue.reject(message, "r" * 5000)

    dead = sqs.receive_message(
        QueueUrl=queues.dlq_url, WaitTimeSeconds=1, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead[0]["Body"] == " "
    assert dead[0]["MessageAttributes"]["rejectReason"]["StringValue"] == "r" * 1024


async def test_reject_without_a_dlq_releases_the_message(sqs_client, sqs, queues) -> None:
    # The DLQ itself has no RedrivePolicy: reject falls back to visibility 0.
    dlq = SqsMessageQueue(sqs_client, queues.dlq_url)
    send(sqs, queues.dlq_url, "orphan")
    [message] = await receive_all(dlq, 1)

    await dlq.reject(message, "no dead-letter queue")

    [again] = await receive_all(dlq, 1)
    assert (again.body, again.receive_count) == ("orphan", 2)


async def test_reject_on_the_provisioned_queue_finds_its_dlq(sqs_client, sqs, resources) -> None:
    queue = SqsMessageQueue(sqs_client, resources.export_jobs_url)
    send(sqs, resources.export_jobs_url, "not json")
    [message] = await receive_all(queue, 1)

    await queue.reject(message, "body is not JSON")

    assert counts(sqs, resources.export_jobs_url) == (0, 0)
    dead = sqs.receive_message(
        QueueUrl=resources.export_jobs_dlq_url, WaitTimeSeconds=1, MessageAttributeNames=["All"]
    )["Messages"]
    assert [m["Body"] for m in dead] == ["not json"]
    assert dead[0]["MessageAttributes"]["rejectReason"]["StringValue"] == "body is not JSON"


async def test_received_messages_use_the_consumers_visibility_not_the_queue_default(
    queue, sqs, queue_url
) -> None:
    """A replica killed right after receiving must not hide messages for the queue's
    900 s default: SQS_VISIBILITY_TIMEOUT applies from the receive on."""
    send(sqs, queue_url, "short-lived")
    first = await queue.receive(max_messages=1, wait_seconds=1, visibility_seconds=1)
    assert [m.body for m in first] == ["short-lived"]

    again: list[QueueMessage] = []
    for _ in range(6):
        again += await queue.receive(max_messages=1, wait_seconds=1, visibility_seconds=30)
        if again:
            break

    assert [(m.body, m.receive_count) for m in again] == [("short-lived", 2)]


# --- SqsWorkQueue: work items out in batches, and exactly which could not be queued -----


class _RefusingSqs:
    """The real client, but SendMessageBatch is throttled outright on its first call and
    the entry for file `refused` fails every time (as SQS reports per entry)."""

    def __init__(self, client: Any, refused: int) -> None:
        self._client = client
        self._refused = refused
        self.calls = 0

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[Any]) -> Any:
        self.calls += 1
        if self.calls == 1:
            error = {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}
            raise ClientError(error, "SendMessageBatch")  # type: ignore[arg-type]
        mine = [e for e in Entries if json.loads(e["MessageBody"])["index"] == self._refused]
        rest = [e for e in Entries if e not in mine]
        response = await self._client.send_message_batch(QueueUrl=QueueUrl, Entries=rest)
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in mine]
        return {**response, "Failed": response.get("Failed", []) + failed}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def refs(count: int) -> list[TaskRef]:
    return [TaskRef("job-1", f"{i:05d}", i) for i in range(count)]


async def indexes_queued(sqs: Any, queue_url: str, expected: int) -> list[int]:
    found: list[int] = []
    for _ in range(20):
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        found += [json.loads(m["Body"])["index"] for m in batch.get("Messages", [])]
        if len(found) >= expected and not batch.get("Messages"):
            break
    return sorted(found)


async def test_work_items_go_out_in_batches_each_once(sqs_client, sqs, queue_url) -> None:
    queue = SqsWorkQueue(sqs_client, queue_url)
    await queue.publish(refs(23))
    assert await queue.backlog() == 23
    assert await indexes_queued(sqs, queue_url, 23) == list(range(23))


async def test_a_failed_publish_names_exactly_the_work_items_not_queued(
    sqs_client, sqs, queue_url
) -> None:
    refusing = _RefusingSqs(sqs_client, refused=12)
    queue = SqsWorkQueue(refusing, queue_url, max_attempts=3)
    with pytest.raises(PublishFailed) as failed:
        await queue.publish(refs(23))
    assert [ref.index for ref in failed.value.unsent] == [12]
    assert str(failed.value) == "1 of 23 work items could not be queued"
    # the throttled batch was sent again; nothing else twice, only file 12 missing
    assert await indexes_queued(sqs, queue_url, 22) == [i for i in range(23) if i != 12]
