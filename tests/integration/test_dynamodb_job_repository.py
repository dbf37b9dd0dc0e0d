"""DynamoDbJobRepository against the embedded DynamoDB: the job item's exact shape,
conditional create and versioned save."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from src.application.ports.job_repository import ConditionFailed
from src.domain.export_job import CallbackRecord, ExportJob, JobError
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.task_token import TaskToken
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.local.provision import Resources
from src.local.stack import EmbeddedStack
from tests.integration.conftest import provision_for, service_client, sync_client

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CREATED = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
LATER = CREATED + timedelta(minutes=5, milliseconds=456)
TOKEN = "AAAAKgAAAAIAAAAAAAAAAb1c2d3e4f5-secret-task-token-" + "x" * 200
METADATA: dict[str, Any] = {
    "source": "ui",
    "ratio": 0.25,
    "count": 3,
    "flag": True,
    "nothing": None,
    "nested": {"list": [1, 2.5, "three", {"deep": -1.125}], "empty": {}},
}
# Attributes this service adds to the original's item (the contract: add freely, rename none).
# heartbeatDue + nextHeartbeatAt: a job with a token is on the heartbeat schedule from the start
SERVICE_ATTRIBUTES = {
    "callbackStatus",
    "callbackAttempts",
    "version",
    "heartbeatDue",
    "nextHeartbeatAt",
}


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "ddb")


@pytest.fixture(scope="module")
def ddb(embedded_stack: EmbeddedStack) -> Any:
    return sync_client(embedded_stack, "dynamodb")


@pytest.fixture
async def repository(
    embedded_stack: EmbeddedStack, resources: Resources
) -> AsyncIterator[DynamoDbJobRepository]:
    async with service_client(embedded_stack, "dynamodb") as client:
        yield DynamoDbJobRepository(client, resources.table_name)


def new_job(**overrides: Any) -> ExportJob:
    job = ExportJob.create(
        job_id=str(uuid.uuid4()).upper(),  # stored exactly as sent: case kept
        export_id="exp-1",
        user_id="user-1",
        now=CREATED,
        metadata=METADATA,
        task_token=TaskToken(TOKEN),
    )
    return replace(job, **overrides)


def raw_item(ddb: Any, resources: Resources, job_id: str) -> dict[str, Any] | None:
    item = ddb.get_item(
        TableName=resources.table_name, Key={"jobId": {"S": job_id}}, ConsistentRead=True
    ).get("Item")
    return item


def legacy_item(job_id: str, status: str) -> dict[str, Any]:
    """A job item as the NestJS service wrote it: no version, no callback attributes."""
    return {
        "jobId": {"S": job_id},
        "exportId": {"S": "legacy-export"},
        "userId": {"S": "legacy-user"},
        "status": {"S": status},
        "totalTasks": {"N": "5"},
        "completedTasks": {"N": "2"},
        "failedTasks": {"N": "0"},
        "createdAt": {"S": "2024-04-30T08:00:00.000Z"},
        "updatedAt": {"S": "2024-04-30T08:01:02.345Z"},
        "metadata": {"M": {"priority": {"N": "1.5"}}},
        "ttl": {"N": "1715068800"},  # createdAt + 7 days
        "taskToken": {"S": TOKEN},
    }


async def test_create_writes_the_original_item_shape(repository, ddb, resources) -> None:
    job = new_job()

    assert await repository.create(job) is True

    item = raw_item(ddb, resources, job.job_id)
    assert item is not None
    contract = {
        "jobId", "exportId", "userId", "status", "totalTasks", "completedTasks",
        "failedTasks", "createdAt", "updatedAt", "metadata", "ttl", "taskToken",
    }  # fmt: skip
    assert set(item) == contract | SERVICE_ATTRIBUTES
    assert item["jobId"] == {"S": job.job_id}
    assert item["exportId"] == {"S": "exp-1"}
    assert item["userId"] == {"S": "user-1"}
    assert item["status"] == {"S": "PROCESSING"}
    for counter in ("totalTasks", "completedTasks", "failedTasks"):
        assert item[counter] == {"N": "0"}
    assert item["createdAt"] == item["updatedAt"] == {"S": "2024-05-01T12:00:00.123Z"}
    assert ISO_MS_Z.match(item["createdAt"]["S"])
    assert item["ttl"] == {"N": str(int((CREATED + timedelta(days=7)).timestamp()))}
    assert item["ttl"] == {"N": "1715169600"}  # 2024-05-08T12:00:00Z, whole seconds
    assert item["taskToken"] == {"S": TOKEN}
    assert set(item["metadata"]) == {"M"}
    metadata = item["metadata"]["M"]
    assert metadata["source"] == {"S": "ui"}
    assert metadata["ratio"] == {"N": "0.25"}
    assert metadata["count"] == {"N": "3"}
    assert metadata["flag"] == {"BOOL": True}
    assert metadata["nothing"] == {"NULL": True}
    assert metadata["nested"]["M"]["empty"] == {"M": {}}
    assert item["callbackStatus"] == {"S": "PENDING"}
    assert item["version"] == {"N": "0"}
    # Absent values are absent attributes, never NULLs.
    for absent in ("completedAt", "error", "callbackError", "callbackAt"):
        assert absent not in item


async def test_job_without_token_has_no_token_attribute(repository, ddb, resources) -> None:
    job = new_job(
        task_token=None, metadata={}, callback=CallbackRecord(CallbackStatus.NOT_REQUIRED)
    )

    assert await repository.create(job) is True

    item = raw_item(ddb, resources, job.job_id)
    assert item is not None
    assert "taskToken" not in item
    assert item["metadata"] == {"M": {}}
    assert item["callbackStatus"] == {"S": "NOT_REQUIRED"}
    assert await repository.get(job.job_id) == job


async def test_second_create_of_the_same_job_id_changes_nothing(repository, ddb, resources) -> None:
    first = new_job()
    duplicate = replace(
        new_job(job_id=first.job_id, export_id="exp-OTHER", task_token=TaskToken("other-token")),
        metadata={"other": True},
    )

    assert await repository.create(first) is True
    before = raw_item(ddb, resources, first.job_id)
    assert await repository.create(duplicate) is False

    assert raw_item(ddb, resources, first.job_id) == before
    stored = await repository.get(first.job_id)
    assert stored is not None
    assert stored.export_id == "exp-1"
    assert stored.task_token == TaskToken(TOKEN)


async def test_get_round_trips_the_job(repository) -> None:
    job = new_job()
    await repository.create(job)

    loaded = await repository.get(job.job_id)

    assert loaded == job
    assert loaded is not None
    assert loaded.task_token is not None and loaded.task_token.reveal() == TOKEN
    assert loaded.metadata == METADATA
    assert isinstance(loaded.metadata["ratio"], float)
    assert loaded.created_at == CREATED
    assert await repository.get(str(uuid.uuid4())) is None


async def test_save_round_trips_every_field_and_bumps_the_version(repository, ddb, resources):
    job = new_job()
    await repository.create(job)
    finished = replace(
        job.start_polling(LATER).start_downloading(4, LATER),
        completed_tasks=3,
        failed_tasks=1,
    )
    finished = finished.fail("EXPORT_API_FAILED", "Export API: HTTP 404", LATER)
    finished = finished.callback_failed("TaskTimedOut", LATER)

    saved = await repository.save(finished)

    assert saved.version == 1
    assert await repository.get(job.job_id) == saved
    item = raw_item(ddb, resources, job.job_id)
    assert item is not None
    assert item["status"] == {"S": "FAILED"}
    assert item["totalTasks"] == {"N": "4"}
    assert (item["completedTasks"], item["failedTasks"]) == ({"N": "3"}, {"N": "1"})
    assert item["completedAt"] == item["updatedAt"] == {"S": "2024-05-01T12:05:00.579Z"}
    assert item["createdAt"] == {"S": "2024-05-01T12:00:00.123Z"}
    assert item["error"] == {
        "M": {"code": {"S": "EXPORT_API_FAILED"}, "message": {"S": "Export API: HTTP 404"}}
    }
    assert item["ttl"] == {"N": "1715169600"}  # from createdAt, not from the update
    assert item["version"] == {"N": "1"}


async def test_save_with_a_stale_version_raises_and_changes_nothing(
    repository, ddb, resources
) -> None:
    job = new_job()
    await repository.create(job)
    winner = await repository.save(job.start_polling(LATER))
    before = raw_item(ddb, resources, job.job_id)

    with pytest.raises(ConditionFailed):
        await repository.save(job.fail("PROCESSING_ERROR", "stale writer", LATER))  # version 0

    assert raw_item(ddb, resources, job.job_id) == before
    assert await repository.get(job.job_id) == winner
    # The winner's copy is current and can be saved again.
    assert (await repository.save(winner.start_downloading(2, LATER))).version == 2


async def test_save_of_a_job_that_does_not_exist_raises(repository, ddb, resources) -> None:
    job = new_job()

    with pytest.raises(ConditionFailed):
        await repository.save(job)

    assert raw_item(ddb, resources, job.job_id) is None


async def test_save_removes_attributes_that_became_none_and_keeps_unknown_ones(
    repository, ddb, resources
) -> None:
    job = new_job()
    await repository.create(job)
    with_callback = await repository.save(job.callback_failed("ThrottlingException", LATER))
    item = raw_item(ddb, resources, job.job_id)
    assert item is not None
    assert item["callbackError"] == {"S": "ThrottlingException"}
    assert "callbackAt" in item
    # Another writer (a dashboard, the original service) adds its own attribute.
    ddb.update_item(
        TableName=resources.table_name,
        Key={"jobId": {"S": job.job_id}},
        UpdateExpression="SET operatorNote = :note",
        ExpressionAttributeValues={":note": {"M": {"by": {"S": "ops"}, "n": {"N": "7"}}}},
    )

    cleared = replace(
        with_callback,
        task_token=None,
        callback=CallbackRecord(CallbackStatus.NOT_REQUIRED),
        updated_at=LATER,
    )
    await repository.save(cleared)

    item = raw_item(ddb, resources, job.job_id)
    assert item is not None
    for removed in ("taskToken", "callbackError", "callbackAt"):
        assert removed not in item
    assert item["operatorNote"] == {"M": {"by": {"S": "ops"}, "n": {"N": "7"}}}
    assert item["callbackStatus"] == {"S": "NOT_REQUIRED"}
    assert item["version"] == {"N": "2"}


async def test_item_written_by_the_original_service_can_be_read_and_saved(
    repository, ddb, resources
) -> None:
    job_id = str(uuid.uuid4())
    ddb.put_item(TableName=resources.table_name, Item=legacy_item(job_id, "DOWNLOADING"))

    legacy = await repository.get(job_id)

    assert legacy is not None
    assert legacy.version == 0
    assert legacy.status is JobStatus.DOWNLOADING
    assert (legacy.total_tasks, legacy.completed_tasks, legacy.failed_tasks) == (5, 2, 0)
    assert legacy.created_at == datetime(2024, 4, 30, 8, 0, tzinfo=UTC)
    assert legacy.metadata == {"priority": 1.5}
    assert legacy.task_token == TaskToken(TOKEN)
    assert legacy.error is None and legacy.completed_at is None

    saved = await repository.save(replace(legacy, completed_tasks=3, updated_at=LATER))

    assert saved.version == 1
    item = raw_item(ddb, resources, job_id)
    assert item is not None
    assert item["completedTasks"] == {"N": "3"}
    assert item["version"] == {"N": "1"}
    assert item["ttl"] == {"N": "1715068800"}  # createdAt + 7 days
    assert item["taskToken"] == {"S": TOKEN}
    # A second writer still holding the unversioned copy now loses.
    with pytest.raises(ConditionFailed):
        await repository.save(replace(legacy, failed_tasks=1, updated_at=LATER))
    assert raw_item(ddb, resources, job_id) == item


async def test_error_record_round_trips(repository) -> None:
    job = new_job()
    await repository.create(job)
    failed = await repository.save(job.fail("EXPORT_EXPIRED", "Export expired", LATER))

    loaded = await repository.get(job.job_id)

    assert loaded == failed
    assert loaded is not None and loaded.error == JobError("EXPORT_EXPIRED", "Export expired")


async def test_save_never_moves_a_terminal_job_to_another_status(
    repository, ddb, resources
) -> None:
    # Rolling deployment: an item of the original service (no version) is read by this
    # service, then the original service, still running, finishes the job.
    job_id = str(uuid.uuid4())
    ddb.put_item(TableName=resources.table_name, Item=legacy_item(job_id, "DOWNLOADING"))
    stale = await repository.get(job_id)
    assert stale is not None and stale.version == 0
    ddb.update_item(
        TableName=resources.table_name,
        Key={"jobId": {"S": job_id}},
        UpdateExpression="SET #s = :done, completedTasks = :five",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":done": {"S": "COMPLETED"}, ":five": {"N": "5"}},
    )

    with pytest.raises(ConditionFailed):
        await repository.save(replace(stale, completed_tasks=3, updated_at=LATER))

    item = raw_item(ddb, resources, job_id)
    assert item is not None
    assert item["status"] == {"S": "COMPLETED"}


async def test_a_job_left_polling_by_the_original_is_adopted_then_polled(
    repository, ddb, resources
) -> None:
    job_id = str(uuid.uuid4())
    ddb.put_item(TableName=resources.table_name, Item=legacy_item(job_id, "POLLING"))
    now = datetime.now(UTC)

    async def claimed() -> list[str]:
        found = await repository.claim_due_for_polling(now, "p", now + timedelta(minutes=1), 100)
        return [j.job_id for j in found]

    assert job_id not in await claimed()  # not on the schedule the pollers read
    assert await repository.adopt_unscheduled(now, 100) >= 1
    assert await repository.adopt_unscheduled(now, 100) == 0  # once
    assert job_id in await claimed()
    stored = await repository.get(job_id)
    assert stored is not None and (stored.lease_owner, stored.status) == ("p", JobStatus.POLLING)


async def test_the_due_index_holds_polling_and_dispatching_jobs_only(
    repository, ddb, resources
) -> None:
    job = new_job()
    await repository.create(job)
    assert "dueKind" not in raw_item(ddb, resources, job.job_id)
    now = datetime.now(UTC)
    job = await repository.save(job.start_polling(now))
    item = raw_item(ddb, resources, job.job_id)
    assert (item["dueKind"]["S"], item["dueAt"]["S"]) == ("POLL", item["nextPollAt"]["S"])
    until = now + timedelta(minutes=2)
    job = await repository.save(job.start_dispatching(3, "d", until, now))
    item = raw_item(ddb, resources, job.job_id)
    assert (item["dueKind"]["S"], item["dueAt"]["S"]) == ("DISPATCH", item["leaseExpiresAt"]["S"])
    await repository.save(job.fail("PROCESSING_ERROR", "x", now))
    item = raw_item(ddb, resources, job.job_id)
    assert "dueKind" not in item and "dueAt" not in item


async def test_heartbeats_are_read_from_their_schedule_only_when_due(
    repository, ddb, resources
) -> None:
    now = datetime.now(UTC) + timedelta(days=1)  # later than anything other tests left due
    with_token = new_job()
    without = replace(new_job(), task_token=None)
    for job in (with_token, without):
        await repository.create(job)

    async def due_at(at: datetime) -> set[str]:
        found = await repository.claim_due_heartbeats(at, at + timedelta(minutes=1), 1000)
        return {j.job_id for j in found}

    first = await due_at(now)
    assert with_token.job_id in first and without.job_id not in first
    assert with_token.job_id not in await due_at(now + timedelta(seconds=30))  # moved on
    assert with_token.job_id in await due_at(now + timedelta(minutes=1))
    stored = await repository.get(with_token.job_id)
    assert stored is not None
    await repository.save(stored.fail("PROCESSING_ERROR", "x", now))
    assert "heartbeatDue" not in raw_item(ddb, resources, with_token.job_id)
    assert with_token.job_id not in await due_at(now + timedelta(hours=1))


async def test_a_job_with_a_token_left_by_the_original_is_adopted_for_heartbeats(
    repository, ddb, resources
) -> None:
    job_id = str(uuid.uuid4())
    ddb.put_item(TableName=resources.table_name, Item=legacy_item(job_id, "DOWNLOADING"))
    now = datetime.now(UTC) + timedelta(days=2)
    found = await repository.claim_due_heartbeats(now, now + timedelta(minutes=1), 1000)
    assert job_id not in {j.job_id for j in found}
    assert await repository.adopt_unscheduled(now, 1000) >= 1
    found = await repository.claim_due_heartbeats(now, now + timedelta(minutes=1), 1000)
    assert job_id in {j.job_id for j in found}
    assert "dueKind" not in raw_item(ddb, resources, job_id)  # downloading: nothing to poll


async def test_the_reapers_queries_read_at_most_their_batch(
    embedded_stack: EmbeddedStack,
) -> None:
    """Periodic rounds read their batch, not a whole status partition (2,000 jobs in flight
    made one of these calls read 384 items when it paged through every match)."""
    own = provision_for(embedded_stack, "reaperreads")
    async with service_client(embedded_stack, "dynamodb") as client:
        repository = DynamoDbJobRepository(client, own.table_name)
        for _ in range(30):
            job = new_job()
            assert await repository.create(job)
            polling = await repository.save(job.start_polling(CREATED))
            await repository.save(polling.start_downloading(3, CREATED))
        embedded_stack.aws.reset_calls()
        later = CREATED + timedelta(days=2)

        stalled = await repository.list_stalled(JobStatus.DOWNLOADING, later, 10)
        overdue = await repository.list_overdue(JobStatus.DOWNLOADING, later, 10)
        adopted = await repository.adopt_unscheduled(later, 10)

    assert len(stalled) == 10 and len(overdue) == 10 and adopted >= 0
    reads = embedded_stack.aws.reads_by("test")["Query"]
    assert reads["max_items"] <= 10, reads
