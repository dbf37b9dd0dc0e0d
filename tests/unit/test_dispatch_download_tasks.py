"""DispatchDownloadTasks as a resumable step: chunks, a cursor on the job written ahead
of each chunk's work items, any replica carries on where a dead or failed dispatcher
stopped, no work item is ever sent twice (what a dead one left unsent, the reaper sends
once the job stalls), and no per-file record is written until a worker takes the file."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from src.application.commands import ProcessFileCommand, ReapCommand, ResumeDispatchCommand
from src.application.ports.export_api import ExportFile, ExportState, ExportStatus
from src.application.ports.work_queue import PublishFailed
from src.application.services.recent_jobs import RecentJobs
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.dispatch_download_tasks import (
    DispatchDownloadTasks,
    DispatchPolicy,
)
from src.application.use_cases.process_file import ProcessFile
from src.application.use_cases.reap_stuck_jobs import ReaperPolicy, ReapStuckJobs
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
    InMemoryLeases,
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
        self.reaper = ReapStuckJobs(
            self.jobs, self.tasks, self.queue, self.complete, InMemoryLeases(), self.clock,
            ReaperPolicy(),
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

    async def reap_when_stalled(self) -> None:
        """The reaper's round once the job has made no progress for its stall time (the
        queue empty: every work item sent was delivered), then the dispatch it restarts."""
        self.clock.current = self.clock.now() + ReaperPolicy().stall_after
        await self.reaper.execute(ReapCommand("reaper"))
        await self.dispatch.resume(ResumeDispatchCommand("c"))

    async def deliver_all(self) -> None:
        await asyncio.gather(
            *(
                self.worker.execute(ProcessFileCommand(r.job_id, r.task_id, "w", r.dispatched))
                for r in list(self.queue.refs)
            )
        )


def ready(files: list[ExportFile]) -> ExportStatus:
    return ExportStatus(EXPORT_ID, ExportState.READY, tuple(files))


def kill_after(world: World, point: str, chunk: int, sent: int | None = None) -> None:
    """Make the dispatcher die right after `point` of chunk number `chunk` (with `sent`,
    inside the chunk's publish once that many of its work items went out)."""
    calls = {"n": 0}
    target: Any = {
        "counters": (world.tasks, "start_counting"),
        "work items": (world.queue, "publish"),
        "cursor": (world.jobs, "advance_dispatch"),
    }[point]
    owner, name = target
    original = getattr(owner, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if name == "advance_dispatch" and args[2] == args[3]:
            return await original(*args, **kwargs)  # a lease renewal, not a chunk
        calls["n"] += 1
        # The first chunk's cursor is written ahead by the write that starts the dispatch.
        if calls["n"] != (chunk if name == "advance_dispatch" else chunk + 1):
            return await original(*args, **kwargs)
        setattr(owner, name, original)  # the next replica's calls go through
        if sent is not None:
            await original(args[0][:sent])
        else:
            await original(*args, **kwargs)
        raise Died()

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
    ("point", "chunk", "sent"),
    [("counters", 0, None)]
    + [("cursor", c, None) for c in (1, 2)]
    + [("work items", c, None) for c in range(3)]
    + [("work items", c, 1) for c in range(2)],
)
async def test_a_dispatch_killed_at_any_chunk_is_finished_without_a_work_item_sent_twice(
    point, chunk, sent
):
    world = World()
    kill_after(world, point, chunk, sent)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)

    died_at = world.job
    start, end = CHUNKS[chunk]
    assert died_at.dispatch is not None  # open until a write after the last chunk's sends
    assert died_at.dispatch.cursor == end  # written ahead past the chunk it died in
    # DOWNLOADING while dispatched: it is never claimed for polling again
    world.after_lease()
    assert (
        await world.jobs.claim_due_for_polling(world.clock.now(), "p", world.clock.now(), 9) == []
    )
    assert await world.dispatch.resume(ResumeDispatchCommand("b")) == 1
    assert (world.job.dispatch, world.job.lease_owner) == (None, None)

    # Once each; the items the dead one did not get out (written ahead) are not sent yet.
    unsent = range(start + (sent or 0), end) if point != "work items" or sent else range(0)
    assert world.published() == Counter(range(5)) - Counter(unsent)
    await world.deliver_all()
    if unsent:  # the job stalls short of them: the reaper sends them, once each
        assert world.job.status is JobStatus.DOWNLOADING
        assert world.job.completed_tasks == 5 - len(unsent)
        await world.reap_when_stalled()
        assert world.published() == Counter(range(5))
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
    kill_after(world, "cursor", 1)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    assert await world.dispatch.resume(ResumeDispatchCommand("b")) == 0  # lease still held
    assert world.api.calls == []


async def test_a_dispatcher_whose_lease_was_taken_over_stops_without_writing_on():
    world = World()
    kill_after(world, "work items", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    stale = world.job  # what "a" had; it comes back after "b" took the job over
    world.after_lease()
    [taken] = await world.jobs.claim_unfinished_dispatches(
        world.clock.now(), "b", world.clock.now() + LEASE, 1
    )
    assert taken.dispatch is not None and taken.dispatch.attempts == 2  # the cursor stayed
    await world.dispatch._continue(stale, FILES)  # "a" carries on from its snapshot
    assert world.job.lease_owner == "b"
    # its first chunk only: the next one's cursor write is refused before any item goes out
    assert world.published() == Counter(range(0, 2))
    assert world.job.dispatch is not None and world.job.dispatch.cursor == 2


async def test_a_listing_that_changed_meanwhile_fails_the_job_with_the_reason():
    world = World(ready(FILES[:4]))
    kill_after(world, "cursor", 1)
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
    kill_after(world, "cursor", 1)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("b"))
    assert world.job.error == JobError(JobErrorCode.EXPORT_EXPIRED, "links expired")


