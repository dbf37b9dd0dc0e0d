"""The embedded AWS emulator, the provisioning and the export-job state machine on moto."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from src.local import asl
from src.local.emulator import EmbeddedAws
from src.local.provision import Resources, provision
from tests.support.aws import wait_for

REGION = "us-east-1"
FAILURE_CAUSE = "Job completed with 3 failed tasks out of 10 total"


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="module")
def resources(aws: EmbeddedAws, prefix: str) -> Resources:
    return provision(aws.endpoint_url, REGION, name_prefix=prefix)


def client(aws: EmbeddedAws, service: str, key: str = "testing") -> Any:
    """A client of the emulator signing with access key `key` (the caller its counts use)."""
    return boto3.client(
        service,
        endpoint_url=aws.endpoint_url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=key,
        config=Config(
            max_pool_connections=32, retries={"mode": "standard", "total_max_attempts": 1}
        ),
    )


def start(aws: EmbeddedAws, state_machine_arn: str, job: dict[str, Any]) -> str:
    sfn = client(aws, "stepfunctions")
    return str(
        sfn.start_execution(
            stateMachineArn=state_machine_arn, name=uuid.uuid4().hex, input=json.dumps(job)
        )["executionArn"]
    )


def receive_job(aws: EmbeddedAws, queue_url: str, job_id: str) -> dict[str, Any]:
    """The export-jobs message for job_id (other messages are left alone)."""
    sqs = client(aws, "sqs")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
        )
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            if body.get("jobId") == job_id:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return dict(body)
    raise AssertionError(f"no export-jobs message for {job_id}")


def wait_done(aws: EmbeddedAws, execution_arn: str, timeout: float = 10) -> dict[str, Any]:
    sfn = client(aws, "stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError(f"execution still running after {timeout}s")


def entered_states(aws: EmbeddedAws, execution_arn: str) -> list[str]:
    sfn = client(aws, "stepfunctions")
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in events
        if "stateEnteredEventDetails" in event
    ]


def new_job(**extra: Any) -> dict[str, Any]:
    return {"jobId": str(uuid.uuid4()), "exportId": "exp-1", "userId": "user-1", **extra}


def test_dynamodb_item_writes_are_serialised(aws: EmbeddedAws, resources: Resources) -> None:
    # Without the emulator's DynamoDB lock this lost increments (499 of 500 seen on moto
    # 5.2.5): moto does not lock its backend. Real DynamoDB applies each write atomically.
    ddb = client(aws, "dynamodb")
    key = {"jobId": {"S": str(uuid.uuid4())}}

    def add(_: int) -> None:
        for _ in range(25):
            ddb.update_item(
                TableName=resources.table_name,
                Key=key,
                UpdateExpression="ADD c :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(add, range(20)))

    item = ddb.get_item(TableName=resources.table_name, Key=key, ConsistentRead=True)["Item"]
    assert item["c"] == {"N": "500"}


def test_a_cancelled_transaction_leaves_every_item_it_named_as_it_was(
    aws: EmbeddedAws, resources: Resources
) -> None:
    # The embedded emulator rolls back only the items a transaction names (moto copies the
    # whole table per transaction): an applied Update, a new Put and an untouched neighbour.
    ddb = client(aws, "dynamodb")
    table, job = resources.tasks_table_name, str(uuid.uuid4())

    def key(task: str) -> dict[str, Any]:
        return {"jobId": {"S": job}, "taskId": {"S": task}}

    ddb.put_item(TableName=table, Item={**key("a"), "n": {"N": "1"}})
    ddb.put_item(TableName=table, Item={**key("b"), "n": {"N": "1"}})
    with pytest.raises(ClientError) as failed:
        ddb.transact_write_items(
            TransactItems=[
                {"Update": {"TableName": table, "Key": key("a"),
                            "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                {"Put": {"TableName": table, "Item": {**key("new"), "n": {"N": "9"}}}},
                {"Update": {"TableName": table, "Key": key("b"),
                            "UpdateExpression": "ADD n :one",
                            "ConditionExpression": "n > :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
            ]
        )  # fmt: skip
    reasons = failed.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "None", "ConditionalCheckFailed"]
    assert reasons[2]["Item"]["n"] == {"N": "1"}

    def n(task: str) -> str | None:
        item = ddb.get_item(TableName=table, Key=key(task), ConsistentRead=True).get("Item")
        return item["n"]["N"] if item else None

    assert (n("a"), n("new"), n("b")) == ("1", None, "1")
    ddb.transact_write_items(
        TransactItems=[
            {"Update": {"TableName": table, "Key": key("a"), "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Put": {"TableName": table, "Item": {**key("new"), "n": {"N": "9"}}}},
        ]
    )  # fmt: skip
    assert (n("a"), n("new"), n("b")) == ("2", "9", "1")


def test_provision_is_idempotent_and_complete(
    aws: EmbeddedAws, prefix: str, resources: Resources
) -> None:
    assert provision(aws.endpoint_url, REGION, name_prefix=prefix) == resources
    assert resources.table_name == f"{prefix}export-job-state"
    assert resources.as_env()["STATE_MACHINE_ARN"] == resources.state_machine_arn

    ddb = client(aws, "dynamodb")
    table = ddb.describe_table(TableName=resources.table_name)["Table"]
    assert {index["IndexName"] for index in table["GlobalSecondaryIndexes"]} == {
        "status-index",
        "userId-index",
        "callbackDue-index",
        "due-index",
        "heartbeat-index",
    }
    ttl = ddb.describe_time_to_live(TableName=resources.tasks_table_name)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"

    sqs = client(aws, "sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=resources.export_jobs_url, AttributeNames=["All"]
    )["Attributes"]
    assert attributes["VisibilityTimeout"] == "60"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f"{prefix}export-jobs-dlq")
    assert int(redrive["maxReceiveCount"]) == 5


def export_job_definition(
    queue_url: str, task_timeout_seconds: int = 120, heartbeat_seconds: int = 30
) -> str:
    return asl.render(
        "export-job",
        {
            "ExportJobsQueueUrl": queue_url,
            "TaskTimeoutSeconds": task_timeout_seconds,
            "HeartbeatSeconds": heartbeat_seconds,
            "NotificationTopicArn": "arn:aws:sns:us-east-1:123456789012:notes",
        },
    )


def test_state_machine_template_renders_valid_json() -> None:
    assert "${ExportJobsQueueUrl}" in asl.EXPORT_JOB.text()
    definition = json.loads(export_job_definition("https://sqs.example/1/q", 120, 30))

    task = definition["States"]["RunExport"]
    assert task["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    assert task["Parameters"]["QueueUrl"] == "https://sqs.example/1/q"
    assert task["Parameters"]["MessageBody"]["taskToken.$"] == "$$.Task.Token"
    limits = definition["States"]["MergeDefaults"]["Parameters"]["limits"]
    assert limits == {
        "timeoutSeconds.$": "States.StringToJson('120')",
        "heartbeatSeconds.$": "States.StringToJson('30')",
    }
    targets = {error: c["Next"] for c in task["Catch"] for error in c["ErrorEquals"]}
    assert targets["JobCompletedWithFailures"] == "NotifyCompletedWithFailures"
    assert targets["ProcessingError"] == "ExportFailed"
    assert targets["States.Timeout"] == targets["States.HeartbeatTimeout"] == "CallbackTimedOut"
    with pytest.raises(ValueError, match="HeartbeatSeconds must be less"):
        export_job_definition("https://sqs.example/1/q", 10, 10)


def test_execution_sends_the_job_with_default_metadata_a_token_and_its_execution(
    aws: EmbeddedAws, resources: Resources
) -> None:
    without = new_job()
    with_metadata = new_job(metadata={"source": "ui", "tags": [1, 2]})
    arn = start(aws, resources.state_machine_arn, without)
    start(aws, resources.state_machine_arn, with_metadata)

    body = receive_job(aws, resources.export_jobs_url, without["jobId"])
    token = body.pop("taskToken")
    assert isinstance(token, str) and token
    assert body.pop("executionArn") == arn
    assert body == {**without, "metadata": {}}

    body = receive_job(aws, resources.export_jobs_url, with_metadata["jobId"])
    assert body["metadata"] == {"source": "ui", "tags": [1, 2]}
    assert set(body) == {"jobId", "exportId", "userId", "metadata", "taskToken", "executionArn"}


def test_task_success_output_is_the_execution_output(
    aws: EmbeddedAws, resources: Resources
) -> None:
    job = new_job()
    execution_arn = start(aws, resources.state_machine_arn, job)
    token = receive_job(aws, resources.export_jobs_url, job["jobId"])["taskToken"]
    before = aws.calls("SendTaskSuccess")

    sfn = client(aws, "stepfunctions")
    sfn.send_task_heartbeat(taskToken=token)
    sfn.send_task_success(taskToken=token, output='{"a":1}')

    done = wait_done(aws, execution_arn)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"a": 1}
    assert aws.calls("SendTaskSuccess") == before + 1
    assert aws.calls("AWSStepFunctions.SendTaskSuccess") >= 1

    # AWS answers TaskTimedOut for a token whose task is over; a bogus token is invalid.
    with pytest.raises(ClientError) as ended:
        sfn.send_task_heartbeat(taskToken=token)
    assert ended.value.response["Error"]["Code"] == "TaskTimedOut"
    with pytest.raises(ClientError) as bogus:
        sfn.send_task_heartbeat(taskToken=str(uuid.uuid4()))
    assert bogus.value.response["Error"]["Code"] == "InvalidToken"


def test_task_failure_keeps_error_and_cause(aws: EmbeddedAws, resources: Resources) -> None:
    job = new_job()
    execution_arn = start(aws, resources.state_machine_arn, job)
    token = receive_job(aws, resources.export_jobs_url, job["jobId"])["taskToken"]

    client(aws, "stepfunctions").send_task_failure(
        taskToken=token, error="JobCompletedWithFailures", cause=FAILURE_CAUSE
    )

    done = wait_done(aws, execution_arn)
    assert done["status"] == "FAILED"
    assert (done["error"], done["cause"]) == ("JobCompletedWithFailures", FAILURE_CAUSE)
    assert entered_states(aws, execution_arn)[-1] == "ExportCompletedWithFailures"


def test_service_errors_end_in_export_failed(aws: EmbeddedAws, resources: Resources) -> None:
    job = new_job()
    execution_arn = start(aws, resources.state_machine_arn, job)
    token = receive_job(aws, resources.export_jobs_url, job["jobId"])["taskToken"]

    client(aws, "stepfunctions").send_task_failure(
        taskToken=token, error="ExportExpired", cause="Export exp-1 expired"
    )

    done = wait_done(aws, execution_arn)
    assert (done["error"], done["cause"]) == ("ExportExpired", "Export exp-1 expired")
    assert entered_states(aws, execution_arn)[-1] == "ExportFailed"


def test_missed_heartbeat_ends_in_callback_timed_out(aws: EmbeddedAws) -> None:
    short = provision(
        aws.endpoint_url,
        REGION,
        name_prefix=f"t{uuid.uuid4().hex[:8]}-hb-",
        task_timeout_seconds=5,
        heartbeat_seconds=1,
    )
    job = new_job()
    execution_arn = start(aws, short.state_machine_arn, job)
    token = receive_job(aws, short.export_jobs_url, job["jobId"])["taskToken"]

    done = wait_done(aws, execution_arn)
    assert done["status"] == "FAILED"
    assert done["error"] == "CallbackTimedOut"
    # moto raises States.Timeout for a missed heartbeat; AWS says States.HeartbeatTimeout.
    assert done["cause"].split(":")[0] in {"States.Timeout", "States.HeartbeatTimeout"}
    assert entered_states(aws, execution_arn)[-1] == "CallbackTimedOut"
    with pytest.raises(ClientError) as late:
        client(aws, "stepfunctions").send_task_heartbeat(taskToken=token)
    assert late.value.response["Error"]["Code"] == "TaskTimedOut"


def test_fault_hook_answers_throttling(aws: EmbeddedAws, resources: Resources) -> None:
    ddb = client(aws, "dynamodb")
    item = {"jobId": {"S": str(uuid.uuid4())}}
    faults_before, puts_before = aws.faults, aws.calls("PutItem")
    aws.set_fault(lambda operation: operation == "PutItem")
    try:
        with pytest.raises(ClientError) as throttled:
            ddb.put_item(TableName=resources.table_name, Item=item)
        # Other operations pass.
        ddb.describe_table(TableName=resources.table_name)
    finally:
        aws.set_fault(None)

    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert throttled.value.response["Error"]["Message"] == "Rate exceeded"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert aws.faults == faults_before + 1
    assert aws.calls("PutItem") == puts_before + 1
    ddb.put_item(TableName=resources.table_name, Item=item)
    assert aws.faults == faults_before + 1


def test_reset_calls(aws: EmbeddedAws, resources: Resources) -> None:
    client(aws, "dynamodb").describe_table(TableName=resources.table_name)
    assert aws.calls("DescribeTable") >= 1
    aws.reset_calls()
    assert aws.calls("DescribeTable") == 0
    assert aws.faults == 0


def test_query_and_scan_record_the_items_they_read_per_caller(
    aws: EmbeddedAws, resources: Resources
) -> None:
    caller = f"reads{uuid.uuid4().hex[:8]}"
    ddb = client(aws, "dynamodb", caller)
    user = f"u-{uuid.uuid4().hex[:8]}"
    for n in range(5):
        item = {"jobId": {"S": str(uuid.uuid4())}, "userId": {"S": user},
                "createdAt": {"S": f"2026-01-0{n + 1}T00:00:00.000Z"}, "n": {"N": str(n)}}  # fmt: skip
        ddb.put_item(TableName=resources.table_name, Item=item)
    query = {
        "TableName": resources.table_name,
        "IndexName": "userId-index",
        "KeyConditionExpression": "userId = :u",
        "ExpressionAttributeValues": {":u": {"S": user}, ":two": {"N": "2"}},
    }
    ddb.query(**query, FilterExpression="n < :two")  # reads 5, returns 2
    ddb.query(**query, FilterExpression="n < :two", Limit=3)  # reads 3, returns 2
    scanned = ddb.scan(TableName=resources.table_name, Select="COUNT")["ScannedCount"]
    with pytest.raises(ClientError):
        ddb.query(**{**query, "TableName": "no-such-table"})  # an error reads nothing

    assert aws.reads_by(caller) == {
        "Query": {"calls": 2, "items": 8, "max_items": 5, "returned": 4},
        "Scan": {"calls": 1, "items": scanned, "max_items": scanned, "returned": scanned},
    }
    assert aws.reads_by_source(caller)[f"Query {resources.table_name}/userId-index"]["calls"] == 2
    assert aws.reads_by("someone-else") == {}
    aws.reset_calls()
    assert aws.reads_by(caller) == {}


def test_the_cpu_spent_on_each_callers_requests_is_kept_by_operation(
    aws: EmbeddedAws, resources: Resources
) -> None:
    caller = f"cpu{uuid.uuid4().hex[:8]}"
    ddb = client(aws, "dynamodb", caller)
    for _ in range(20):
        ddb.put_item(TableName=resources.table_name, Item={"jobId": {"S": str(uuid.uuid4())}})
    ddb.describe_table(TableName=resources.table_name)

    spent = aws.cpu_by(caller)
    assert set(spent) == {"DynamoDB_20120810.PutItem", "DynamoDB_20120810.DescribeTable"}
    assert spent["DynamoDB_20120810.PutItem"]["calls"] == 20
    put = spent["DynamoDB_20120810.PutItem"]
    assert put["seconds"] >= put["moto_seconds"] > 0  # moto's part, and the write accounting
    assert spent["DynamoDB_20120810.DescribeTable"]["calls"] == 1
    assert aws.cpu_by("someone-else") == {}
    aws.reset_calls()
    assert aws.cpu_by(caller) == {}


def test_a_request_open_across_a_reset_counts_for_neither_side(
    aws: EmbeddedAws, resources: Resources
) -> None:
    caller = f"cpu{uuid.uuid4().hex[:8]}"
    sqs = client(aws, "sqs", caller)
    queue_url = sqs.create_queue(QueueName=f"q{uuid.uuid4().hex[:8]}")["QueueUrl"]
    aws.reset_calls()
    with ThreadPoolExecutor(1) as pool:
        long_poll = pool.submit(sqs.receive_message, QueueUrl=queue_url, WaitTimeSeconds=2)
        wait_for(lambda: aws.calls_by(caller).get("AmazonSQS.ReceiveMessage") == 1, 10)
        aws.reset_calls()  # the receive is still waiting
        long_poll.result()

    assert aws.cpu_by(caller) == {}  # it began before the reset: not counted after it


def test_queries_keep_dynamodb_order_with_keys_cast_once(aws: EmbeddedAws) -> None:
    # moto_costs sorts by each key's cast value: numbers as numbers, not as text.
    ddb = client(aws, "dynamodb")
    name = f"t{uuid.uuid4().hex[:8]}-order"
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "h", "AttributeType": "S"},
            {"AttributeName": "r", "AttributeType": "N"},
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "h", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "by-n",
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }],
    )  # fmt: skip
    for r, n in ((10, 3), (2, 100), (1, 20), (33, -5)):
        item = {"h": {"S": "a"}, "r": {"N": str(r)}, "g": {"S": "x"}, "n": {"N": str(n)}}
        ddb.put_item(TableName=name, Item=item)
    ddb.put_item(TableName=name, Item={"h": {"S": "b"}, "r": {"N": "0"}})  # not in the index

    by_range = ddb.query(
        TableName=name,
        KeyConditionExpression="h = :h",
        ExpressionAttributeValues={":h": {"S": "a"}},
    )["Items"]
    by_index = ddb.query(
        TableName=name, IndexName="by-n", KeyConditionExpression="g = :g AND n < :top",
        ExpressionAttributeValues={":g": {"S": "x"}, ":top": {"N": "50"}}, Limit=2,
    )  # fmt: skip
    backwards = ddb.query(
        TableName=name, IndexName="by-n", KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "x"}}, ScanIndexForward=False,
    )["Items"]  # fmt: skip

    assert [i["r"]["N"] for i in by_range] == ["1", "2", "10", "33"]
    assert [i["n"]["N"] for i in by_index["Items"]] == ["-5", "3"]
    assert by_index["ScannedCount"] == 2 and "LastEvaluatedKey" in by_index
    assert [i["n"]["N"] for i in backwards] == ["100", "20", "3", "-5"]
    scanned = ddb.scan(TableName=name)["Items"]
    assert sorted((i["h"]["S"], int(i["r"]["N"])) for i in scanned) == [
        ("a", 1),
        ("a", 2),
        ("a", 10),
        ("a", 33),
        ("b", 0),
    ]


def test_an_execution_can_be_called_back_as_soon_as_it_is_started(aws: EmbeddedAws) -> None:
    # moto_executions: moto marked an execution RUNNING before its worker thread built its
    # environment, and a callback looked up meanwhile failed (HTTP 500) for every token.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    own = provision(aws.endpoint_url, REGION, name_prefix=f"t{uuid.uuid4().hex[:8]}-cb-",
                    task_timeout_seconds=30, heartbeat_seconds=20)  # fmt: skip
    sfn = client(aws, "stepfunctions")
    waiting = new_job()
    waiting_arn = start(aws, own.state_machine_arn, waiting)
    token = receive_job(aws, own.export_jobs_url, waiting["jobId"])["taskToken"]
    backend = stepfunctions_parser_backends[DEFAULT_ACCOUNT_ID][REGION]

    for _ in range(10):
        arn = start(aws, own.state_machine_arn, new_job())
        execution = next(e for e in backend._get_executions() if e.exec_arn == arn)
        assert execution.exec_worker.env is not None  # at once, not once its thread ran
        sfn.send_task_heartbeat(taskToken=token)

    sfn.send_task_success(taskToken=token, output=json.dumps({"ok": True}))
    assert wait_done(aws, waiting_arn)["status"] == "SUCCEEDED"


def test_definitions_parse_concurrently(aws: EmbeddedAws, resources: Resources) -> None:
    # moto_executions: moto's parser kept its scopes in a list shared by every parse, and
    # executions parse their definition on their own threads (one in 1,000 failed at once).
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    definition = export_job_definition(resources.export_jobs_url, 60, 20)

    def parse(_: int) -> int:
        for _ in range(15):
            AmazonStateLanguageParser.parse(definition)
        return 15

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(parse, range(8))) == 120
