"""SqsConsumer on a real queue: a poison message reaches the DLQ after maxReceiveCount,
and the consumer goes on with the next message meanwhile."""

from __future__ import annotations

import asyncio
import json
import uuid

from src.application.ports.message_queue import QueueMessage
from src.infrastructure.sqs.message_queue import SqsMessageQueue
from src.local.stack import EmbeddedStack
from src.processing.consumers.loop import Ack, ConsumerSettings, Outcome, SqsConsumer
from tests.integration.conftest import service_client, sync_client


def _queue_with_dlq(sqs, max_receive_count: int) -> tuple[str, str]:
    name = f"poison-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count}
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(policy)})
    return url["QueueUrl"], dlq


async def test_a_message_that_always_fails_ends_in_the_dlq_and_others_go_on(
    embedded_stack: EmbeddedStack,
) -> None:
    sqs = sync_client(embedded_stack, "sqs")
    url, dlq = _queue_with_dlq(sqs, max_receive_count=3)
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    attempts: list[int] = []
    handled: list[str] = []

    async def handler(message: QueueMessage) -> Outcome:
        if message.body == "poison":
            attempts.append(message.receive_count)
            raise RuntimeError("this message always breaks its handler")
        handled.append(message.body)
        return Outcome(Ack.DELETE)

    settings = ConsumerSettings(
        wait_seconds=1, visibility_timeout=3, concurrency=4, retry_backoff_seconds=0.5
    )
    async with service_client(embedded_stack, "sqs") as client:
        consumer = SqsConsumer("poison-test", SqsMessageQueue(client, url), handler, settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        sqs.send_message(QueueUrl=url, MessageBody="good")
        for _ in range(120):
            dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages", [])
            if dead and handled:
                break
            await asyncio.sleep(0.25)
        stop.set()
        await asyncio.wait_for(running, 10)

    assert [m["Body"] for m in dead] == ["poison"]
    assert attempts == [1, 2, 3]
    assert handled == ["good"]


async def test_a_failed_message_comes_back_after_a_short_backoff_not_the_visibility_timeout(
    embedded_stack: EmbeddedStack,
) -> None:
    """The visibility timeout (the work's lease) is long here; the retry comes back after
    the backoff the consumer sets on failure, well before the lease would have run out."""
    sqs = sync_client(embedded_stack, "sqs")
    url, _dlq = _queue_with_dlq(sqs, max_receive_count=5)
    sqs.send_message(QueueUrl=url, MessageBody="flaky")
    seen: list[float] = []

    async def handler(message: QueueMessage) -> Outcome:
        seen.append(asyncio.get_running_loop().time())
        if len(seen) == 1:
            raise RuntimeError("transient trouble (e.g. DynamoDB throttled past its retries)")
        return Outcome(Ack.DELETE)

    settings = ConsumerSettings(
        wait_seconds=1, visibility_timeout=120, concurrency=1, retry_backoff_seconds=1
    )
    async with service_client(embedded_stack, "sqs") as client:
        consumer = SqsConsumer("backoff-test", SqsMessageQueue(client, url), handler, settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        for _ in range(200):  # 50 s, far below the 120 s lease
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.25)
        stop.set()
        await asyncio.wait_for(running, 10)
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1  # it did wait for the backoff


def test_retry_backoff_grows_per_receive_and_is_capped() -> None:
    settings = ConsumerSettings(retry_backoff_seconds=2, retry_backoff_max_seconds=30)
    consumer = SqsConsumer("x", None, None, settings)  # type: ignore[arg-type]
    first, second, third = (consumer.retry_backoff(n) for n in (1, 2, 3))
    assert 2 <= first <= 2.5 and 4 <= second <= 5 and 8 <= third <= 10
    assert consumer.retry_backoff(20) == 30


def _count_deletes(client) -> list[int]:
    """Entries per DeleteMessageBatch call the client makes (a botocore event hook)."""
    entries: list[int] = []

    def record(params, **_kwargs) -> None:
        entries.append(len(params["Entries"]))

    client.meta.events.register("provide-client-params.sqs.DeleteMessageBatch", record)
    return entries


def _left_in(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def test_finished_messages_are_deleted_together_in_batches(
    embedded_stack: EmbeddedStack,
) -> None:
    sqs = sync_client(embedded_stack, "sqs")
    url, _dlq = _queue_with_dlq(sqs, max_receive_count=5)
    for start in range(0, 30, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)],
        )
    handled: list[str] = []

    async def handler(message: QueueMessage) -> Outcome:
        handled.append(message.body)
        return Outcome(Ack.DELETE)

    settings = ConsumerSettings(wait_seconds=1, visibility_timeout=30, concurrency=10)
    async with service_client(embedded_stack, "sqs") as client:
        entries = _count_deletes(client)
        consumer = SqsConsumer("batch-test", SqsMessageQueue(client, url), handler, settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        for _ in range(200):
            if len(handled) >= 30 and sum(entries) >= 30:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(running, 10)

    assert sorted(handled) == sorted(f"m{i}" for i in range(30))
    assert sum(entries) == 30
    assert len(entries) <= 15, entries  # one call per message would be 30
    assert max(entries) > 1
    assert _left_in(sqs, url) == 0


async def test_a_stopping_consumer_deletes_what_is_still_waiting_to_be_deleted(
    embedded_stack: EmbeddedStack,
) -> None:
    sqs = sync_client(embedded_stack, "sqs")
    url, _dlq = _queue_with_dlq(sqs, max_receive_count=5)
    sqs.send_message(QueueUrl=url, MessageBody="done")
    handled = asyncio.Event()

    async def handler(message: QueueMessage) -> Outcome:
        handled.set()
        return Outcome(Ack.DELETE)

    # The linger is far longer than the test: only the stop can have deleted it.
    settings = ConsumerSettings(wait_seconds=1, visibility_timeout=30, delete_linger_seconds=600)
    async with service_client(embedded_stack, "sqs") as client:
        entries = _count_deletes(client)
        consumer = SqsConsumer("stop-test", SqsMessageQueue(client, url), handler, settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        await asyncio.wait_for(handled.wait(), 30)
        assert entries == []  # still waiting for company
        stop.set()
        await asyncio.wait_for(running, 10)
    assert entries == [1]
    assert _left_in(sqs, url) == 0


def _record_batch_sizes(client) -> list[int]:
    """MaxNumberOfMessages of each ReceiveMessage call the client makes."""
    asked: list[int] = []

    def record(params, **_kwargs) -> None:
        asked.append(params["MaxNumberOfMessages"])

    client.meta.events.register("provide-client-params.sqs.ReceiveMessage", record)
    return asked


async def test_a_busy_consumer_receives_full_batches_not_one_message_per_freed_slot(
    embedded_stack: EmbeddedStack,
) -> None:
    sqs = sync_client(embedded_stack, "sqs")
    url, _dlq = _queue_with_dlq(sqs, max_receive_count=5)
    for start in range(0, 50, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": str(start + i)} for i in range(10)],
        )
    handled: list[str] = []
    asked_while_busy: list[int] = []

    async def handler(message: QueueMessage) -> Outcome:
        # The ten messages of a batch finish one after another, 4 ms apart: without
        # waiting for company, each freed slot would be refilled by a receive of its own.
        await asyncio.sleep(0.004 * (int(message.body) % 10))
        handled.append(message.body)
        if len(handled) < 40:  # the last batch's receives may find the queue emptying
            asked_while_busy[:] = asked
        return Outcome(Ack.DELETE)

    settings = ConsumerSettings(wait_seconds=1, visibility_timeout=30, concurrency=10)
    async with service_client(embedded_stack, "sqs") as client:
        asked = _record_batch_sizes(client)
        consumer = SqsConsumer("fill-test", SqsMessageQueue(client, url), handler, settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        for _ in range(300):
            if len(handled) >= 50:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(running, 10)

    assert sorted(handled, key=int) == [str(i) for i in range(50)]
    partial = [n for n in asked_while_busy if n < 10]
    assert len(partial) <= 2, asked_while_busy  # one receive per freed slot: dozens
    assert _left_in(sqs, url) == 0