async def test_dispatchers_that_keep_dying_without_progress_end_the_job():
    world = World()
    kill_after(world, "cursor", 1)
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
    kill_after(world, "work items", 0)
    with pytest.raises(Died):
        await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    kill_after(world, "work items", 0)  # the next one dies too, one chunk further on
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


def refusing(world: World, *, unsent: set[int], times: int) -> list[list[int]]:
    """The queue refuses the work items of files `unsent` `times` times (queueing the
    others of each call); returns what each call was asked to send."""
    asked: list[list[int]] = []
    refusals = {"left": times}
    publish = world.queue.publish

    async def partly(refs: Any) -> None:
        asked.append([r.index for r in refs])
        refused = [r for r in refs if r.index in unsent] if refusals["left"] else []
        refusals["left"] -= bool(refused)
        await publish([r for r in refs if r not in refused])
        if refused:
            raise PublishFailed(
                f"{len(refused)} of {len(refs)} work items could not be queued", refused
            )

    world.queue.publish = partly  # type: ignore[method-assign]
    return asked


@pytest.mark.parametrize("chunk", [0, 2])  # a middle chunk, and the last (its write closed it)
async def test_work_items_not_queued_are_sent_by_the_next_attempt_without_the_others(chunk):
    world = World()
    start, end = CHUNKS[chunk]
    asked = refusing(world, unsent={start}, times=1)
    await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    assert world.job.dispatch is not None
    assert world.job.dispatch.cursor == start  # back to the chunk, with what went out noted
    assert world.job.dispatch.sent == frozenset(range(start + 1, end))
    assert (
        world.job.dispatch.last_error
        == f"PublishFailed: 1 of {end - start} work items could not be queued"
    )
    assert world.job.lease_expires_at == world.clock.now() + POLICY.retry_after
    assert await world.dispatch.resume(ResumeDispatchCommand("b")) == 0  # not before then
    world.after_lease()
    assert await world.dispatch.resume(ResumeDispatchCommand("b")) == 1
    assert asked[chunk + 1] == [start]  # the one refused, alone
    assert world.job.dispatch is None
    assert world.published() == Counter(range(5))  # each once
    await world.deliver_all()
    assert (world.job.status, world.job.completed_tasks) == (JobStatus.COMPLETED, 5)


async def test_a_chunk_the_queue_keeps_refusing_ends_the_job_with_the_reason():
    world = World()
    refusing(world, unsent={2}, times=99)
    await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    for n in range(POLICY.max_attempts):  # the chunk's claims after the first try
        world.after_lease()
        await world.dispatch.resume(ResumeDispatchCommand(f"r{n}"))
    assert world.job.status is JobStatus.FAILED
    assert world.job.error == JobError(
        JobErrorCode.PROCESSING_ERROR,
        "Dispatching did not move on after 3 attempts; "
        "last: PublishFailed: 1 of 1 work items could not be queued",
    )
    assert world.published() == Counter([0, 1, 3])  # file 3 went out once, file 2 never


async def test_the_reaper_leaves_a_job_alone_while_its_last_chunk_is_being_sent():
    """The dispatch stays open (leased) until every work item is out: however quiet the
    job looks and however empty the queue, the reaper does not dispatch it again."""
    world = World()
    publish = world.queue.publish
    reaped: list[int] = []

    async def slow(refs: Any) -> None:
        if refs and refs[-1].index == len(FILES) - 1:  # the last chunk, before it is out
            world.clock.current = world.clock.now() + ReaperPolicy().stall_after * 4
            reaped.append((await world.reaper.execute(ReapCommand("reaper"))).jobs_redispatched)
        await publish(refs)

    world.queue.publish = slow  # type: ignore[method-assign]
    await world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    assert reaped == [0]
    assert world.job.dispatch is None
    assert world.published() == Counter(range(5))


async def test_a_chunk_whose_cursor_moved_is_sent_even_if_the_dispatch_is_cancelled():
    """Cancelled (a shutdown's grace over, a lease lost) between a chunk's cursor write
    and its sends: the sends go on, so the chunk is not left to the reaper."""
    world = World()
    publish = world.queue.publish
    gate, blocked = asyncio.Event(), asyncio.Event()

    async def held(refs: Any) -> None:
        if refs and refs[0].index == 2:
            blocked.set()
            await gate.wait()
        await publish(refs)

    world.queue.publish = held  # type: ignore[method-assign]
    dispatching = asyncio.create_task(
        world.dispatch.execute(await world.claimed_by_poller("a"), FILES)
    )
    await blocked.wait()
    dispatching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dispatching
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert world.published() == Counter(range(4))  # chunk 1 went out all the same
    assert world.job.dispatch is not None and world.job.dispatch.cursor == 4
    world.after_lease()
    await world.dispatch.resume(ResumeDispatchCommand("b"))
    assert world.published() == Counter(range(5))
