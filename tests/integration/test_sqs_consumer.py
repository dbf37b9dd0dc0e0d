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

    settings = ConsumerSettings(wait_seconds=1, visibility_timeout=1, concurrency=4)
    async with service_client(embedded_stack, "sqs") as client:
        consumer = SqsConsumer("poison-test", SqsMessageQueue(client, url), handler, settings)
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        sqs.send_message(QueueUrl=url, MessageBody="good")
        for _ in range(60):
            dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages", [])
            if dead and handled:
                break
            await asyncio.sleep(0.25)
        stop.set()
        await asyncio.wait_for(running, 10)

    assert [m["Body"] for m in dead] == ["poison"]
    assert attempts == [1, 2, 3]
    assert handled == ["good"]
