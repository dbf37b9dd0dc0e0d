"""Recording a file's result, leased or not: one contract for the in-memory fake and the
DynamoDB adapter. Each result counts once, whoever records it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.export_job import ExportJob
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.infrastructure.dynamodb.task_repository import DynamoDbTaskRepository
from src.local.provision import Resources
from src.local.stack import EmbeddedStack
from tests.fakes import T0, InMemoryJobs, InMemoryTasks
from tests.integration.conftest import provision_for, service_client


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "taskrec")


@pytest.fixture(params=["fake", "dynamodb"])
async def repos(
    request: pytest.FixtureRequest, embedded_stack: EmbeddedStack, resources: Resources
) -> AsyncIterator[tuple[Any, Any]]:
    if request.param == "fake":
        jobs = InMemoryJobs()
        yield jobs, InMemoryTasks(jobs)
        return
    async with service_client(embedded_stack, "dynamodb") as client:
        yield (
            DynamoDbJobRepository(client, resources.table_name),
            DynamoDbTaskRepository(client, resources.tasks_table_name, resources.table_name),
        )


def a_task(job_id: str, index: int) -> DownloadTask:
    return DownloadTask(
        job_id=job_id,
        task_id=f"{index:05d}",
        index=index,
        url=f"https://files.example/{index}",
        file_name=f"f{index}.bin",
        output_key=f"exports/{job_id}/{index}_f{index}.bin",
        created_at=T0,
        expected_size=10,
    )


async def downloading(jobs: Any, tasks: Any, files: int) -> tuple[ExportJob, list[DownloadTask]]:
    job = ExportJob.create(job_id=str(uuid.uuid4()), export_id="e", user_id="u", now=T0)
    assert await jobs.create(job)
    job = await jobs.save(job.start_polling(T0))
    records = [a_task(job.job_id, i) for i in range(files)]
    await tasks.add_all(records)
    job = await jobs.save(job.start_downloading(files, T0))
    return job, records


def done(task: DownloadTask) -> DownloadTask:
    return task.start_unleased().succeed(size=10, sha256="a" * 64, now=T0)


async def test_an_unleased_result_counts_once(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, [record, _other] = await downloading(jobs, tasks, 2)
    assert await tasks.record_result(done(record), "w1", leased=False) is True
    assert await tasks.record_result(done(record), "w2", leased=False) is False
    stored = await jobs.get(job.job_id)
    assert (stored.completed_tasks, stored.failed_tasks) == (1, 0)
    assert (await tasks.get(job.job_id, record.task_id)).status is TaskStatus.COMPLETED


async def test_an_unleased_result_is_recorded_over_a_lease_and_the_holder_then_counts_nothing(
    repos: tuple[Any, Any],
):
    jobs, tasks = repos
    job, [record] = await downloading(jobs, tasks, 1)
    claimed = await tasks.claim(record, "holder", T0 + timedelta(minutes=1), T0)
    assert claimed is not None
    assert await tasks.record_result(done(record), "other", leased=False) is True
    finished = claimed.succeed(size=10, sha256="b" * 64, now=T0)
    assert await tasks.record_result(finished, "holder") is False
    stored = await jobs.get(job.job_id)
    assert (stored.completed_tasks, stored.failed_tasks) == (1, 0)


async def test_adding_records_again_returns_the_stored_ones_and_changes_none(
    repos: tuple[Any, Any],
):
    jobs, tasks = repos
    job, records = await downloading(jobs, tasks, 3)
    await tasks.record_result(done(records[1]), "w", leased=False)
    again = await tasks.add_all([a_task(job.job_id, i) for i in range(4)])
    assert [(t.index, t.status) for t in again] == [
        (0, TaskStatus.PENDING),
        (1, TaskStatus.COMPLETED),  # as stored, not as asked
        (2, TaskStatus.PENDING),
        (3, TaskStatus.PENDING),  # new
    ]
    assert again[1].sha256 == "a" * 64
    stored = await tasks.list_for_job(job.job_id)
    assert [t.status for t in stored] == [
        TaskStatus.PENDING,
        TaskStatus.COMPLETED,
        TaskStatus.PENDING,
        TaskStatus.PENDING,
    ]
