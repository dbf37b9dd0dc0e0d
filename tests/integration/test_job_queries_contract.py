"""What the admin API lists: one contract for the in-memory fake and the DynamoDB
adapter. Jobs newest first through the indexes, every page bounded, each job exactly once
across pages, cursors tied to their filters; a job's files in order, a page at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from src.application.ports.job_queries import BadCursor
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.infrastructure.dynamodb.job_queries import DynamoDbJobQueries
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.infrastructure.dynamodb.task_repository import DynamoDbTaskRepository
from src.local.stack import EmbeddedStack
from tests.fakes import T0, InMemoryJobQueries, InMemoryJobs, InMemoryTasks
from tests.integration.conftest import provision_for, service_client
from tests.integration.test_task_repository_contract import a_task, done, downloading, failed


@pytest.fixture(params=["fake", "dynamodb"])
async def stores(
    request: pytest.FixtureRequest, embedded_stack: EmbeddedStack
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(jobs, tasks, queries) on an empty table: listings without filters see it all."""
    if request.param == "fake":
        jobs = InMemoryJobs()
        tasks = InMemoryTasks(jobs)
        yield jobs, tasks, InMemoryJobQueries(jobs, tasks)
        return
    resources = provision_for(embedded_stack, "queries")
    async with service_client(embedded_stack, "dynamodb") as client:
        table, tasks_table = resources.table_name, resources.tasks_table_name
        yield (
            DynamoDbJobRepository(client, table, tasks_table),
            DynamoDbTaskRepository(client, tasks_table, table),
            DynamoDbJobQueries(client, table, tasks_table),
        )


async def a_job(jobs: Any, second: int, status: JobStatus, user: str = "u") -> ExportJob:
    """A job created `second` seconds after T0, then moved to `status`."""
    now = T0 + timedelta(seconds=second)
    job = ExportJob.create(job_id=str(uuid.uuid4()), export_id="e", user_id=user, now=now)
    assert await jobs.create(job)
    if status is JobStatus.PROCESSING:
        return job
    job = await jobs.save(job.start_polling(now))
    if status is JobStatus.POLLING:
        return job
    if status is JobStatus.FAILED:
        return await jobs.save(job.fail("ExportFailed", "no", now))
    job = await jobs.save(job.start_downloading(0, now))
    if status is JobStatus.COMPLETED:
        return await jobs.save(job.complete(now))
    return job


