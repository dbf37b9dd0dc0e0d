"""The export step end to end over in-memory ports: StartExportJob schedules the first
poll, PollExportStatus polls (and dispatches a ready export), ProcessFile copies and counts
each file, and CompleteJob answers the workflow once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from src.application.commands import (
    PollDueJobsCommand,
    ProcessFileCommand,
    ResumeDispatchCommand,
    SendHeartbeatsCommand,
    StartExportJobCommand,
)
from src.application.ports.export_api import (
    ExportApiRejected,
    ExportApiUnavailable,
    ExportFile,
    ExportState,
    ExportStatus,
)
from src.application.ports.work_queue import PublishFailed
from src.application.ports.workflow_callbacks import CallbackUnavailable, TaskClosed
from src.application.services.recent_jobs import RecentJobs
from src.application.services.workflow_answers import WorkflowAnswers
from src.application.use_cases.cancel_job import CancelJob
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.dispatch_download_tasks import DispatchDownloadTasks, DispatchPolicy
from src.application.use_cases.poll_export_status import PollExportStatus
from src.application.use_cases.process_file import ProcessFile
from src.application.use_cases.send_heartbeats import SendHeartbeats
from src.application.use_cases.start_export_job import StartExportJob
from src.domain.errors import JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.export_limits import ExportLimits
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.polling import PollPolicy
from src.domain.task_token import TaskToken
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
from tests.unit.builders import EXPORT_ID, JOB_ID, RAW_TOKEN, USER_ID

POLICY = PollPolicy(
    first_interval=timedelta(seconds=5),
    max_interval=timedelta(seconds=60),
    factor=2.0,
    max_attempts=4,
    deadline=timedelta(hours=1),
)
LEASE = timedelta(seconds=30)
MINUTE = timedelta(seconds=60)
# Small chunks, so every flow here dispatches in several.
DISPATCH = DispatchPolicy(chunk=2, lease=LEASE, max_attempts=3, retry_after=timedelta(seconds=10))


def status(state: ExportState, files: Sequence[ExportFile] = (), error: str | None = None):
    return ExportStatus(EXPORT_ID, state, tuple(files), error)


def files(count: int) -> list[ExportFile]:
    return [
        ExportFile(f"https://files.example/{i}?sig=s{i}", f"part-{i}.csv") for i in range(count)
    ]


class Pipeline:
    def __init__(
        self,
        *script: ExportStatus | Exception,
        failing: Sequence[str] = (),
        token=RAW_TOKEN,
        policy: PollPolicy = POLICY,
        lease: timedelta = LEASE,
        heartbeat: timedelta | None = None,
    ) -> None:
        self.token = token
        self.clock = FixedClock()
        self.jobs = InMemoryJobs()
        self.tasks = InMemoryTasks(self.jobs)
        self.queue = RecordingQueue()
        self.api = FakeExportApi({EXPORT_ID: script})
        self.transfer = FakeTransfer(failing)
        self.callbacks = FakeCallbacks()
        self.events = RecordingEvents()
        complete = CompleteJob(self.jobs, self.callbacks, self.events, self.clock)
        self.dispatch = DispatchDownloadTasks(
            self.jobs,
            self.tasks,
            self.queue,
            complete,
            self.clock,
            "exports/",
            self.api,
            DISPATCH,
        )
        dispatch = self.dispatch
        answers = WorkflowAnswers(self.jobs, self.callbacks, self.clock)
        self.start = StartExportJob(self.jobs, self.events, self.clock, answers, policy)
        cancel = CancelJob(self.jobs, complete, self.events, self.clock)
        self.heartbeats = SendHeartbeats(
            self.jobs, self.callbacks, cancel, self.clock, heartbeat or MINUTE
        )
        self.poller = PollExportStatus(
            self.jobs, self.api, dispatch, complete, self.clock, policy, lease,
            self.heartbeats if heartbeat else None,
        )  # fmt: skip
        self.worker = ProcessFile(
            RecentJobs(self.jobs, self.clock), self.tasks, self.transfer, complete, self.events,
            self.clock, LEASE,
        )  # fmt: skip
        self.poll_times: list[datetime] = []
        self.poll_saves: list[int] = []  # save() calls per poll round, besides the claim
        self.poll_errors: list[str | None] = []  # the stored last error after each round

    async def resume_dispatch(self, owner: str = "resumer") -> None:
        """Whenever an unfinished dispatch is free again, let another replica carry it on."""
        for _ in range(20):
            job = self.job
            if job.status is not JobStatus.DOWNLOADING or job.dispatch is None:
                return
            self.clock.current = max(self.clock.now(), job.lease_expires_at or self.clock.now())
            await self.dispatch.resume(ResumeDispatchCommand(owner))
        raise AssertionError("the dispatch never ended")

    @property
    def job(self) -> ExportJob:
        return self.jobs.items[JOB_ID]

    def counters(self) -> tuple[int, int, int]:
        return self.job.total_tasks, self.job.completed_tasks, self.job.failed_tasks

    def intervals(self) -> list[float]:
        pairs = zip(self.poll_times, self.poll_times[1:], strict=False)
        return [(b - a).total_seconds() for a, b in pairs]

    async def run(self, *, deliveries: int = 1) -> ExportJob:
        """Start the job, poll whenever it is due, then deliver every work item."""
        token = TaskToken(self.token) if self.token else None
        await self.start.execute(StartExportJobCommand(JOB_ID, EXPORT_ID, USER_ID, {}, token))
        while self.job.status in (JobStatus.PROCESSING, JobStatus.POLLING):
            assert self.job.next_poll_at is not None
            self.clock.current = max(self.clock.now(), self.job.next_poll_at)
            self.poll_times.append(self.clock.now())
            saves = self.jobs.saves
            await self.poller.execute(PollDueJobsCommand(owner="poller-1"))
            self.poll_saves.append(self.jobs.saves - saves)
            self.poll_errors.append(self.job.poll.last_error if self.job.poll else None)
            assert len(self.poll_times) <= 50, "polling never ended"
        await self.resume_dispatch()
        sent = len(self.queue.refs)
        refs = self.queue.refs * deliveries
        await asyncio.gather(
            *(
                self.worker.execute(
                    ProcessFileCommand(
                        ref.job_id, ref.task_id, f"worker-{n}", ref.dispatched, n >= sent
                    )
                )
                for n, ref in enumerate(refs)
            )
        )
        return self.job


# --- ready exports --------------------------------------------------------------------


async def test_ready_with_three_files_completes_three_of_three():
    flow = Pipeline(status(ExportState.READY, files(3)))
    job = await flow.run()
    assert job.status is JobStatus.COMPLETED
    assert flow.counters() == (3, 3, 0)
    assert sorted(flow.transfer.keys) == [
        f"exports/{JOB_ID}/0_part-0.csv",
        f"exports/{JOB_ID}/1_part-1.csv",
        f"exports/{JOB_ID}/2_part-2.csv",
    ]
    [(token, output)] = flow.callbacks.successes
    assert token == RAW_TOKEN
    assert (output["totalTasks"], output["completedTasks"], output["failedTasks"]) == (3, 3, 0)
    assert job.callback.status is CallbackStatus.DELIVERED
    assert flow.callbacks.failures == []


async def test_ten_files_three_failing_complete_with_failures_and_a_failure_callback():
    batch = files(10)
    flow = Pipeline(status(ExportState.READY, batch), failing=[batch[i].url for i in (1, 4, 9)])
    job = await flow.run()
    assert job.status is JobStatus.COMPLETED
    assert flow.counters() == (10, 7, 3)
    assert flow.callbacks.successes == []
    assert flow.callbacks.failures == [
        (RAW_TOKEN, "JobCompletedWithFailures", "Job completed with 3 failed tasks out of 10 total")
    ]


async def test_zero_files_complete_at_once_with_a_success_callback():
    flow = Pipeline(status(ExportState.READY, []))
    job = await flow.run()
    assert job.status is JobStatus.COMPLETED
    assert flow.counters() == (0, 0, 0)
    assert flow.queue.refs == []
    assert flow.transfer.calls == []
    [(_token, output)] = flow.callbacks.successes
    assert (output["status"], output["totalTasks"]) == ("COMPLETED", 0)


async def test_redelivered_work_items_count_each_file_once():
    flow = Pipeline(status(ExportState.READY, files(3)))
    job = await flow.run(deliveries=3)
    assert flow.counters() == (3, 3, 0)
    assert job.status is JobStatus.COMPLETED
    assert flow.callbacks.calls == 1
    assert len(flow.transfer.calls) == 3


async def test_unsafe_file_names_stay_under_the_jobs_prefix():
    flow = Pipeline(
        status(ExportState.READY, [ExportFile("https://f.example/x", "../../etc/passwd")])
    )
    await flow.run()
    assert flow.transfer.keys == [f"exports/{JOB_ID}/0_passwd"]


async def test_job_without_token_runs_the_same_and_sends_no_callback():
    flow = Pipeline(status(ExportState.READY, files(2)), token=None)
    job = await flow.run()
    assert (job.status, flow.counters()) == (JobStatus.COMPLETED, (2, 2, 0))
    assert flow.callbacks.calls == 0


# --- exports that end badly -----------------------------------------------------------


async def test_failed_export_fails_the_job_with_the_apis_message():
    flow = Pipeline(status(ExportState.FAILED, error="source database unreachable"))
    job = await flow.run()
    assert job.status is JobStatus.FAILED
    assert job.error == JobError(JobErrorCode.EXPORT_API_FAILED, "source database unreachable")
    assert flow.callbacks.failures == [(RAW_TOKEN, "ExportFailed", "source database unreachable")]
    assert flow.transfer.calls == []


async def test_expired_export_fails_the_job_as_export_expired():
    flow = Pipeline(status(ExportState.EXPIRED, error="links expired"))
    job = await flow.run()
    assert job.status is JobStatus.FAILED
    assert job.error == JobError(JobErrorCode.EXPORT_EXPIRED, "links expired")
    assert flow.callbacks.failures == [(RAW_TOKEN, "ExportExpired", "links expired")]


async def test_export_never_ready_times_out_after_max_attempts_with_backoff_between_polls():
    flow = Pipeline(status(ExportState.PENDING))
    job = await flow.run()
    # The first status check (at intake) and then MAX_POLLING_ATTEMPTS (4) polls.
    assert flow.api.calls == [EXPORT_ID] * 5
    assert flow.intervals() == [5.0, 10.0, 20.0, 40.0]
    assert job.status is JobStatus.FAILED
    assert job.error == JobError(
        JobErrorCode.POLLING_TIMEOUT, "Export did not complete after 4 attempts"
    )
    [(token, error, cause)] = flow.callbacks.failures
    assert (token, error, cause) == (RAW_TOKEN, "ExportTimedOut", job.error.message)


async def test_polls_until_ready_then_completes():
    flow = Pipeline(
        status(ExportState.PENDING),
        status(ExportState.PROCESSING),
        status(ExportState.READY, files(1)),
    )
    job = await flow.run()
    assert len(flow.api.calls) == 3
    assert flow.intervals() == [5.0, 10.0]
    assert job.status is JobStatus.COMPLETED


CAPPED = replace(POLICY, max_attempts=20)  # long enough to reach the 60 s cap


async def test_a_poll_at_the_backoff_cap_writes_only_its_claim_and_keeps_the_schedule():
    """Held exports cost one write a minute, not two: once the interval has reached the
    lease, the claim's lease is the schedule. The polling cadence is the same."""
    pending = [status(ExportState.PENDING)] * 7
    flow = Pipeline(*pending, status(ExportState.READY, files(1)), policy=CAPPED, lease=MINUTE)
    job = await flow.run()
    assert flow.intervals() == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    # Polls 1-4 back off by less than the lease: their next poll is written. From then
    # on the claim's lease (60 s) falls due exactly at the next poll.
    assert flow.poll_saves[:7] == [1, 1, 1, 1, 0, 0, 0]
    assert job.status is JobStatus.COMPLETED
    assert len(flow.api.calls) == 8  # 7 not ready, then ready


