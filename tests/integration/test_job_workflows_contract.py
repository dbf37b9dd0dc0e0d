"""The job repository's workflow sets (waiting tokens, answered, heartbeats stopped): one
contract, run against the in-memory fake and the DynamoDB adapter alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from src.application.ports.job_repository import AttachOutcome, ConditionFailed
from src.domain.dispatch_progress import DispatchProgress
from src.domain.export_job import ExportJob
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.polling import PollPolicy
from src.domain.task_token import TaskToken
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.local.provision import Resources
from src.local.stack import EmbeddedStack
from tests.fakes import T0, InMemoryJobs
from tests.integration.conftest import provision_for, service_client

FIRST = TaskToken("FIRST-" + "a" * 60)
SECOND = TaskToken("SECOND-" + "b" * 60)
THIRD = TaskToken("THIRD-" + "c" * 60)


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "jobsets")


@pytest.fixture(params=["fake", "dynamodb"])
async def jobs(
    request: pytest.FixtureRequest, embedded_stack: EmbeddedStack, resources: Resources
) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield InMemoryJobs()
        return
    async with service_client(embedded_stack, "dynamodb") as client:
        yield DynamoDbJobRepository(client, resources.table_name)


async def stored_job(jobs: Any, token: TaskToken | None = FIRST) -> ExportJob:
    job = ExportJob.create(
        job_id=str(uuid.uuid4()), export_id="e", user_id="u", now=T0, task_token=token
    )
    assert await jobs.create(job)
    saved = await jobs.save(job.start_polling(T0))
    return saved


async def test_attach_adds_a_waiting_workflow_and_moves_the_version(jobs: Any):
    job = await stored_job(jobs)
    assert await jobs.attach_workflow(job.job_id, SECOND, 10) is AttachOutcome.ATTACHED
    read = await jobs.get(job.job_id)
    assert read.waiting_tokens == (SECOND,)
    assert read.tokens() == (FIRST, SECOND)
    assert read.version > job.version
    with pytest.raises(ConditionFailed):  # a terminal write from the old snapshot is refused
        await jobs.save(job.complete(T0))


async def test_attach_is_idempotent_and_bounded(jobs: Any):
    job = await stored_job(jobs)
    await jobs.attach_workflow(job.job_id, SECOND, 1)
    await jobs.attach_workflow(job.job_id, SECOND, 2)
    assert (await jobs.get(job.job_id)).waiting_tokens == (SECOND,)
    assert await jobs.attach_workflow(job.job_id, THIRD, 1) is AttachOutcome.REFUSED
    assert (await jobs.get(job.job_id)).waiting_tokens == (SECOND,)


async def test_attach_to_a_job_without_a_token_makes_its_answer_due(jobs: Any):
    job = await stored_job(jobs, token=None)
    assert job.callback.status is CallbackStatus.NOT_REQUIRED
    await jobs.attach_workflow(job.job_id, SECOND, 10)
    read = await jobs.get(job.job_id)
    assert read.callback.status is CallbackStatus.PENDING
    assert read.has_task_token()


async def test_attach_to_a_finished_job_is_refused(jobs: Any):
    job = await stored_job(jobs)
    await jobs.save(job.complete(T0))
    assert await jobs.attach_workflow(job.job_id, SECOND, 10) is AttachOutcome.REFUSED
    assert (await jobs.get(job.job_id)).waiting_tokens == ()


async def test_answered_and_stopped_digests_only_grow_and_survive_saves(jobs: Any):
    job = await stored_job(jobs)
    await jobs.attach_workflow(job.job_id, SECOND, 10)
    await jobs.mark_answered(job.job_id, [FIRST.digest()])
    await jobs.stop_heartbeats(job.job_id, [SECOND.digest()])
    read = await jobs.get(job.job_id)
    saved = await jobs.save(read.move_to(JobStatus.DOWNLOADING, T0))  # a stale-free save
    await jobs.mark_answered(job.job_id, [])
    read = await jobs.get(job.job_id)
    assert read.answered == {FIRST.digest()}
    assert read.heartbeat_stopped == {SECOND.digest()}
    assert read.heartbeat_tokens() == ()
    assert read.version == saved.version


async def test_heartbeats_are_claimed_for_a_job_whose_only_workflow_came_later(jobs: Any):
    job = await stored_job(jobs, token=None)
    await jobs.attach_workflow(job.job_id, SECOND, 10)
    claimed = await jobs.claim_due_heartbeats(T0, T0, 1000)
    assert job.job_id in {c.job_id for c in claimed}


async def test_a_polling_claim_counts_the_attempt_and_a_failed_one_keeps_its_error(jobs: Any):
    job = await stored_job(jobs)
    now = T0 + timedelta(seconds=1)
    until = now + timedelta(seconds=60)

    async def claim(at: Any, owner: str) -> ExportJob | None:
        found = await jobs.claim_due_for_polling(at, owner, at + timedelta(seconds=60), 1000)
        return next((j for j in found if j.job_id == job.job_id), None)

    claimed = await claim(now, "a")
    assert claimed is not None and claimed.poll is not None
    assert (claimed.poll.attempts, claimed.lease_owner) == (1, "a")
    assert await claim(now, "b") is None  # leased
    retried = await claim(until + timedelta(seconds=1), "b")  # "a" died: its lease ran out
    assert retried is not None and retried.poll is not None and retried.poll.attempts == 2
    await jobs.save(retried.polled(until, PollPolicy(), "PublishFailed: refused"))
    read = await jobs.get(job.job_id)
    assert read.poll.attempts == 2
    assert read.poll.last_error == "PublishFailed: refused"
    assert read.lease_owner is None


async def test_a_polling_claim_with_a_heartbeat_moves_the_next_heartbeat_with_it(jobs: Any):
    """The poller heartbeats the jobs it claims: the claim itself takes the heartbeat, so
    the heartbeat round finds the job due only at `heartbeat_at` (without it: at once)."""
    at = T0 + timedelta(seconds=1)
    until, beat_at = at + timedelta(seconds=60), at + timedelta(seconds=60)

    async def claimed_for_polling(job: ExportJob, heartbeat_at: Any) -> None:
        found = await jobs.claim_due_for_polling(at, "p", until, 1000, heartbeat_at=heartbeat_at)
        assert job.job_id in {j.job_id for j in found}

    async def heartbeats_due(now: Any) -> set[str]:
        claimed = await jobs.claim_due_heartbeats(now, now + timedelta(seconds=60), 1000)
        return {c.job_id for c in claimed}

    beaten = await stored_job(jobs)
    await claimed_for_polling(beaten, beat_at)
    unbeaten = await stored_job(jobs)
    await claimed_for_polling(unbeaten, None)
    due = await heartbeats_due(at)
    assert beaten.job_id not in due
    assert unbeaten.job_id in due
    assert beaten.job_id in await heartbeats_due(beat_at)


async def test_a_renewed_poll_lease_keeps_the_job_from_others_and_only_its_owner_renews(
    jobs: Any,
):
    job = await stored_job(jobs)
    at = T0 + timedelta(seconds=1)
    found = await jobs.claim_due_for_polling(at, "a", at + timedelta(seconds=60), 1000)
    [claimed] = [j for j in found if j.job_id == job.job_id]
    renewed_until = at + timedelta(seconds=100)
    assert await jobs.renew_poll(job.job_id, "a", renewed_until)
    assert not await jobs.renew_poll(job.job_id, "b", at + timedelta(seconds=200))
    later = at + timedelta(seconds=61)  # the claim's own lease is over, the renewed one not
    found = await jobs.claim_due_for_polling(later, "b", later + timedelta(seconds=60), 1000)
    assert job.job_id not in {j.job_id for j in found}
    saved = await jobs.save(claimed.polled(later, PollPolicy()))  # its version still holds
    assert saved.lease_owner is None
    assert not await jobs.renew_poll(job.job_id, "a", renewed_until)  # released: not its


async def test_a_job_created_with_its_first_poll_scheduled_is_claimed_into_polling(jobs: Any):
    job = ExportJob.create(
        job_id=str(uuid.uuid4()), export_id="e", user_id="u", now=T0, policy=PollPolicy()
    )
    assert await jobs.create(job)  # one write: PROCESSING, first poll due now
    stored = await jobs.get(job.job_id)
    assert stored.status is JobStatus.PROCESSING and stored.poll is not None
    at = T0 + timedelta(seconds=1)
    found = await jobs.claim_due_for_polling(at, "p", at + timedelta(seconds=60), 1000)
    [claimed] = [j for j in found if j.job_id == job.job_id]
    assert (claimed.status, claimed.lease_owner) == (JobStatus.POLLING, "p")
    assert claimed.poll is not None and claimed.poll.attempts == 1
    assert (await jobs.get(job.job_id)).status is JobStatus.POLLING


async def test_a_job_created_unscheduled_is_not_claimed_for_polling(jobs: Any):
    job = ExportJob.create(job_id=str(uuid.uuid4()), export_id="e", user_id="u", now=T0)
    assert await jobs.create(job)
    at = T0 + timedelta(seconds=1)
    found = await jobs.claim_due_for_polling(at, "p", at + timedelta(seconds=60), 1000)
    assert job.job_id not in {j.job_id for j in found}


# --- the dispatch cursor ----------------------------------------------------------------


async def dispatching(jobs: Any, owner: str = "a") -> ExportJob:
    job = await stored_job(jobs)
    return await jobs.save(job.start_dispatching(7, owner, T0 + timedelta(seconds=60), T0))


async def claim_dispatch(jobs: Any, job: ExportJob, at: Any, owner: str) -> ExportJob | None:
    found = await jobs.claim_unfinished_dispatches(at, owner, at + timedelta(seconds=60), 1000)
    return next((j for j in found if j.job_id == job.job_id), None)


async def test_the_dispatch_cursor_moves_only_for_its_lease_holder_at_that_cursor(jobs: Any):
    job = await dispatching(jobs)
    later = T0 + timedelta(seconds=90)
    assert not await jobs.advance_dispatch(job.job_id, "b", 0, 3, later)  # not the holder
    assert not await jobs.advance_dispatch(job.job_id, "a", 2, 3, later)  # not that cursor
    assert await jobs.advance_dispatch(job.job_id, "a", 0, 3, later)
    assert await jobs.advance_dispatch(job.job_id, "a", 3, 3, later)  # a renewal
    read = await jobs.get(job.job_id)
    assert (read.dispatch.cursor, read.dispatch.attempts, read.lease_expires_at) == (3, 0, later)
    assert read.version > job.version
    with pytest.raises(ConditionFailed):  # a stale snapshot cannot move the cursor back
        await jobs.save(job)
    assert await jobs.advance_dispatch(job.job_id, "a", 3, None, later)
    done = await jobs.get(job.job_id)
    assert (done.dispatch, done.lease_owner, done.status) == (None, None, JobStatus.DOWNLOADING)
    assert await claim_dispatch(jobs, job, later + timedelta(hours=1), "b") is None


async def test_an_unfinished_dispatch_is_claimed_once_its_lease_ran_out(jobs: Any):
    job = await dispatching(jobs)
    assert await claim_dispatch(jobs, job, T0 + timedelta(seconds=30), "b") is None  # held
    expired = T0 + timedelta(seconds=61)
    claimed = await claim_dispatch(jobs, job, expired, "b")
    assert claimed is not None and claimed.dispatch is not None
    assert (claimed.lease_owner, claimed.dispatch.attempts, claimed.dispatch.cursor) == ("b", 2, 0)
    assert await claim_dispatch(jobs, job, expired, "c") is None  # "b" has it now
    assert not await jobs.advance_dispatch(job.job_id, "a", 0, 2, expired)  # "a" lost it
    # Not a polling job: a poller never takes it.
    polled = await jobs.claim_due_for_polling(expired, "p", expired, 1000)
    assert job.job_id not in {j.job_id for j in polled}


async def test_a_failed_chunk_keeps_its_error_and_holds_the_job_until_the_retry(jobs: Any):
    job = await dispatching(jobs)
    retry_at = T0 + timedelta(seconds=20)
    assert await jobs.record_dispatch_failure(job.job_id, "a", 0, "PublishFailed: x", retry_at)
    read = await jobs.get(job.job_id)
    assert (read.dispatch.last_error, read.lease_expires_at) == ("PublishFailed: x", retry_at)
    assert await claim_dispatch(jobs, job, retry_at - timedelta(seconds=1), "b") is None
    claimed = await claim_dispatch(jobs, job, retry_at, "b")
    assert claimed is not None and claimed.dispatch.last_error == "PublishFailed: x"
    assert await jobs.advance_dispatch(job.job_id, "b", 0, 2, retry_at)
    moved = await jobs.get(job.job_id)
    assert (moved.dispatch.last_error, moved.dispatch.attempts) == (None, 0)


async def test_a_chunk_not_all_queued_is_rewound_with_what_went_out(jobs: Any):
    job = await dispatching(jobs)
    later, retry_at = T0 + timedelta(seconds=90), T0 + timedelta(seconds=120)
    assert await jobs.advance_dispatch(job.job_id, "a", 0, 3, later)  # written ahead
    back = DispatchProgress(0, 2, "PublishFailed: 1 of 3", frozenset({1, 2}))
    assert not await jobs.rewind_dispatch(job.job_id, "b", 3, back, retry_at)  # not the holder
    assert not await jobs.rewind_dispatch(job.job_id, "a", 0, back, retry_at)  # not that cursor
    assert await jobs.rewind_dispatch(job.job_id, "a", 3, back, retry_at)
    read = await jobs.get(job.job_id)
    assert (read.dispatch, read.lease_owner, read.lease_expires_at) == (back, "a", retry_at)
    assert await claim_dispatch(jobs, job, retry_at - timedelta(seconds=1), "b") is None
    claimed = await claim_dispatch(jobs, job, retry_at, "b")
    assert claimed is not None and claimed.dispatch == replace(back, attempts=3)
    assert await jobs.advance_dispatch(job.job_id, "b", 0, 3, retry_at)  # moving on: all sent
    assert (await jobs.get(job.job_id)).dispatch == DispatchProgress(3, 0)


async def test_a_dispatch_cursor_move_with_now_is_progress_a_renewal_is_not(jobs: Any):
    job = await dispatching(jobs)
    moved_at, renewed_at = T0 + timedelta(seconds=5), T0 + timedelta(seconds=9)
    until = T0 + timedelta(seconds=90)
    assert await jobs.advance_dispatch(job.job_id, "a", 0, 3, until, moved_at)
    assert await jobs.advance_dispatch(job.job_id, "a", 3, 3, until, renewed_at)  # renewal
    assert (await jobs.get(job.job_id)).updated_at == moved_at
    closed_at = T0 + timedelta(seconds=20)
    assert await jobs.advance_dispatch(job.job_id, "a", 3, None, until, closed_at)
    assert (await jobs.get(job.job_id)).updated_at == closed_at


async def test_a_job_that_ended_is_no_longer_dispatched(jobs: Any):
    job = await dispatching(jobs)
    await jobs.save(job.fail("PROCESSING_ERROR", "stopped", T0))
    assert not await jobs.advance_dispatch(job.job_id, "a", 0, 2, T0)
    assert await claim_dispatch(jobs, job, T0 + timedelta(hours=1), "b") is None
    assert (await jobs.get(job.job_id)).dispatch is None
