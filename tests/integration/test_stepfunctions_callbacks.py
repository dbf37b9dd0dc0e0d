"""StepFunctionsCallbacks against real executions of the provisioned state machine on the
embedded Step Functions: the token comes from the export-jobs message, as in production."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.retries.standard import ExponentialBackoff

from src.application.ports.workflow_callbacks import CallbackRejected, CallbackUnavailable
from src.domain.task_token import TaskToken
from src.infrastructure.stepfunctions.callbacks import StepFunctionsCallbacks
from src.local.provision import Resources
from src.local.stack import EmbeddedStack
from tests.integration.conftest import provision_for, service_client, sync_client

# open_client's retry config: botocore standard mode, max_attempts=5 retries.
TOTAL_ATTEMPTS = 6


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "sfn")


@pytest.fixture(scope="module")
def sfn(embedded_stack: EmbeddedStack) -> Any:
    return sync_client(embedded_stack, "stepfunctions")


@pytest.fixture(scope="module")
def sqs(embedded_stack: EmbeddedStack) -> Any:
    return sync_client(embedded_stack, "sqs")


@pytest.fixture
async def callbacks(embedded_stack: EmbeddedStack) -> AsyncIterator[StepFunctionsCallbacks]:
    async with service_client(embedded_stack, "stepfunctions") as client:
        yield StepFunctionsCallbacks(client)


class Execution:
    def __init__(self, arn: str, job: dict[str, Any], token: TaskToken) -> None:
        self.arn, self.job, self.token = arn, job, token


def start_and_take_token(sfn: Any, sqs: Any, resources: Resources) -> Execution:
    """Start an execution and take its task token from the export-jobs message."""
    job = {"jobId": str(uuid.uuid4()), "exportId": "exp-sfn", "userId": "user-1"}
    arn = sfn.start_execution(
        stateMachineArn=resources.state_machine_arn,
        name=f"it-{uuid.uuid4().hex}",
        input=json.dumps(job),
    )["executionArn"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        response = sqs.receive_message(
            QueueUrl=resources.export_jobs_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            if body["jobId"] == job["jobId"]:
                sqs.delete_message(
                    QueueUrl=resources.export_jobs_url, ReceiptHandle=message["ReceiptHandle"]
                )
                return Execution(arn, job, TaskToken(body["taskToken"]))
            # Another test's message: hand it back at once.
            sqs.change_message_visibility(
                QueueUrl=resources.export_jobs_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=0,
            )
    raise AssertionError(f"no export-jobs message for {job['jobId']}")


def wait_done(sfn: Any, arn: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError(f"execution still running after {timeout}s")


def stop(sfn: Any, execution: Execution) -> None:
    if sfn.describe_execution(executionArn=execution.arn)["status"] == "RUNNING":
        sfn.stop_execution(executionArn=execution.arn)


@pytest.fixture
def fast_botocore_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep botocore's retry decisions and attempt count, shorten only its jittered sleep
    (up to 1+2+4+8+16 s for five retries) so the test stays quick."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.01)


async def test_send_success_ends_the_execution_with_that_output(callbacks, sfn, sqs, resources):
    execution = start_and_take_token(sfn, sqs, resources)
    output = {
        **execution.job,
        "status": "COMPLETED",
        "totalTasks": 2,
        "completedTasks": 2,
        "failedTasks": 0,
        "completedAt": "2024-05-01T12:00:00.123Z",
        "durationMs": 1234,
    }

    await callbacks.send_success(execution.token, output)

    done = wait_done(sfn, execution.arn)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == output


async def test_a_used_token_is_rejected_without_echoing_it(callbacks, sfn, sqs, resources):
    execution = start_and_take_token(sfn, sqs, resources)
    await callbacks.send_success(execution.token, {"n": 1})
    wait_done(sfn, execution.arn)

    with pytest.raises(CallbackRejected) as again:
        await callbacks.send_success(execution.token, {"n": 2})
    with pytest.raises(CallbackRejected) as heartbeat:
        await callbacks.send_heartbeat(execution.token)

    for rejected in (again.value, heartbeat.value):
        assert rejected.code in {"TaskTimedOut", "InvalidToken"}
        assert execution.token.reveal() not in str(rejected)
        assert execution.token.reveal() not in repr(rejected)
        assert rejected.__cause__ is None and rejected.__suppress_context__
    assert json.loads(sfn.describe_execution(executionArn=execution.arn)["output"]) == {"n": 1}


async def test_a_bogus_token_is_rejected(callbacks) -> None:
    bogus = TaskToken(f"bogus-{uuid.uuid4()}")

    for call in (
        callbacks.send_success(bogus, {}),
        callbacks.send_failure(bogus, "ProcessingError", "boom"),
        callbacks.send_heartbeat(bogus),
    ):
        with pytest.raises(CallbackRejected) as rejected:
            await call
        assert rejected.value.code == "InvalidToken"
        assert bogus.reveal() not in str(rejected.value)


async def test_heartbeat_on_a_live_token_then_failure_with_error_and_cause(
    callbacks, sfn, sqs, resources
) -> None:
    execution = start_and_take_token(sfn, sqs, resources)
    cause = "Job completed with 1 failed tasks out of 3 total"

    await callbacks.send_heartbeat(execution.token)
    await callbacks.send_heartbeat(execution.token)
    assert sfn.describe_execution(executionArn=execution.arn)["status"] == "RUNNING"
    await callbacks.send_failure(execution.token, "JobCompletedWithFailures", cause)

    done = wait_done(sfn, execution.arn)
    assert done["status"] == "FAILED"
    assert (done["error"], done["cause"]) == ("JobCompletedWithFailures", cause)


async def test_throttling_surfaces_as_unavailable_after_botocore_retries(
    callbacks, sfn, sqs, resources, embedded_stack, fast_botocore_backoff
) -> None:
    execution = start_and_take_token(sfn, sqs, resources)
    aws = embedded_stack.aws
    calls_before, faults_before = aws.calls("SendTaskSuccess"), aws.faults
    aws.set_fault(lambda operation: operation == "SendTaskSuccess")
    try:
        with pytest.raises(CallbackUnavailable) as unavailable:
            await callbacks.send_success(execution.token, {"n": 1})
    finally:
        aws.set_fault(None)

    assert unavailable.value.code == "ThrottlingException"
    assert str(unavailable.value) == "ThrottlingException"
    assert aws.calls("SendTaskSuccess") - calls_before == TOTAL_ATTEMPTS
    assert aws.faults - faults_before == TOTAL_ATTEMPTS
    # Throttled calls never reached Step Functions: the token still works.
    assert sfn.describe_execution(executionArn=execution.arn)["status"] == "RUNNING"
    await callbacks.send_success(execution.token, {"n": 2})
    assert json.loads(wait_done(sfn, execution.arn)["output"]) == {"n": 2}


async def test_throttling_that_clears_within_the_retries_is_invisible(
    callbacks, sfn, sqs, resources, embedded_stack, fast_botocore_backoff
) -> None:
    execution = start_and_take_token(sfn, sqs, resources)
    aws = embedded_stack.aws
    throttled = 0

    def throttle_twice(operation: str) -> bool:
        nonlocal throttled
        if operation != "SendTaskHeartbeat" or throttled >= 2:
            return False
        throttled += 1
        return True

    calls_before = aws.calls("SendTaskHeartbeat")
    aws.set_fault(throttle_twice)
    try:
        await callbacks.send_heartbeat(execution.token)
    finally:
        aws.set_fault(None)
        stop(sfn, execution)

    assert throttled == 2
    assert aws.calls("SendTaskHeartbeat") - calls_before == 3


async def test_every_callback_outcome_is_counted(callbacks, sfn, sqs, resources) -> None:
    from prometheus_client import REGISTRY

    def count(kind: str, outcome: str, code: str) -> float:
        labels = {"kind": kind, "outcome": outcome, "code": code}
        return REGISTRY.get_sample_value("export_callbacks_total", labels) or 0.0

    before = {
        "delivered": count("success", "delivered", ""),
        "rejected": count("success", "rejected", "InvalidToken"),
    }
    execution = start_and_take_token(sfn, sqs, resources)
    await callbacks.send_success(execution.token, {"n": 1})
    with pytest.raises(CallbackRejected):
        await callbacks.send_success(TaskToken(f"bogus-{uuid.uuid4()}"), {})

    assert count("success", "delivered", "") == before["delivered"] + 1
    assert count("success", "rejected", "InvalidToken") == before["rejected"] + 1
