"""Every AWS call the service makes is counted by service and operation (what the bill
and the bench's calls-per-file figures are made of)."""

from __future__ import annotations

from src.local.stack import EmbeddedStack
from src.observability.metrics import AWS_CALLS
from tests.integration.conftest import service_client


def _count(service: str, operation: str) -> float:
    value = AWS_CALLS.labels(service, operation)._value.get()
    return float(value)


async def test_each_call_is_counted_once_by_service_and_operation(embedded_stack: EmbeddedStack):
    before_list = _count("DynamoDB", "ListTables")
    before_queues = _count("SQS", "ListQueues")
    async with service_client(embedded_stack, "dynamodb") as dynamodb:
        await dynamodb.list_tables()
        await dynamodb.list_tables()
    async with service_client(embedded_stack, "sqs") as sqs:
        await sqs.list_queues()
    assert _count("DynamoDB", "ListTables") - before_list == 2
    assert _count("SQS", "ListQueues") - before_queues == 1