async def test_a_capped_poll_after_a_failed_attempt_writes_to_clear_the_error():
    boom = RuntimeError("export api client broke")
    script = [status(ExportState.PENDING)] * 5 + [boom, status(ExportState.PENDING)]
    flow = Pipeline(*script, status(ExportState.READY, files(1)), policy=CAPPED, lease=MINUTE)
    job = await flow.run()
    # the 6th poll failed (its error written), the 7th was not ready: written to clear it
    assert flow.poll_saves[4:7] == [0, 1, 1]
    assert flow.poll_errors[4:7] == [None, "RuntimeError: export api client broke", None]
    assert flow.intervals()[4:] == [60.0, 60.0, 60.0]
    assert job.status is JobStatus.COMPLETED


async def test_a_capped_poll_ending_after_a_tenth_of_its_interval_writes_its_schedule():
    flow = Pipeline(status(ExportState.PENDING), policy=CAPPED, lease=MINUTE)
    slow = flow.api.get_export

    async def answering_late(export_id: str) -> ExportStatus:
        flow.clock.current += timedelta(seconds=7)  # more than 6 s: the lease is too early
        return await slow(export_id)

    flow.api.get_export = answering_late  # type: ignore[method-assign]
    token = TaskToken(RAW_TOKEN)
    await flow.start.execute(StartExportJobCommand(JOB_ID, EXPORT_ID, USER_ID, {}, token))
    for _ in range(6):
        assert flow.job.next_poll_at is not None
        flow.clock.current = max(flow.clock.now(), flow.job.next_poll_at)
        saves = flow.jobs.saves
        await flow.poller.execute(PollDueJobsCommand(owner="poller-1"))
        flow.poll_saves.append(flow.jobs.saves - saves)
    assert flow.poll_saves == [1] * 6
    assert flow.job.next_poll_at == flow.clock.now() + timedelta(seconds=60)


