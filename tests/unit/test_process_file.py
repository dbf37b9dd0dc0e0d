"""ProcessFile: short renewed leases, checkpoints handed to the next worker, fresh URLs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from src.application.commands import ProcessFileCommand
from src.application.ports.export_api import (
    ExportApiUnavailable,
    ExportFile,
    ExportState,
    ExportStatus,
)
from src.application.ports.file_transfer import TransferResult
from src.application.ports.leases import LeaseLost
from src.application.services.lease_keeper import LeaseKeeper
from src.application.services.recent_jobs import RecentJobs
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.process_file import FileOutcome, ProcessFile
from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.job_status import JobStatus
from src.domain.upload_checkpoint import StoredPart, UploadCheckpoint
from tests.fakes import (
    T0,
    FakeCallbacks,
    FakeExportApi,
    FakeTransfer,
    FixedClock,
    InMemoryJobs,
    InMemoryTasks,
    RecordingEvents,
)
from tests.unit.builders import EXPORT_ID, JOB_ID, a_job

LEASE = timedelta(seconds=60)
OLD_URL = "https://files.example/0?X-Amz-Signature=old"
NEW_URL = "https://files.example/0?X-Amz-Signature=new"
WORK = ProcessFileCommand(JOB_ID, "00000", "worker-1")
CHECKPOINT = UploadCheckpoint("upload-1", '"etag"', (StoredPart(1, '"p1"', 0, 8),), "state")


def task(**overrides: object) -> DownloadTask:
    base = DownloadTask(
        job_id=JOB_ID,
        task_id="00000",
        index=0,
        url=OLD_URL,
        file_name="file-0.bin",
        output_key="exports/x/0_file-0.bin",
        created_at=T0,
        url_expires_at=T0 + timedelta(hours=1),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def listing(*files: ExportFile, state: ExportState = ExportState.READY) -> ExportStatus:
    return ExportStatus(EXPORT_ID, state, files)


FRESH = listing(ExportFile(NEW_URL, "file-0.bin", expires_at=T0 + timedelta(hours=2)))


class World:
    def __init__(self, stored: DownloadTask, api_script: list[object] | None = None) -> None:
        self.clock = FixedClock()
        self.jobs = InMemoryJobs([a_job(status=JobStatus.DOWNLOADING, total=1)])
        self.tasks = InMemoryTasks(self.jobs)
        self.tasks.items[(JOB_ID, "00000")] = stored
        self.transfer = FakeTransfer()
        self.api = FakeExportApi({EXPORT_ID: api_script or [FRESH]})  # type: ignore[dict-item]
        complete = CompleteJob(self.jobs, FakeCallbacks(), RecordingEvents(), self.clock)
        self.use_case = ProcessFile(
            RecentJobs(self.jobs, self.clock),
            self.tasks,
            self.transfer,
            complete,
            RecordingEvents(),
            self.clock,
            LEASE,
            export_api=self.api,
        )

    @property
    def stored(self) -> DownloadTask:
        return self.tasks.items[(JOB_ID, "00000")]


async def test_a_url_with_time_to_spare_is_used_as_it_is():
    world = World(task())
    assert (await world.use_case.execute(WORK)).outcome is FileOutcome.RECORDED
    assert world.transfer.calls[0][0] == OLD_URL
    assert world.api.calls == []


async def test_a_url_about_to_expire_is_replaced_before_the_download():
    world = World(task(url_expires_at=T0 + timedelta(seconds=30)))  # inside the 60 s margin
    assert (await world.use_case.execute(WORK)).outcome is FileOutcome.RECORDED
    assert [url for url, _key in world.transfer.calls] == [NEW_URL]
    assert world.api.calls == [EXPORT_ID]
    assert world.stored.status is TaskStatus.COMPLETED


async def test_a_refused_url_is_replaced_once_and_the_file_succeeds():
    world = World(task())
    world.transfer.refused = {OLD_URL}
    assert (await world.use_case.execute(WORK)).outcome is FileOutcome.RECORDED
    assert [url for url, _key in world.transfer.calls] == [OLD_URL, NEW_URL]
    assert world.stored.status is TaskStatus.COMPLETED


async def test_a_fresh_url_refused_too_fails_the_file():
    world = World(task())
    world.transfer.refused = {OLD_URL, NEW_URL}
    await world.use_case.execute(WORK)
    assert world.stored.status is TaskStatus.FAILED
    assert "403" in (world.stored.error or "")
    assert len(world.transfer.calls) == 2


@pytest.mark.parametrize(
    "answer",
    [
        listing(),  # the file is gone from the listing
        listing(ExportFile(NEW_URL, "another-name.bin")),  # index 0 is another file now
        listing(ExportFile(NEW_URL, "file-0.bin"), state=ExportState.EXPIRED),
    ],
)
async def test_only_a_file_the_export_api_no_longer_lists_fails(answer: ExportStatus):
    world = World(task(url_expires_at=T0), [answer])
    await world.use_case.execute(WORK)
    assert world.stored.status is TaskStatus.FAILED
    assert world.stored.error == "the Export API no longer lists this file"
    assert world.transfer.calls == []
    assert world.jobs.items[JOB_ID].failed_tasks == 1


async def test_export_api_down_while_refreshing_hands_the_file_back_unfailed():
    world = World(task(url_expires_at=T0), [ExportApiUnavailable("HTTP 503")])
    with pytest.raises(ExportApiUnavailable):
        await world.use_case.execute(WORK)
    assert world.stored.status is TaskStatus.PENDING
    assert world.stored.lease_owner is None


async def test_checkpoints_are_stored_with_the_lease_and_given_to_the_next_worker():
    world = World(task())
    started = asyncio.Event()

    async def checkpoint_then_hang(url: str, key: str, **kwargs: object) -> TransferResult:
        await kwargs["on_checkpoint"](CHECKPOINT)  # type: ignore[operator]
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    world.use_case.transfer.transfer = checkpoint_then_hang  # type: ignore[method-assign]
    running = asyncio.create_task(world.use_case.execute(WORK))
    await started.wait()
    running.cancel()  # the replica shuts down (or dies: then the lease runs out)
    with pytest.raises(asyncio.CancelledError):
        await running
    assert world.stored.upload == CHECKPOINT
    assert world.stored.status is TaskStatus.PENDING
    world.use_case.transfer.transfer = FakeTransfer().transfer  # type: ignore[method-assign]
    recorder = FakeTransfer()
    next_worker = replace(world.use_case, transfer=recorder)
    await next_worker.execute(replace(WORK, owner="worker-2"))
    assert recorder.resumes == [CHECKPOINT]
    assert world.stored.status is TaskStatus.COMPLETED
    assert world.stored.upload is None


async def test_lease_keeper_renews_while_the_work_runs():
    renewals: list[object] = []

    async def renew(until: object) -> bool:
        renewals.append(until)
        return True

    keeper = LeaseKeeper(FixedClock(), timedelta(seconds=1.5))  # renews every 0.5 s
    assert await keeper.hold(renew, asyncio.sleep(1.2, result="done")) == "done"
    assert len(renewals) >= 2


async def test_a_refused_renewal_stops_the_work_with_lease_lost():
    async def refused(until: object) -> bool:
        return False

    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    keeper = LeaseKeeper(FixedClock(), timedelta(seconds=1.5))
    with pytest.raises(LeaseLost):
        await keeper.hold(refused, work())
    assert cancelled.is_set()


async def test_lost_lease_mid_file_leaves_the_task_to_its_new_owner():
    world = World(task())

    async def taken_over(url: str, key: str, **kwargs: object) -> TransferResult:
        stored = world.stored
        world.tasks.items[(JOB_ID, "00000")] = replace(stored, lease_owner="worker-2")
        await kwargs["on_checkpoint"](CHECKPOINT)  # type: ignore[operator]
        raise AssertionError("unreachable: the checkpoint's renewal is refused")

    world.use_case.transfer.transfer = taken_over  # type: ignore[method-assign]
    result = await world.use_case.execute(WORK)
    assert result.outcome is FileOutcome.BUSY
    assert world.stored.lease_owner == "worker-2"  # not released: it is not ours
    assert world.stored.status is TaskStatus.RUNNING


async def test_renewals_failing_until_the_lease_runs_out_stop_the_work():
    async def throttled(until: object) -> bool:
        raise RuntimeError("ThrottlingException")

    keeper = LeaseKeeper(FixedClock(), timedelta(seconds=1.5))
    clock = keeper.clock
    assert isinstance(clock, FixedClock)

    async def work() -> None:
        for _ in range(100):
            await asyncio.sleep(0.1)
            clock.advance(0.1)  # time passes for the lease too

    with pytest.raises(LeaseLost):
        await keeper.hold(throttled, work())


async def test_a_checkpoint_that_cannot_be_stored_for_now_does_not_fail_the_file():
    world = World(task())
    renew = world.tasks.renew

    async def throttled_once(*args: object) -> bool:
        world.tasks.renew = renew  # type: ignore[method-assign]
        raise RuntimeError("ProvisionedThroughputExceededException")

    async def checkpointing(url: str, key: str, **kwargs: object) -> TransferResult:
        world.tasks.renew = throttled_once  # type: ignore[method-assign]
        await kwargs["on_checkpoint"](CHECKPOINT)  # type: ignore[operator]
        return TransferResult(key=key, bytes=8, sha256="0" * 64)

    world.use_case.transfer.transfer = checkpointing  # type: ignore[method-assign]
    assert (await world.use_case.execute(WORK)).outcome is FileOutcome.RECORDED
    assert world.stored.status is TaskStatus.COMPLETED


# --- small files: the work item carries the task, and no lease is taken -------------


class CountingTasks(InMemoryTasks):
    def __init__(self, jobs: InMemoryJobs) -> None:
        super().__init__(jobs)
        self.reads = 0
        self.claims = 0

    async def get(self, job_id: str, task_id: str) -> DownloadTask | None:
        self.reads += 1
        return await super().get(job_id, task_id)

    async def claim(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.claims += 1
        return await super().claim(*args, **kwargs)


def small_world(stored: DownloadTask, jobs_total: int = 1) -> World:
    world = World(stored)
    world.jobs.items[JOB_ID] = a_job(status=JobStatus.DOWNLOADING, total=jobs_total)
    counting = CountingTasks(world.jobs)
    counting.items = world.tasks.items
    world.tasks = counting
    world.use_case = replace(world.use_case, tasks=counting, unleased_below=8 * 1024 * 1024)
    return world


SMALL = task(expected_size=65_536)


async def test_a_small_files_first_delivery_is_copied_and_counted_without_read_or_lease():
    world = small_world(SMALL)
    command = replace(WORK, dispatched=SMALL)
    assert (await world.use_case.execute(command)).outcome is FileOutcome.RECORDED
    assert (world.tasks.reads, world.tasks.claims) == (0, 0)  # type: ignore[attr-defined]
    assert world.stored.status is TaskStatus.COMPLETED
    assert world.jobs.items[JOB_ID].completed_tasks == 1


async def test_small_file_work_items_delivered_twice_at_once_count_once():
    world = small_world(SMALL)
    command = replace(WORK, dispatched=SMALL)
    other = replace(command, owner="worker-2")
    outcomes = await asyncio.gather(world.use_case.execute(command), world.use_case.execute(other))
    assert sorted(o.outcome.value for o in outcomes) == ["already_done", "recorded"]
    assert world.jobs.items[JOB_ID].completed_tasks == 1
    assert world.jobs.items[JOB_ID].status is JobStatus.COMPLETED


async def test_a_stale_work_item_for_a_finished_small_file_counts_nothing():
    done = replace(SMALL, status=TaskStatus.COMPLETED, bytes=65_536, sha256="a" * 64)
    world = small_world(done, jobs_total=2)
    job = world.jobs.items[JOB_ID]
    world.jobs.items[JOB_ID] = replace(job, completed_tasks=1)
    result = await world.use_case.execute(replace(WORK, dispatched=SMALL))  # as dispatched
    assert result.outcome is FileOutcome.ALREADY_DONE
    assert world.jobs.items[JOB_ID].completed_tasks == 1
    assert world.stored.bytes == 65_536


async def test_a_small_file_someone_holds_a_lease_on_is_left_to_them():
    leased = replace(
        SMALL, status=TaskStatus.RUNNING, lease_owner="other", lease_expires_at=T0 + LEASE
    )
    world = small_world(leased)
    result = await world.use_case.execute(WORK)  # a redelivery: the record is read
    assert result.outcome is FileOutcome.BUSY
    assert world.transfer.calls == []


async def test_a_file_of_unknown_size_that_fits_one_part_takes_no_lease():
    world = small_world(task(expected_size=None))
    command = replace(WORK, dispatched=task())
    assert (await world.use_case.execute(command)).outcome is FileOutcome.RECORDED
    assert world.tasks.claims == 0  # type: ignore[attr-defined]
    assert world.stored.status is TaskStatus.COMPLETED


def multipart(world: World) -> None:
    """The transfer stores a part (a checkpoint) before it finishes: a big file."""

    async def one_part_then_done(url: str, key: str, **kwargs: object) -> TransferResult:
        await kwargs["on_checkpoint"](CHECKPOINT)  # type: ignore[operator]
        return TransferResult(key=key, bytes=16, sha256="0" * 64)

    world.use_case.transfer.transfer = one_part_then_done  # type: ignore[method-assign]


async def test_a_file_of_unknown_size_that_turns_out_big_is_leased_at_its_first_part():
    world = small_world(task(expected_size=None))
    multipart(world)
    seen: list[DownloadTask] = []
    renew = world.tasks.renew

    async def renewing(t: DownloadTask, owner: str, until: object, upload: object) -> bool:
        seen.append(world.stored)  # what the next worker would find, as the part is stored
        return await renew(t, owner, until, upload)  # type: ignore[arg-type]

    world.tasks.renew = renewing  # type: ignore[method-assign]
    command = replace(WORK, dispatched=task())
    assert (await world.use_case.execute(command)).outcome is FileOutcome.RECORDED
    assert world.tasks.claims == 1  # type: ignore[attr-defined]
    assert [(t.status, t.lease_owner) for t in seen] == [(TaskStatus.RUNNING, "worker-1")]
    assert world.stored.status is TaskStatus.COMPLETED
    assert world.jobs.items[JOB_ID].completed_tasks == 1


async def test_a_file_that_turns_out_big_while_another_worker_holds_it_is_left_to_them():
    world = small_world(task(expected_size=None))
    multipart(world)
    await world.tasks.claim(task(), "other", T0 + LEASE, T0)  # took it meanwhile
    command = replace(WORK, dispatched=task())
    assert (await world.use_case.execute(command)).outcome is FileOutcome.BUSY
    assert world.stored.lease_owner == "other"
    assert world.jobs.items[JOB_ID].completed_tasks == 0


class CountingJobs(InMemoryJobs):
    reads = 0

    async def get(self, job_id: str, *, counted: bool = True):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await super().get(job_id, counted=counted)


def job_reading_world(stored: DownloadTask) -> tuple[World, CountingJobs]:
    world = small_world(stored)
    jobs = CountingJobs()
    jobs.items = world.jobs.items  # the same jobs: only RecentJobs' reads are counted
    world.use_case = replace(world.use_case, recent=RecentJobs(jobs, world.clock))
    return world, jobs


async def test_a_work_item_dispatched_a_moment_ago_is_copied_without_reading_its_job():
    world, jobs = job_reading_world(SMALL)
    result = await world.use_case.execute(replace(WORK, dispatched=SMALL))  # created at T0
    assert result.outcome is FileOutcome.RECORDED
    assert jobs.reads == 0
    assert world.jobs.items[JOB_ID].status is JobStatus.COMPLETED


async def test_an_older_work_item_of_a_cancelled_job_is_dropped_uncopied():
    world, _ = job_reading_world(SMALL)
    world.jobs.items[JOB_ID] = a_job(status=JobStatus.CANCELLED, total=1)
    world.clock.advance(5)  # older than RecentJobs' ttl: its job is read
    result = await world.use_case.execute(replace(WORK, dispatched=SMALL))
    assert result.outcome is FileOutcome.JOB_ENDED
    assert world.transfer.calls == []
