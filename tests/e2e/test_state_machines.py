"""The shipped state machines against the real service on the embedded stack: every file in
state-machines/*/test-inputs/ ends as it says, a batch's failures are notified once on the
topic, and a throttled SendMessage is retried."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from src.local.asl import STATE_MACHINES_DIR
from src.local.provision import Resources
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

EXECUTION_TIMEOUT = 120.0


def input_files(machine: str) -> list[Path]:
    return sorted((STATE_MACHINES_DIR / machine / "test-inputs").glob("*.json"))


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return embedded_stack.provision("sm-")


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack, resources: Resources) -> dict[str, str]:
    return embedded_stack.env(resources)


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


@pytest.fixture(scope="module")
def service(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("state-machines") / "service.log"
    # Few polls, so that export-timed-out ends as the service's ExportTimedOut within the
    # test, after a known number of attempts (every other export is ready at once).
    process = ServiceProcess(
        env,
        log,
        POLLING_INTERVAL_MS="200",
        SQS_WAIT_TIME_SECONDS="1",
        MAX_POLLING_ATTEMPTS="5",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def notifications(aws: Aws, resources: Resources) -> str:
    """An SQS queue subscribed to the notification topic."""
    url = aws.sqs.create_queue(QueueName=f"sm-notifications-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws.sns.subscribe(TopicArn=resources.notification_topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def start(aws: Aws, state_machine_arn: str, payload: Any) -> str:
    return aws.sfn.start_execution(
        stateMachineArn=state_machine_arn, name=f"sm-{uuid.uuid4()}", input=json.dumps(payload)
    )["executionArn"]


def received(aws: Aws, queue_url: str) -> list[dict[str, Any]]:
    """Notifications on the queue now (their SNS Message, parsed), deleted once read."""
    found = []
    while True:
        messages = aws.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(json.loads(message["Body"])["Message"]))
            aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def about(notification: dict[str, Any], execution_arn: str) -> bool:
    return notification.get("executionArn") == execution_arn


def check(case: dict[str, Any], execution: dict[str, Any], history: list[dict[str, Any]]) -> None:
    expect = case["expect"]
    assert execution["status"] == expect["status"], execution
    if expect["status"] == "FAILED":
        assert (execution.get("error"), execution.get("cause")) == (
            expect["error"],
            expect["cause"],
        )
    if "output" in expect:
        output = json.loads(execution["output"])
        assert {key: output.get(key) for key in expect["output"]} == expect["output"]
    if expect.get("messagesSent") == 0:
        scheduled = [e for e in history if e["type"] == "TaskScheduled"]
        assert scheduled == []


def run_all(
    aws: Aws, state_machine_arn: str, machine: str
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Starts every test input of `machine` at once; returns each one's execution."""
    cases = {path.stem: json.loads(path.read_text()) for path in input_files(machine)}
    arns = {name: start(aws, state_machine_arn, case["input"]) for name, case in cases.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        ended = dict(
            zip(
                arns,
                pool.map(lambda arn: aws.wait_execution(arn, EXECUTION_TIMEOUT), arns.values()),
                strict=True,
            )
        )
    return {name: (arns[name], ended[name]) for name in cases}


@pytest.mark.parametrize("machine", ["export-job", "batch-export"])
def test_every_test_input_ends_as_expected(
    machine: str,
    aws: Aws,
    resources: Resources,
    service: ServiceProcess,
    notifications: str,
) -> None:
    arn = (
        resources.state_machine_arn
        if machine == "export-job"
        else resources.batch_state_machine_arn
    )
    cases = {path.stem: json.loads(path.read_text()) for path in input_files(machine)}
    assert cases, f"no test inputs for {machine}"

    results = run_all(aws, arn, machine)

    problems = []
    for name, (execution_arn, execution) in results.items():
        try:
            check(cases[name], execution, aws.history(execution_arn))
        except AssertionError as err:
            problems.append(f"{name}: {err}")
    assert problems == [], "\n".join(problems)

    # Notifications: the export-job ones name their job, the batch ones their execution.
    def concerns(name: str, note: dict[str, Any]) -> bool:
        if machine == "batch-export":
            return about(note, results[name][0])
        return note.get("jobId") == cases[name]["input"].get("jobId")

    notified = [name for name, case in cases.items() if case["expect"].get("notified")]
    notes: list[dict[str, Any]] = []

    def all_notified() -> bool:
        notes.extend(received(aws, notifications))
        return all(any(concerns(name, n) for n in notes) for name in notified)

    wait_for(all_notified, 30, f"notifications for {notified}")
    notes.extend(received(aws, notifications))  # and anything more already sent
    for name, case in cases.items():
        if "notified" in case["expect"]:
            count = sum(concerns(name, n) for n in notes)
            assert count == (1 if case["expect"]["notified"] else 0), (name, notes)


def test_a_batch_of_twelve_with_two_failing_is_summarised_and_notified_once(
    aws: Aws, resources: Resources, service: ServiceProcess, notifications: str
) -> None:
    case = json.loads(
        (STATE_MACHINES_DIR / "batch-export/test-inputs/twelve-with-two-failing.json").read_text()
    )
    exports = case["input"]["exports"]
    # Fresh job ids: the same input ran in the test above.
    for item in exports:
        item["jobId"] = str(uuid.uuid4())
    failing = [i for i, item in enumerate(exports) if "failed" in item["exportId"]]
    received(aws, notifications)  # start from an empty queue

    arn = start(aws, resources.batch_state_machine_arn, {"exports": exports})
    execution = aws.wait_execution(arn, EXECUTION_TIMEOUT)

    assert execution["status"] == "SUCCEEDED"
    summary = json.loads(execution["output"])
    assert (summary["succeeded"], summary["failed"]) == (10, 2)
    assert [(f["index"], f["jobId"], f["error"]) for f in summary["failures"]] == [
        (i, exports[i]["jobId"], "ExportFailed") for i in failing
    ]
    notes: list[dict[str, Any]] = []
    wait_for(lambda: notes.extend(received(aws, notifications)) or notes, 30, "a notification")
    notes.extend(received(aws, notifications))
    assert len(notes) == 1
    assert about(notes[0], arn)
    assert notes[0]["failures"] == summary["failures"]
    assert (notes[0]["succeeded"], notes[0]["failed"]) == (10, 2)


def test_a_throttled_send_message_is_retried_and_the_export_succeeds(
    aws: Aws, resources: Resources, service: ServiceProcess, embedded_stack: EmbeddedStack
) -> None:
    throttled: list[str] = []

    def first_two_sends(operation: str) -> bool:
        # Only the state machine sends export-job messages with SendMessage here; the
        # service's work items go out with SendMessageBatch.
        if operation == "SendMessage" and len(throttled) < 2:
            throttled.append(operation)
            return True
        return False

    job_id = str(uuid.uuid4())
    embedded_stack.aws.set_fault(first_two_sends)
    try:
        arn = start(
            aws,
            resources.state_machine_arn,
            {"jobId": job_id, "exportId": "sm-throttled-files-1", "userId": "u"},
        )
        execution = aws.wait_execution(arn, EXECUTION_TIMEOUT)
    finally:
        embedded_stack.aws.set_fault(None)

    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"])["jobId"] == job_id
    failed = [
        e["taskFailedEventDetails"]["error"] for e in aws.history(arn) if e["type"] == "TaskFailed"
    ]
    assert failed == ["SQS.SdkClientException", "SQS.SdkClientException"]
    assert len(throttled) == 2