async def test_a_slow_export_api_answer_keeps_the_poll_leased_until_it_comes():
    """The poll lease is renewed while the Export API takes its time, so no other replica
    polls the job meanwhile, however long the answer (and its retries) take."""
    lease = timedelta(seconds=1.5)  # renewed every 0.5 s of real time
    flow = Pipeline(status(ExportState.PENDING), lease=lease)
    token = TaskToken(RAW_TOKEN)
    await flow.start.execute(StartExportJobCommand(JOB_ID, EXPORT_ID, USER_ID, {}, token))
    answer, answering = asyncio.Event(), flow.api.get_export

    async def slow(export_id: str) -> ExportStatus:
        await answer.wait()
        return await answering(export_id)

    flow.api.get_export = slow  # type: ignore[method-assign]
    assert flow.job.next_poll_at is not None
    flow.clock.current = flow.job.next_poll_at
    polling = asyncio.create_task(flow.poller.execute(PollDueJobsCommand(owner="poller-1")))
    await wait_until(lambda: flow.job.lease_owner == "poller-1")
    first_until = flow.job.lease_expires_at
    assert first_until is not None
    flow.clock.advance(1)
    await wait_until(lambda: (flow.job.lease_expires_at or first_until) > first_until)
    flow.clock.current = first_until + timedelta(seconds=0.1)  # the claim's lease is over
    other = await flow.poller.execute(PollDueJobsCommand(owner="poller-2"))
    assert other.claimed == 0
    answer.set()
    await polling
    assert flow.api.calls == [EXPORT_ID]
    assert flow.job.status is JobStatus.POLLING and flow.job.lease_owner is None


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


