"""DispatchDownloadTasks as a resumable step: chunks, a cursor on the job, any replica
carries on where a dead or failed dispatcher stopped, nothing behind the cursor is sent
twice, and no per-file record is written until a worker takes the file."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from src.application.commands import ProcessFileCommand, ResumeDispatchCommand
from src.application.ports.export_api import ExportFile, ExportState, ExportStatus
from src.application.services.recent_jobs import RecentJobs
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.dispatch_download_tasks import (
    DispatchDownloadTasks,
    DispatchPolicy,
)
from src.application.use_cases.process_file import ProcessFile
from src.domain.errors import JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.job_status import JobStatus
from src.domain.polling import PollPolicy
from tests.fakes import (
    FakeCallbacks,
    FakeExportApi,
    FakeTransfer,
    FixedClock,
    InMemoryJobs,
    InMemoryTasks,
    RecordingEvents,
    RecordingQueue,
)
from tests.unit.builders import EXPORT_ID, JOB_ID, RAW_TOKEN, a_job

LEASE = timedelta(seconds=120)
POLICY = DispatchPolicy(chunk=2, lease=LEASE, max_attempts=3, retry_after=timedelta(seconds=40))
FILES = [ExportFile(f"https://files.example/{i}?sig={i}", f"f-{i}.csv") for i in range(5)]
CHUNKS = [(0, 2), (2, 4), (4, 5)]


class Died(BaseException):
    """The replica is killed here: nothing after this runs, nothing is handed back."""


class World:
    def __init__(self, *listing: ExportStatus) -> None:
        self.clock = FixedClock()
        self.jobs = InMemoryJobs()
        self.tasks = InMemoryTasks(self.jobs)
        self.queue = RecordingQueue()
        self.callbacks = FakeCallbacks()
        self.api = FakeExportApi({EXPORT_ID: listing or (ready(FILES),)})
        events = RecordingEvents()
        self.complete = CompleteJob(self.jobs, self.callbacks, events, self.clock)
        self.dispatch = DispatchDownloadTasks(
            self.jobs, self.tasks, self.queue, self.complete, self.clock, "exports/", self.api,
            POLICY,
        )  # fmt: skip
        self.worker = ProcessFile(
            RecentJobs(self.jobs, self.clock), self.tasks, FakeTransfer(), self.complete,
            events, self.clock, LEASE,
        )  # fmt: skip

    async def claimed_by_poller(self, owner: str = "a") -> ExportJob:
        job = a_job(token=RAW_TOKEN).start_polling(self.clock.now(), PollPolicy())
        await self.jobs.create(job)
        [claimed] = await self.jobs.claim_due_for_polling(
            self.clock.now(), owner, self.clock.now() + LEASE, 1
        )
        return claimed

    @property
    def job(self) -> ExportJob:
        return self.jobs.items[JOB_ID]

    def published(self) -> Counter[int]:
        return Counter(ref.index for ref in self.queue.refs)

    def after_lease(self) -> None:
        assert self.job.lease_expires_at is not None
        self.clock.current = self.job.lease_expires_at + timedelta(seconds=1)

    async def deliver_all(self) -> None:
        await asyncio.gather(
            *(
                self.worker.execute(ProcessFileCommand(r.job_id, r.task_id, "w", r.dispatched))
                for r in list(self.queue.refs)
            )
        )


def ready(files: list[ExportFile]) -> ExportStatus:
    return ExportStatus(EXPORT_ID, ExportState.READY, tuple(files))


def kill_after(world: World, point: str, chunk: int) -> None:
    """Make the dispatcher die right after `point` of chunk number `chunk`."""
    calls = {"n": 0}
    target: Any = {
        "counters": (world.tasks, "start_counting"),
        "work items": (world.queue, "publish"),
        "cursor": (world.jobs, "advance_dispatch"),
    }[point]
    owner, name = target
    original = getattr(owner, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        if name == "advance_dispatch" and args[2] == args[3]:
            return result  # a lease renewal, not a chunk
        calls["n"] += 1
        if calls["n"] == chunk + 1:
            setattr(owner, name, original)  # the next replica's calls go through
            raise Died()
        return result

    setattr(owner, name, wrapped)


async def test_a_ready_export_is_dispatched_in_chunks_under_the_dispatchers_lease():
    world = World()
    job = await world.dispatch.execute(await world.claimed_by_poller(), FILES)
    assert job.status is JobStatus.DOWNLOADING
    assert (world.job.total_tasks, world.job.dispatch, world.job.lease_owner) == (5, None, None)
    assert world.published() == Counter(range(5))
    assert world.tasks.items == {}  # no record per file until a worker takes it
    await world.deliver_all()
    assert (world.job.status, world.job.completed_tasks) == (JobStatus.COMPLETED, 5)
    assert len(world.callbacks.successes) == 1


@pytest.mark.parametrize(
    ("point", "chunk"),
    [("counters", 0)] + [(p, c) for p in ("work items", "cursor") for c in range(3)],
)
async def test_a_dispatch_killed_at_any_chunk_is_finished_by_another_replica(point, chunk):
    world = World()
    kill_after(world, point, chunk)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)

    died_at = world.job
    start, end = CHUNKS[chunk]
    if point == "cursor" and end == len(FILES):
        assert died_at.dispatch is None  # its last write went through: nothing to resume
    else:
        assert died_at.dispatch is not None
        assert died_at.dispatch.cursor == (end if point == "cursor" else start)
        # DOWNLOADING while dispatched: it is never claimed for polling again
        world.after_lease()
        assert (
            await world.jobs.claim_due_for_polling(world.clock.now(), "p", world.clock.now(), 9)
            == []
        )
        assert await world.dispatch.resume(ResumeDispatchCommand("b")) == 1
    assert (world.job.dispatch, world.job.lease_owner) == (None, None)

    # Work items: once each, except those the dead one had sent just before dying.
    resent = range(start, end) if point == "work items" else range(0)
    assert world.published() == Counter(range(5)) + Counter(resent)

    await world.deliver_all()
    assert sorted(k[1] for k in world.tasks.items) == [f"{i:05d}" for i in range(5)]
    assert (world.job.status, world.job.completed_tasks, world.job.failed_tasks) == (
        JobStatus.COMPLETED,
        5,
        0,
    )
    assert len(world.callbacks.successes) == 1


async def test_work_items_of_files_already_recorded_are_not_sent_again():
    world = World()
    kill_after(world, "work items", 1)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    await world.deliver_all()  # workers record every file sent so far, chunk 1's included
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("b"))
    assert world.published() == Counter(range(5))  # nothing of chunk 1 went out twice
    await world.deliver_all()
    assert (world.job.status, world.job.completed_tasks) == (JobStatus.COMPLETED, 5)
    assert world.callbacks.calls == 1


async def test_a_live_dispatch_is_not_taken_over():
    world = World()
    kill_after(world, "cursor", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    assert await world.dispatch.resume(ResumeDispatchCommand("b")) == 0  # lease still held
    assert world.api.calls == []


async def test_a_dispatcher_whose_lease_was_taken_over_stops_without_writing_on():
    world = World()
    kill_after(world, "cursor", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    stale = world.job  # what "a" had; it comes back after "b" took the job over
    world.after_lease()
    [taken] = await world.jobs.claim_unfinished_dispatches(
        world.clock.now(), "b", world.clock.now() + LEASE, 1
    )
    assert taken.dispatch is not None and taken.dispatch.attempts == 1
    await world.dispatch._continue(stale, FILES)  # "a" carries on from its snapshot
    assert world.job.lease_owner == "b"
    # its one chunk, then the refused cursor
    assert world.published() == Counter(range(0, 4))
    assert world.job.dispatch is not None and world.job.dispatch.cursor == 2


async def test_a_listing_that_changed_meanwhile_fails_the_job_with_the_reason():
    world = World(ready(FILES[:4]))
    kill_after(world, "cursor", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("b"))
    assert world.job.status is JobStatus.FAILED
    assert world.job.error == JobError(
        JobErrorCode.EXPORT_API_FAILED,
        "Export's listing changed while its files were being dispatched: 5 files at first, 4 now",
    )
    assert [f[1] for f in world.callbacks.failures] == ["ExportFailed"]


async def test_an_expired_export_when_resuming_fails_the_job_as_expired():
    world = World(ExportStatus(EXPORT_ID, ExportState.EXPIRED, (), "links expired"))
    kill_after(world, "cursor", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("b"))
    assert world.job.error == JobError(JobErrorCode.EXPORT_EXPIRED, "links expired")


async def test_dispatchers_that_keep_dying_without_progress_end_the_job():
    world = World()
    kill_after(world, "cursor", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    for n in range(POLICY.max_attempts):  # each claims it and dies before moving on
        world.after_lease()
        [claimed] = await world.jobs.claim_unfinished_dispatches(
            world.clock.now(), f"dead-{n}", world.clock.now() + LEASE, 1
        )
        assert claimed.dispatch is not None and claimed.dispatch.attempts == n + 1
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("alive"))
    assert world.job.status is JobStatus.FAILED
    assert world.job.error == JobError(
        JobErrorCode.PROCESSING_ERROR,
        "Dispatching did not move on after 3 attempts; "
        "last: the dispatch did not finish (its replica may have stopped)",
    )
    assert [f[1] for f in world.callbacks.failures] == ["ProcessingError"]


async def test_dispatchers_that_die_but_move_on_each_time_finish_it():
    world = World()
    kill_after(world, "cursor", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    kill_after(world, "cursor", 0)  # the next one dies too, one chunk further on
    world.after_lease()
    with pytest.raises(Died):
        await world.dispatch.resume(ResumeDispatchCommand("b"))
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("c"))
    assert world.job.dispatch is None
    assert world.published() == Counter(range(5))


async def test_a_failed_chunk_keeps_its_error_and_is_tried_again_after_a_pause():
    world = World()
    fails = {"left": 1}
    publish = world.queue.publish

    async def flaky(refs: Any) -> None:
        if fails["left"]:
            fails["left"] -= 1
            raise RuntimeError("queue unavailable")
        await publish(refs)

    world.queue.publish = flaky  # type: ignore[method-assign]
    await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    assert world.job.dispatch is not None
    assert world.job.dispatch.last_error == "RuntimeError: queue unavailable"
    assert world.job.lease_expires_at == world.clock.now() + POLICY.retry_after
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("b"))
    assert world.job.dispatch is None
    assert world.published() == Counter(range(5))
