"""Recording a file's result, leased or not: one contract for the in-memory fake and the
DynamoDB adapter. Each result counts once, whoever records it; exactly one recorder is
told it counted the job's last file; counting never writes the job item."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from src.application.ports.task_repository import RecordOutcome
from src.domain.download_task import DownloadTask, TaskStatus, task_id_for
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
            DynamoDbJobRepository(client, resources.table_name, resources.tasks_table_name),
            DynamoDbTaskRepository(client, resources.tasks_table_name, resources.table_name),
        )


def a_task(job_id: str, index: int) -> DownloadTask:
    return DownloadTask(
        job_id=job_id,
        task_id=task_id_for(index),
        index=index,
        url=f"https://files.example/{index}",
        file_name=f"f{index}.bin",
        output_key=f"exports/{job_id}/{index}_f{index}.bin",
        created_at=T0,
        expected_size=10,
    )


async def downloading(
    jobs: Any, tasks: Any, files: int, *, counted: bool = True, metadata: Any = None
) -> tuple[ExportJob, list[DownloadTask]]:
    """A DOWNLOADING job of `files` files, none recorded yet. `counted` False: dispatched
    by an earlier version (no counters of its own: files count on the job item)."""
    job = ExportJob.create(
        job_id=str(uuid.uuid4()), export_id="e", user_id="u", metadata=metadata or {}, now=T0
    )
    assert await jobs.create(job)
    job = await jobs.save(job.start_polling(T0))
    job = await jobs.save(job.start_downloading(files, T0))
    if counted:
        await tasks.start_counting(job.job_id, files, T0)
    return job, [a_task(job.job_id, i) for i in range(files)]


def done(task: DownloadTask) -> DownloadTask:
    return task.start_unleased().succeed(size=10, sha256="a" * 64, now=T0)


def failed(task: DownloadTask) -> DownloadTask:
    return task.start_unleased().fail("HTTP 404", now=T0)


async def counters(jobs: Any, job_id: str) -> tuple[int, int]:
    stored = await jobs.get(job_id)
    return stored.completed_tasks, stored.failed_tasks


async def test_an_unleased_result_counts_once(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, [record, _other] = await downloading(jobs, tasks, 2)
    assert (
        await tasks.record_result(done(record), "w1", leased=False)
    ).outcome is RecordOutcome.COUNTED
    assert (
        await tasks.record_result(done(record), "w2", leased=False)
    ).outcome is RecordOutcome.DUPLICATE
    assert await counters(jobs, job.job_id) == (1, 0)
    assert (await tasks.get(job.job_id, record.task_id)).status is TaskStatus.COMPLETED


async def test_an_unleased_result_is_recorded_over_a_lease_and_the_holder_then_counts_nothing(
    repos: tuple[Any, Any],
):
    jobs, tasks = repos
    job, [record, _other] = await downloading(jobs, tasks, 2)
    claimed = await tasks.claim(record, "holder", T0 + timedelta(minutes=1), T0)
    assert claimed is not None
    assert (
        await tasks.record_result(done(record), "other", leased=False)
    ).outcome is RecordOutcome.COUNTED
    finished = claimed.succeed(size=10, sha256="b" * 64, now=T0)
    assert (await tasks.record_result(finished, "holder")).outcome is RecordOutcome.DUPLICATE
    assert await counters(jobs, job.job_id) == (1, 0)


async def test_the_recorder_of_the_last_file_is_told_so_and_no_one_else(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, records = await downloading(jobs, tasks, 3)
    recorded = [
        await tasks.record_result(done(records[0]), "w", leased=False),
        await tasks.record_result(failed(records[2]), "w", leased=False),
        await tasks.record_result(done(records[1]), "w", leased=False),
        await tasks.record_result(done(records[1]), "again", leased=False),
    ]
    assert recorded[2].final_counts == (2, 1)  # told to the last one: nobody reads them
    assert [r.outcome for r in recorded] == [
        RecordOutcome.COUNTED,
        RecordOutcome.COUNTED,
        RecordOutcome.COUNTED_LAST,
        RecordOutcome.DUPLICATE,
    ]
    assert await counters(jobs, job.job_id) == (2, 1)


async def test_files_recorded_at_once_count_once_each_with_one_last(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, records = await downloading(jobs, tasks, 12)
    twice = [done(r) for r in records] + [done(r) for r in records[:6]]  # redeliveries too
    recorded = await asyncio.gather(
        *(tasks.record_result(t, f"w{n}", leased=False) for n, t in enumerate(twice))
    )
    outcomes = [r.outcome for r in recorded]
    assert outcomes.count(RecordOutcome.COUNTED_LAST) == 1
    assert outcomes.count(RecordOutcome.COUNTED) == 11
    assert outcomes.count(RecordOutcome.DUPLICATE) == 6
    assert await counters(jobs, job.job_id) == (12, 0)


async def test_counting_a_file_never_writes_the_job_item(repos: tuple[Any, Any]):
    jobs, tasks = repos
    big = {"notes": "x" * 100_000}  # what a file's write costs must not depend on this
    job, records = await downloading(jobs, tasks, 2, metadata=big)
    before = await jobs.get(job.job_id)
    await tasks.record_result(done(records[0]), "w", leased=False)
    after = await jobs.get(job.job_id)
    assert after.version == before.version
    assert (after.completed_tasks, after.metadata) == (1, big)


async def test_a_job_dispatched_by_an_earlier_version_counts_on_the_job_item(
    repos: tuple[Any, Any],
):
    jobs, tasks = repos
    job, records = await downloading(jobs, tasks, 2, counted=False)
    first = await tasks.record_result(done(records[0]), "w", leased=False)
    assert first.outcome is RecordOutcome.COUNTED_MAYBE_LAST  # CompleteJob's read tells
    again = await tasks.record_result(done(records[0]), "w", leased=False)
    assert again.outcome is RecordOutcome.DUPLICATE
    assert await counters(jobs, job.job_id) == (1, 0)


async def test_opening_the_counters_again_keeps_what_was_counted(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, records = await downloading(jobs, tasks, 2)
    await tasks.record_result(done(records[0]), "w", leased=False)
    await tasks.start_counting(job.job_id, 2, T0)
    assert await counters(jobs, job.job_id) == (1, 0)
    last = await tasks.record_result(done(records[1]), "w", leased=False)
    assert last.outcome is RecordOutcome.COUNTED_LAST


async def test_a_claim_writes_the_record_a_task_does_not_have_yet(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, [record] = await downloading(jobs, tasks, 1)
    assert await tasks.get(job.job_id, record.task_id) is None  # none until taken
    until = T0 + timedelta(minutes=1)
    claimed = await tasks.claim(record, "w1", until, T0)
    assert claimed is not None
    assert (claimed.status, claimed.lease_owner, claimed.attempts) == (TaskStatus.RUNNING, "w1", 1)
    assert (claimed.url, claimed.output_key, claimed.expected_size) == (
        record.url,
        record.output_key,
        10,
    )
    assert await tasks.claim(record, "w2", until, T0) is None  # held
    assert await tasks.list_for_job(job.job_id) == [claimed]  # the counters are not a task


async def test_finished_indexes_span_task_ids_of_different_widths(repos: tuple[Any, Any]):
    jobs, tasks = repos
    job, _ = await downloading(jobs, tasks, 100_002)
    for index in (7, 99_998, 99_999, 100_000, 100_001):
        await tasks.record_result(done(a_task(job.job_id, index)), "w", leased=False)
    running = a_task(job.job_id, 8)
    await tasks.claim(running, "w", T0 + timedelta(minutes=1), T0)
    assert await tasks.finished_indexes(job.job_id, 0, 100) == {7}
    assert await tasks.finished_indexes(job.job_id, 99_990, 100_002) == {
        99_998,
        99_999,
        100_000,
        100_001,
    }
    assert await tasks.finished_indexes(job.job_id, 99_999, 100_001) == {99_999, 100_000}


async def finished_with_failures(
    jobs: Any, tasks: Any, files: int, failing: int
) -> tuple[ExportJob, list[DownloadTask]]:
    """A COMPLETED job of `files` files whose last `failing` failed, as CompleteJob
    leaves it; and its failed tasks as recorded."""
    job, all_tasks = await downloading(jobs, tasks, files)
    for task in all_tasks:
        outcome = failed(task) if task.index >= files - failing else done(task)
        await tasks.record_result(outcome, "w", leased=False)
    shown = await jobs.get(job.job_id)
    finished = await jobs.save(shown.complete(T0))
    recorded = {t.task_id: t for t in await tasks.list_for_job(job.job_id)}
    return finished, [recorded[t.task_id] for t in all_tasks[files - failing :]]


@pytest.mark.parametrize("failing", [2, 150])
async def test_a_retry_reopens_the_job_and_counts_the_retried_files_once(
    repos: tuple[Any, Any], failing: int
):
    jobs, tasks = repos
    files = failing + 3
    job, failures = await finished_with_failures(jobs, tasks, files, failing)
    assert (job.status.value, job.completed_tasks, job.failed_tasks) == ("COMPLETED", 3, failing)
    later = T0 + timedelta(minutes=5)

    retried = [t.retried(later) for t in failures]
    reopened = await tasks.reopen_failed(job, job.reopen_failed(failing, later), retried)

    shown = await jobs.get(job.job_id)
    assert shown.status.value == "DOWNLOADING" and shown.version == reopened.version
    assert (shown.completed_tasks, shown.failed_tasks, shown.pending_tasks) == (3, 0, failing)
    assert shown.completed_at is None and shown.error is None
    records = {t.task_id: t for t in await tasks.list_for_job(job.job_id)}
    assert all(records[t.task_id].status.value == "PENDING" for t in failures)
    assert all(records[t.task_id].attempts == 0 and records[t.task_id].error is None
               for t in failures)  # fmt: skip

    outcomes = [(await tasks.record_result(done(t), "w", leased=False)).outcome for t in retried]
    assert (
        outcomes.count(RecordOutcome.COUNTED_LAST) == 1
        and outcomes[-1] is RecordOutcome.COUNTED_LAST
    )
    again = await tasks.record_result(done(retried[0]), "w", leased=False)
    assert again.outcome is RecordOutcome.DUPLICATE


async def test_a_retry_of_a_job_that_changed_meanwhile_writes_nothing(repos: tuple[Any, Any]):
    from src.application.ports.job_repository import ConditionFailed

    jobs, tasks = repos
    job, failures = await finished_with_failures(jobs, tasks, 4, 2)
    stale = job
    await jobs.save(job.callback_failed("ThrottlingException", T0, retryable=True))
    later = T0 + timedelta(minutes=1)

    with pytest.raises(ConditionFailed):
        await tasks.reopen_failed(
            stale, stale.reopen_failed(2, later), [t.retried(later) for t in failures]
        )

    shown = await jobs.get(job.job_id)
    assert shown.status.value == "COMPLETED" and shown.failed_tasks == 2
    records = await tasks.list_for_job(job.job_id)
    assert [t.status.value for t in records].count("FAILED") == 2