# --- heartbeats with the poll ---------------------------------------------------------


async def held(*script: ExportStatus | Exception) -> Pipeline:
    """A job waiting on its export, its workflow heartbeaten by the poller's claims."""
    flow = Pipeline(*script, policy=CAPPED, lease=MINUTE, heartbeat=MINUTE)
    token = TaskToken(RAW_TOKEN)
    await flow.start.execute(StartExportJobCommand(JOB_ID, EXPORT_ID, USER_ID, {}, token))
    return flow


async def poll_when_due(flow: Pipeline) -> None:
    assert flow.job.next_poll_at is not None
    flow.clock.current = max(flow.clock.now(), flow.job.next_poll_at)
    await flow.poller.execute(PollDueJobsCommand(owner="poller-1"))


async def test_each_poll_heartbeats_the_workflow_and_the_heartbeat_round_has_nothing_due():
    """A job waiting on its export costs one write a poll: the poll claim moves the next
    heartbeat and the poller sends it, so the heartbeat round claims nothing."""
    flow = await held(status(ExportState.PENDING))
    assert (await flow.heartbeats.execute(SendHeartbeatsCommand())).sent == 1  # due at once
    for n in range(1, 10):
        await poll_when_due(flow)
        assert len(flow.callbacks.heartbeats) == 1 + n
        assert flow.jobs.next_heartbeats[JOB_ID] == flow.clock.now() + MINUTE
        assert (await flow.heartbeats.execute(SendHeartbeatsCommand())).sent == 0
    assert flow.job.status is JobStatus.POLLING
    assert flow.callbacks.heartbeats == [RAW_TOKEN] * 10


