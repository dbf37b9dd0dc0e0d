"""What plain moto (no Step Functions patches from `src.local.emulator`) answers where it
differs from AWS: the behaviours the service must survive on an emulator users run as is.

Plain moto runs in a child process (`plain_emulator`): the patches are global to this process,
where the session's patched emulator lives. Observed on moto 5.2.5; if moto changes, these
tests say so and DESIGN.md §6 / the README's fidelity notes need the new answers.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from src.local.emulator import EmbeddedAws
from src.local.provision import STATE_MACHINE_ROLE_ARN, Resources, provision
from src.local.stack import EmbeddedStack
from tests.support.aws import wait_for
from tests.support.plain_emulator import PlainEmulator

REGION = "us-east-1"
CAUSE = "Export exp-1 expired"
TIMEOUT = 30.0  # a deadline for waits on the emulator, never an asserted bound


def client(endpoint_url: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def prefix(name: str) -> str:
    return f"plain-{name}-{uuid.uuid4().hex[:8]}-"


def error_code(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return str(raised.value.response["Error"]["Code"])


def callback_machine(endpoint_url: str, heartbeat_seconds: int | None) -> tuple[str, str]:
    """A one-Task machine sending its token over SQS; `(state_machine_arn, queue_url)`."""
    name = prefix("hb" if heartbeat_seconds else "nohb")
    queue_url = client(endpoint_url, "sqs").create_queue(QueueName=f"{name}q")["QueueUrl"]
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {
            "QueueUrl": queue_url,
            "MessageBody": {"jobId.$": "$.jobId", "taskToken.$": "$$.Task.Token"},
        },
        "TimeoutSeconds": 3600,
        "End": True,
    }
    if heartbeat_seconds is not None:
        task["HeartbeatSeconds"] = heartbeat_seconds
    definition = {"StartAt": "Wait", "States": {"Wait": task}}
    arn = client(endpoint_url, "stepfunctions").create_state_machine(
        name=f"{name}sm",
        definition=json.dumps(definition),
        roleArn=STATE_MACHINE_ROLE_ARN,
        type="STANDARD",
    )["stateMachineArn"]
    return str(arn), str(queue_url)


def start_and_take_token(
    endpoint_url: str, state_machine_arn: str, queue_url: str
) -> tuple[str, str]:
    """Start an execution and wait for its message; `(execution_arn, task_token)`."""
    job_id = str(uuid.uuid4())
    execution_arn = client(endpoint_url, "stepfunctions").start_execution(
        stateMachineArn=state_machine_arn,
        name=job_id,
        input=json.dumps({"jobId": job_id, "exportId": "exp-1", "userId": "user-1"}),
    )["executionArn"]
    sqs = client(endpoint_url, "sqs")

    def token() -> str | None:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
        )
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            if body.get("jobId") == job_id:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return str(body["taskToken"])
        return None

    return str(execution_arn), wait_for(token, TIMEOUT, f"the message of {job_id}")


def wait_ended(endpoint_url: str, execution_arn: str) -> dict[str, Any]:
    sfn = client(endpoint_url, "stepfunctions")

    def ended() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution_arn)
        return None if described["status"] == "RUNNING" else dict(described)

    return wait_for(ended, TIMEOUT, f"execution {execution_arn} to end")


@pytest.fixture(scope="module")
def plain(plain_emulator: PlainEmulator) -> str:
    return plain_emulator.endpoint_url


@pytest.fixture(scope="module")
def plain_resources(plain: str) -> Resources:
    """The production resources (state machine from state-machines/, HeartbeatSeconds set)."""
    return provision(plain, REGION, name_prefix=prefix("prod"))


def test_heartbeat_without_heartbeat_seconds_is_invalid_token(plain: str) -> None:
    """Plain moto answers `InvalidToken` to SendTaskHeartbeat for a running task whose state
    has no `HeartbeatSeconds`. On AWS this heartbeat succeeds: any task waiting for its token
    accepts heartbeats, HeartbeatSeconds only adds a deadline for them. The execution is not
    harmed: it still runs and takes the token's success."""
    state_machine_arn, queue_url = callback_machine(plain, heartbeat_seconds=None)
    execution_arn, token = start_and_take_token(plain, state_machine_arn, queue_url)
    sfn = client(plain, "stepfunctions")

    assert error_code(sfn.send_task_heartbeat, taskToken=token) == "InvalidToken"

    assert sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    sfn.send_task_success(taskToken=token, output='{"ok":true}')
    assert wait_ended(plain, execution_arn)["status"] == "SUCCEEDED"