async def every_page(queries: Any, limit: int, **filters: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await queries.list_jobs(limit=limit, cursor=cursor, **filters)
        pages.append([job.job_id for job in page.jobs])
        assert len(page.jobs) <= limit
        if page.cursor is None:
            return pages
        cursor = page.cursor
        assert len(pages) < 50


STATUSES = [JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING,
            JobStatus.COMPLETED, JobStatus.FAILED]  # fmt: skip


async def test_all_jobs_newest_first_across_statuses_each_exactly_once(stores: Any) -> None:
    jobs, _tasks, queries = stores
    # created in an order that interleaves the statuses' partitions
    made = [await a_job(jobs, i, STATUSES[(i * 3) % len(STATUSES)]) for i in range(13)]
    newest_first = [job.job_id for job in reversed(made)]

    for limit in (1, 3, 5, 13, 50):
        pages = await every_page(queries, limit)
        assert [job_id for page in pages for job_id in page] == newest_first, limit
        assert all(len(page) == limit for page in pages[:-1])


async def test_by_status_newest_first_in_pages(stores: Any) -> None:
    jobs, _tasks, queries = stores
    made = [await a_job(jobs, i, STATUSES[i % 2]) for i in range(9)]
    polling = [j.job_id for j in reversed(made) if j.status is JobStatus.POLLING]

    pages = await every_page(queries, 2, status=JobStatus.POLLING)

    assert [job_id for page in pages for job_id in page] == polling
    page = await queries.list_jobs(status=JobStatus.CANCELLED)
    assert page.jobs == [] and page.cursor is None


async def test_by_user_and_status(stores: Any) -> None:
    jobs, _tasks, queries = stores
    user = f"user-{uuid.uuid4().hex[:6]}"
    mine = [await a_job(jobs, i, STATUSES[i % 3], user) for i in range(10)]
    await a_job(jobs, 20, JobStatus.POLLING, "someone-else")

    pages = await every_page(queries, 3, user_id=user)
    assert [j for page in pages for j in page] == [j.job_id for j in reversed(mine)]

    pages = await every_page(queries, 2, user_id=user, status=JobStatus.POLLING)
    expected = [j.job_id for j in reversed(mine) if j.status is JobStatus.POLLING]
    assert [j for page in pages for j in page] == expected


async def test_a_cursor_only_continues_its_own_query(stores: Any) -> None:
    jobs, _tasks, queries = stores
    for i in range(3):
        await a_job(jobs, i, JobStatus.POLLING)
    page = await queries.list_jobs(status=JobStatus.POLLING, limit=1)
    assert page.cursor is not None

    with pytest.raises(BadCursor):
        await queries.list_jobs(status=JobStatus.FAILED, limit=1, cursor=page.cursor)
    with pytest.raises(BadCursor):
        await queries.list_jobs(limit=1, cursor=page.cursor)
    with pytest.raises(BadCursor):
        await queries.list_jobs(limit=1, cursor="not a cursor!")


async def test_a_jobs_recorded_files_in_order_without_the_counters_item(stores: Any) -> None:
    jobs, tasks, queries = stores
    job, files = await downloading(jobs, tasks, 5)
    for task in (files[3], files[0], files[4]):
        outcome = done(task) if task.index != 4 else failed(task)
        await tasks.record_result(outcome, "w", leased=False)

    first = await queries.list_tasks(job.job_id, limit=2)
    assert [t.index for t in first.tasks] == [0, 3]
    assert first.cursor is not None
    rest = await queries.list_tasks(job.job_id, limit=2, cursor=first.cursor)
    assert [(t.index, t.status.value) for t in rest.tasks] == [(4, "FAILED")]
    assert (
        rest.cursor is None
        or (await queries.list_tasks(job.job_id, limit=2, cursor=rest.cursor)).tasks == []
    )
    assert (await queries.list_tasks(str(uuid.uuid4()))).tasks == []
    assert a_task(job.job_id, 0).task_id == first.tasks[0].task_id


async def test_listed_downloading_jobs_show_their_files_as_counted(stores: Any) -> None:
    jobs, tasks, queries = stores
    job, files = await downloading(jobs, tasks, 3)
    await tasks.record_result(done(files[0]), "w", leased=False)
    await tasks.record_result(failed(files[1]), "w", leased=False)

    [listed] = (await queries.list_jobs(status=JobStatus.DOWNLOADING)).jobs
    assert listed.job_id == job.job_id
    assert (listed.completed_tasks, listed.failed_tasks, listed.pending_tasks) == (1, 1, 1)
    [merged] = [j for j in (await queries.list_jobs()).jobs if j.job_id == job.job_id]
    assert (merged.completed_tasks, merged.failed_tasks) == (1, 1)


async def test_jobs_created_in_the_same_millisecond_are_each_listed_once(stores: Any) -> None:
    jobs, _tasks, queries = stores
    made = [await a_job(jobs, 7, STATUSES[i % len(STATUSES)]) for i in range(9)]
    for limit in (1, 2, 4):
        listed = [job_id for page in await every_page(queries, limit) for job_id in page]
        assert sorted(listed) == sorted(j.job_id for j in made), limit


@pytest.mark.parametrize(
    "forged",
    [
        {"q": "all", "k": [1]},
        {"q": "all", "k": {"COMPLETED": "x"}},
        {"q": "all", "k": {"NOPE": None}},
        {"q": "status:POLLING", "k": {"jobId": {"S": "a"}}},
        {
            "q": "status:POLLING",
            "k": {"jobId": {"N": "1"}, "status": {"S": "P"}, "createdAt": {"S": "c"}},
        },
    ],
)
async def test_a_forged_cursor_is_refused_as_a_bad_cursor(stores: Any, forged: Any) -> None:
    import base64
    import json

    _jobs, _tasks, queries = stores
    if isinstance(queries, InMemoryJobQueries):
        pytest.skip("the fake's cursors are offsets: nothing to forge in its format")
    cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    status = JobStatus.POLLING if forged["q"].startswith("status") else None
    with pytest.raises(BadCursor):
        await queries.list_jobs(status=status, cursor=cursor)