async def test_a_poll_finding_its_workflow_gone_cancels_the_job_and_does_not_poll():
    flow = await held(status(ExportState.READY, files(3)))
    flow.callbacks.fail_heartbeats_for(RAW_TOKEN, TaskClosed("TaskTimedOut", "gone"))
    await poll_when_due(flow)
    assert flow.api.calls == []
    assert flow.job.status is JobStatus.CANCELLED
    assert flow.queue.refs == []  # nothing dispatched
    assert flow.callbacks.failures == [] and flow.callbacks.successes == []


async def test_a_heartbeat_that_cannot_be_delivered_does_not_hold_up_the_poll():
    flow = await held(status(ExportState.PENDING), status(ExportState.READY, files(1)))
    flow.callbacks.fail_heartbeats_for(RAW_TOKEN, CallbackUnavailable("ThrottlingException"))
    await poll_when_due(flow)
    await poll_when_due(flow)
    assert flow.api.calls == [EXPORT_ID, EXPORT_ID]
    assert flow.job.status is JobStatus.DOWNLOADING
    assert flow.callbacks.heartbeat_attempts == [RAW_TOKEN, RAW_TOKEN]


async def test_retryable_api_error_then_ready_completes():
    flow = Pipeline(ExportApiUnavailable("HTTP 503"), status(ExportState.READY, files(2)))
    job = await flow.run()
    assert len(flow.api.calls) == 2
    assert (job.status, flow.counters()) == (JobStatus.COMPLETED, (2, 2, 0))
    assert len(flow.callbacks.successes) == 1


async def test_api_unavailable_on_every_poll_times_out():
    flow = Pipeline(ExportApiUnavailable("connection refused"))
    job = await flow.run()
    assert len(flow.api.calls) == 5  # the first check, then MAX_POLLING_ATTEMPTS
    assert job.error is not None
    assert job.error.code == JobErrorCode.POLLING_TIMEOUT


async def test_rejected_api_call_fails_at_once_with_export_api_failed():
    flow = Pipeline(ExportApiRejected("HTTP 404"), status(ExportState.READY, files(1)))
    job = await flow.run()
    assert flow.api.calls == [EXPORT_ID]
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error.code == JobErrorCode.EXPORT_API_FAILED
    [(_token, error, _cause)] = flow.callbacks.failures
    assert error == "ExportFailed"


# --- several replicas -----------------------------------------------------------------


async def test_two_pollers_at_once_poll_a_due_job_once():
    flow = Pipeline(status(ExportState.PENDING))
    await flow.start.execute(StartExportJobCommand(JOB_ID, EXPORT_ID, USER_ID))
    reports = await asyncio.gather(
        flow.poller.execute(PollDueJobsCommand(owner="a")),
        flow.poller.execute(PollDueJobsCommand(owner="b")),
    )
    assert sorted(report.claimed for report in reports) == [0, 1]
    assert flow.api.calls == [EXPORT_ID]
    assert flow.job.poll is not None
    assert flow.job.poll.attempts == 1


# --- bounds: a failure that repeats ends the job ------------------------------------