def test_heartbeat_with_heartbeat_seconds_succeeds(plain: str) -> None:
    """With `HeartbeatSeconds` on the state (as in state-machines/export-job/definition.asl.json) plain
    moto accepts the heartbeat, like AWS."""
    state_machine_arn, queue_url = callback_machine(plain, heartbeat_seconds=600)
    execution_arn, token = start_and_take_token(plain, state_machine_arn, queue_url)
    sfn = client(plain, "stepfunctions")

    sfn.send_task_heartbeat(taskToken=token)

    assert sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    sfn.send_task_success(taskToken=token, output="{}")
    assert wait_ended(plain, execution_arn)["status"] == "SUCCEEDED"


def test_task_failure_drops_the_cause(plain: str, plain_resources: Resources) -> None:
    """Plain moto's SendTaskFailure keeps the error but drops the cause: the execution fails
    through the production machine's Catch (ExportFailed) with no `cause` at all, and the
    TaskFailed event has none either. AWS keeps the cause in both."""
    execution_arn, token = start_and_take_token(
        plain, plain_resources.state_machine_arn, plain_resources.export_jobs_url
    )
    sfn = client(plain, "stepfunctions")

    sfn.send_task_failure(taskToken=token, error="ExportExpired", cause=CAUSE)

    done = wait_ended(plain, execution_arn)
    assert (done["status"], done["error"]) == ("FAILED", "ExportExpired")
    assert "cause" not in done
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    failed = [e["taskFailedEventDetails"] for e in events if "taskFailedEventDetails" in e]
    assert [(f["error"], "cause" in f) for f in failed] == [("ExportExpired", False)]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert entered[-1] == "ExportFailed"


def test_token_of_an_ended_execution_is_invalid_token(
    plain: str, plain_resources: Resources
) -> None:
    """Once the execution has ended (here after SendTaskSuccess), plain moto answers
    `InvalidToken` to SendTaskHeartbeat and SendTaskSuccess with its token, the same answer
    as for a token it never issued, so "the workflow gave up" and "bad token" look alike.
    AWS answers `TaskTimedOut` ("Provided task does not exist anymore"). A late
    SendTaskFailure is even accepted (no error) and changes nothing."""
    execution_arn, token = start_and_take_token(
        plain, plain_resources.state_machine_arn, plain_resources.export_jobs_url
    )
    sfn = client(plain, "stepfunctions")
    sfn.send_task_success(taskToken=token, output='{"a":1}')
    assert wait_ended(plain, execution_arn)["status"] == "SUCCEEDED"

    assert error_code(sfn.send_task_heartbeat, taskToken=token) == "InvalidToken"
    assert error_code(sfn.send_task_success, taskToken=token, output="{}") == "InvalidToken"
    assert error_code(sfn.send_task_heartbeat, taskToken=str(uuid.uuid4())) == "InvalidToken"

    sfn.send_task_failure(taskToken=token, error="ExportFailed", cause="late")
    done = sfn.describe_execution(executionArn=execution_arn)
    assert (done["status"], json.loads(done["output"])) == ("SUCCEEDED", {"a": 1})


def test_patched_emulator_answers_task_timed_out_for_an_ended_execution(
    embedded_stack: EmbeddedStack,
) -> None:
    """The same as the test above on the session's (patched) emulator: `TaskTimedOut`, as
    on AWS. The difference is why the service must not rely on it."""
    endpoint_url = embedded_stack.aws.endpoint_url
    resources = embedded_stack.provision(prefix("patched"))
    execution_arn, token = start_and_take_token(
        endpoint_url, resources.state_machine_arn, resources.export_jobs_url
    )
    sfn = client(endpoint_url, "stepfunctions")
    sfn.send_task_success(taskToken=token, output="{}")
    assert wait_ended(endpoint_url, execution_arn)["status"] == "SUCCEEDED"

    assert error_code(sfn.send_task_heartbeat, taskToken=token) == "TaskTimedOut"


def test_plain_emulator_cannot_run_in_a_patched_process(embedded_stack: EmbeddedStack) -> None:
    """The session's emulator patched this process for good: an in-process "plain" emulator
    would not be plain moto, so it refuses."""
    assert embedded_stack.aws.patch_stepfunctions
    with pytest.raises(RuntimeError, match="cannot be undone"):
        EmbeddedAws(patch_stepfunctions=False)