async def test_dispatch_failing_every_time_ends_the_job_with_the_last_error():
    flow = Pipeline(*[status(ExportState.READY, files(3))] * 10)

    async def refused(refs):  # e.g. the queue refuses every batch, on every attempt
        raise PublishFailed("3 of 3 work items could not be queued")

    flow.queue.publish = refused  # type: ignore[method-assign]
    job = await flow.run()
    assert job.status is JobStatus.FAILED
    assert job.error == JobError(
        JobErrorCode.PROCESSING_ERROR,
        "Dispatching did not move on after 3 attempts; "
        "last: PublishFailed: 3 of 3 work items could not be queued",
    )
    # the poll that found it ready, then two claims that read the listing again
    assert len(flow.api.calls) == 3
    [(_token, error, cause)] = flow.callbacks.failures
    assert (error, cause) == ("ProcessingError", job.error.message)


async def test_attempts_whose_replica_died_count_and_end_the_job():
    flow = Pipeline(status(ExportState.PENDING))
    await flow.start.execute(
        StartExportJobCommand(JOB_ID, EXPORT_ID, USER_ID, {}, TaskToken(RAW_TOKEN))
    )
    for n in range(5):  # each replica claims the job and dies before concluding
        flow.clock.current += LEASE + timedelta(seconds=1)
        [claimed] = await flow.jobs.claim_due_for_polling(
            flow.clock.now(), f"dead-{n}", flow.clock.now() + LEASE, 10
        )
        assert claimed.poll is not None and claimed.poll.attempts == n + 1
    flow.clock.current += LEASE + timedelta(seconds=1)
    await flow.poller.execute(PollDueJobsCommand(owner="alive"))
    assert flow.api.calls == []  # it was not polled again: its attempts were used up
    assert flow.job.status is JobStatus.FAILED
    assert flow.job.error is not None
    assert flow.job.error.message == (
        "Polling or dispatching did not conclude after 5 attempts; "
        "last: the attempt did not finish (its replica may have stopped)"
    )
    assert [f[1] for f in flow.callbacks.failures] == ["ProcessingError"]


async def test_more_files_than_allowed_fail_the_job_before_anything_is_written():
    flow = Pipeline(status(ExportState.READY, files(4)))
    flow.poller = replace(
        flow.poller, dispatch=replace(flow.poller.dispatch, limits=ExportLimits(max_files=3))
    )
    job = await flow.run()
    assert job.error == JobError(
        JobErrorCode.EXPORT_API_FAILED,
        "Export lists 4 files; at most 3 are allowed per job (MAX_FILES_PER_JOB)",
    )
    assert (flow.queue.refs, flow.tasks.items) == ([], {})
    assert flow.callbacks.failures[0][1] == "ExportFailed"


@pytest.mark.parametrize(
    ("listed", "reason"),
    [
        (
            ExportFile("https://f.example/" + "a" * 9000, "a.csv"),
            "Export file 1: url is 9018 characters long (at most 8192)",
        ),
        (
            ExportFile("https://f.example/x", "名" * 199 + ".csv"),  # with a long S3_PREFIX
            "Export file 1: its object key would be 1132 bytes (S3 allows 1024)",
        ),
        (
            ExportFile("https://f.example/x", "a.csv", size=6 * 1024**4),
            "Export file 1: fileSize 6597069766656 is larger than S3's 5 TiB object limit",
        ),
    ],
)
async def test_a_field_beyond_its_bound_fails_the_job_with_the_reason(listed, reason):
    flow = Pipeline(status(ExportState.READY, [files(1)[0], listed]))
    dispatch = replace(flow.poller.dispatch, s3_prefix="p" * 500 + "/")
    flow.poller = replace(flow.poller, dispatch=dispatch)
    job = await flow.run()
    assert (job.status, job.error) == (
        JobStatus.FAILED,
        JobError(JobErrorCode.EXPORT_API_FAILED, reason),
    )
    assert (flow.queue.refs, flow.tasks.items, flow.transfer.calls) == ([], {}, [])


def test_a_stored_failure_text_never_carries_an_address():
    from src.application.services.failure_text import describe

    text = describe(OSError("GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc failed\nmore"))
    assert text == "OSError: GET <url> failed"
    assert len(describe(ValueError("x" * 1000))) == 300
