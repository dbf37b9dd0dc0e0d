"""In-memory fakes of the application ports. Each keeps the same promise as its adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from src.application.ports.export_api import ExportStatus
from src.application.ports.file_transfer import OnCheckpoint, TransferFailed, TransferResult
from src.application.ports.job_queries import BadCursor, JobPage, TaskPage
from src.application.ports.job_repository import AttachOutcome, ConditionFailed
from src.application.ports.task_repository import Recorded, RecordOutcome
from src.application.ports.work_queue import TaskRef
from src.application.ports.workflow_callbacks import CallbackError
from src.domain.dispatch_progress import DispatchProgress
from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.events import DomainEvent
from src.domain.export_job import ExportJob
from src.domain.job_status import CallbackStatus, JobStatus
from src.domain.task_token import TaskToken
from src.domain.upload_checkpoint import UploadCheckpoint

T0 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)

_HEARTBEATING = frozenset({JobStatus.PROCESSING, JobStatus.POLLING, JobStatus.DOWNLOADING})
_OWED = frozenset({CallbackStatus.PENDING, CallbackStatus.RETRYING})


class InMemoryJobs:  # implements JobRepository
    """Like DynamoDbJobRepository: create is a conditional put, save is a conditional
    update on `version`. Every call yields to the event loop first, so concurrent callers
    interleave the way two replicas would; the check and the write never do.
    `next_heartbeats` is the adapter's nextHeartbeatAt: kept beside the job, never by save."""

    def __init__(self, jobs: Iterable[ExportJob] = ()) -> None:
        self.items: dict[str, ExportJob] = {job.job_id: job for job in jobs}
        self.next_heartbeats: dict[str, datetime] = {}
        self.created: list[ExportJob] = []  # what each successful create wrote
        self.saves = 0

    async def create(self, job: ExportJob) -> bool:
        await asyncio.sleep(0)
        if job.job_id in self.items:
            return False
        self.items[job.job_id] = job
        self.created.append(job)
        return True

    async def get(self, job_id: str, *, counted: bool = True) -> ExportJob | None:
        await asyncio.sleep(0)  # counters here are always current, counted or not
        return self.items.get(job_id)

    async def save(self, job: ExportJob) -> ExportJob:
        await asyncio.sleep(0)
        stored = self.items.get(job.job_id)
        if stored is None or stored.version != job.version:
            raise ConditionFailed(job.job_id)
        if stored.is_terminal and job.status is not stored.status:
            raise ConditionFailed(job.job_id)
        # Like the adapter, save never writes the workflow sets (they have their own writes).
        saved = replace(
            job,
            version=job.version + 1,
            waiting_tokens=stored.waiting_tokens,
            answered=stored.answered,
            heartbeat_stopped=stored.heartbeat_stopped,
        )
        self.items[job.job_id] = saved
        self.saves += 1
        return saved

    async def attach_workflow(
        self, job_id: str, token: TaskToken, max_waiting: int
    ) -> AttachOutcome:
        await asyncio.sleep(0)
        job = self.items.get(job_id)
        if job is None or job.is_terminal or len(job.waiting_tokens) >= max_waiting:
            return AttachOutcome.REFUSED
        attached = job if token in job.waiting_tokens else job.attach(token)
        self.items[job_id] = replace(attached, version=job.version + 1)
        return AttachOutcome.ATTACHED

    async def mark_answered(self, job_id: str, digests: Iterable[str]) -> None:
        await asyncio.sleep(0)
        job = self.items.get(job_id)
        if job is not None:
            self.items[job_id] = replace(job, answered=job.answered | frozenset(digests))

    async def stop_heartbeats(self, job_id: str, digests: Iterable[str]) -> None:
        await asyncio.sleep(0)
        job = self.items.get(job_id)
        if job is not None:
            stopped = job.heartbeat_stopped | frozenset(digests)
            self.items[job_id] = replace(job, heartbeat_stopped=stopped)

    async def claim_due_for_polling(
        self,
        now: datetime,
        owner: str,
        until: datetime,
        limit: int,
        heartbeat_at: datetime | None = None,
    ) -> list[ExportJob]:
        await asyncio.sleep(0)
        due = [
            job
            for job in self.items.values()
            if job.status in (JobStatus.POLLING, JobStatus.PROCESSING)
            and job.poll is not None
            and job.poll.next_at <= now
            and (job.lease_expires_at is None or job.lease_expires_at <= now)
        ]
        claimed = []
        for job in due[:limit]:
            leased = replace(job.claimed_for_polling(owner, until), version=job.version + 1)
            self.items[job.job_id] = leased
            if heartbeat_at is not None:
                self.next_heartbeats[job.job_id] = heartbeat_at
            claimed.append(leased)
        return claimed

    async def renew_poll(self, job_id: str, owner: str, until: datetime) -> bool:
        await asyncio.sleep(0)
        job = self.items.get(job_id)
        if job is None or job.status is not JobStatus.POLLING or job.lease_owner != owner:
            return False
        self.items[job_id] = replace(job, lease_expires_at=until)
        return True

    async def advance_dispatch(
        self,
        job_id: str,
        owner: str,
        cursor: int,
        to: int | None,
        until: datetime,
        now: datetime | None = None,
    ) -> bool:
        await asyncio.sleep(0)
        job = self._dispatch_held(job_id, owner, cursor)
        if job is None or job.dispatch is None:
            return False
        if to is None:
            moved = replace(job, dispatch=None).release()
        elif to == cursor:
            moved = replace(job, lease_expires_at=until)
        else:
            moved = replace(job, dispatch=job.dispatch.advanced(to), lease_expires_at=until)
        if now is not None and to != cursor:
            moved = replace(moved, updated_at=now)
        self.items[job_id] = replace(moved, version=job.version + 1)
        return True

    async def record_dispatch_failure(
        self, job_id: str, owner: str, cursor: int, error: str, retry_at: datetime
    ) -> bool:
        await asyncio.sleep(0)
        job = self._dispatch_held(job_id, owner, cursor)
        if job is None or job.dispatch is None:
            return False
        failed = replace(job, dispatch=job.dispatch.failed(error), lease_expires_at=retry_at)
        self.items[job_id] = replace(failed, version=job.version + 1)
        return True

    async def rewind_dispatch(
        self,
        job_id: str,
        owner: str,
        cursor: int,
        progress: DispatchProgress,
        retry_at: datetime,
    ) -> bool:
        await asyncio.sleep(0)
        job = self._dispatch_held(job_id, owner, cursor)
        if job is None:
            return False
        rewound = replace(job, dispatch=progress, lease_expires_at=retry_at)
        self.items[job_id] = replace(rewound, version=job.version + 1)
        return True

    def _dispatch_held(self, job_id: str, owner: str, cursor: int) -> ExportJob | None:
        job = self.items.get(job_id)
        if (
            job is None
            or job.status is not JobStatus.DOWNLOADING
            or job.dispatch is None
            or job.dispatch.cursor != cursor
            or job.lease_owner != owner
        ):
            return None
        return job

    async def restart_dispatch(self, job_id: str, now: datetime) -> bool:
        await asyncio.sleep(0)
        job = self.items.get(job_id)
        if job is None or job.status is not JobStatus.DOWNLOADING or job.dispatch is not None:
            return False
        restarted = replace(job.release(), dispatch=DispatchProgress(0, 0))
        self.items[job_id] = replace(restarted, version=job.version + 1)
        return True

    async def claim_unfinished_dispatches(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[ExportJob]:
        await asyncio.sleep(0)
        claimed = []
        for job in list(self.items.values()):
            if len(claimed) >= limit:
                break
            if job.status is not JobStatus.DOWNLOADING or job.dispatch is None:
                continue
            if job.is_leased(now):
                continue
            taken = replace(
                job.leased(owner, until), dispatch=job.dispatch.claimed(), version=job.version + 1
            )
            self.items[job.job_id] = taken
            claimed.append(taken)
        return claimed

    async def adopt_unscheduled(self, now: datetime, limit: int) -> int:
        await asyncio.sleep(0)
        return 0  # every POLLING job here is on the schedule already

    async def claim_due_heartbeats(
        self, now: datetime, next_at: datetime, limit: int
    ) -> list[ExportJob]:
        await asyncio.sleep(0)  # the query
        due = [job for job in self.items.values() if self._heartbeat_due(job, now)][:limit]
        claimed = []
        for job in due:
            await asyncio.sleep(0)  # one conditional write per job; another replica may win
            if self._heartbeat_due(self.items[job.job_id], now):
                self.next_heartbeats[job.job_id] = next_at
                claimed.append(self.items[job.job_id])
        return claimed

    def _heartbeat_due(self, job: ExportJob, now: datetime) -> bool:
        next_at = self.next_heartbeats.get(job.job_id)
        return (
            job.status in _HEARTBEATING
            and job.has_task_token()
            and (next_at is None or next_at <= now)
        )

    async def list_owing_callbacks(self, now: datetime, limit: int) -> list[ExportJob]:
        await asyncio.sleep(0)
        owing = [
            job
            for job in self.items.values()
            if job.is_terminal
            and job.has_task_token()
            and job.callback.status in _OWED
            and not job.is_leased(now)
        ]
        return owing[:limit]

    async def list_stalled(
        self, status: JobStatus, updated_before: datetime, limit: int
    ) -> list[ExportJob]:
        await asyncio.sleep(0)
        stalled = [
            job
            for job in self.items.values()
            if job.status is status and job.updated_at <= updated_before
        ]
        return stalled[:limit]

    async def list_overdue(
        self, status: JobStatus, created_before: datetime, limit: int
    ) -> list[ExportJob]:
        await asyncio.sleep(0)
        overdue = [
            job
            for job in self.items.values()
            if job.status is status and job.created_at <= created_before
        ]
        return overdue[:limit]


class InMemoryTasks:  # implements TaskRepository
    """Like DynamoDbTaskRepository: no record until a worker takes a task or records it,
    claims leased, and a result written together with the job's counters, which live
    apart from the job item (`progress`: pending, completed, failed) and show on the job
    while it is DOWNLOADING. A job without counters (dispatched by an earlier version)
    is counted on the job item itself, only while DOWNLOADING."""

    def __init__(self, jobs: InMemoryJobs) -> None:
        self.jobs = jobs
        self.items: dict[tuple[str, str], DownloadTask] = {}
        self.progress: dict[str, tuple[int, int, int]] = {}

    async def add_all(self, tasks: Sequence[DownloadTask]) -> list[DownloadTask]:
        await asyncio.sleep(0)
        for task in tasks:
            self.items.setdefault((task.job_id, task.task_id), task)
        return [self.items[(task.job_id, task.task_id)] for task in tasks]

    async def get(self, job_id: str, task_id: str) -> DownloadTask | None:
        await asyncio.sleep(0)
        return self.items.get((job_id, task_id))

    async def list_for_job(self, job_id: str) -> list[DownloadTask]:
        await asyncio.sleep(0)
        return sorted((t for t in self.items.values() if t.job_id == job_id), key=_by_index)

    async def start_counting(self, job_id: str, total: int, now: datetime) -> None:
        await asyncio.sleep(0)
        self.progress.setdefault(job_id, (total, 0, 0))
        job = self.jobs.items.get(job_id)
        if job is not None:  # what the job repository shows from now on
            self.jobs.items[job_id] = replace(job, counted_apart=True)

    async def finished_indexes(self, job_id: str, first: int, end: int) -> set[int]:
        await asyncio.sleep(0)
        return {
            t.index
            for t in self.items.values()
            if t.job_id == job_id and first <= t.index < end and t.status.is_terminal
        }

    async def claim(
        self, task: DownloadTask, owner: str, until: datetime, now: datetime
    ) -> DownloadTask | None:
        await asyncio.sleep(0)
        stored = self.items.get((task.job_id, task.task_id), task)
        if stored.status.is_terminal or (stored.is_leased(now) and stored.lease_owner != owner):
            return None
        claimed = stored.start(owner, until)
        self.items[(task.job_id, task.task_id)] = claimed
        return claimed

    async def renew(
        self, task: DownloadTask, owner: str, until: datetime, upload: UploadCheckpoint | None
    ) -> bool:
        await asyncio.sleep(0)
        stored = self.items[(task.job_id, task.task_id)]
        if stored.status is not TaskStatus.RUNNING or stored.lease_owner != owner:
            return False
        renewed = replace(stored, lease_expires_at=until)
        self.items[(task.job_id, task.task_id)] = renewed.checkpointed(upload or stored.upload)
        return True

    async def record_result(
        self, task: DownloadTask, owner: str, *, leased: bool = True
    ) -> Recorded:
        await asyncio.sleep(0)
        key = (task.job_id, task.task_id)
        stored = self.items.get(key)
        duplicate = Recorded(RecordOutcome.DUPLICATE)
        if not leased:
            if stored is not None and stored.status.is_terminal:
                return duplicate
        elif (
            stored is None or stored.status is not TaskStatus.RUNNING or stored.lease_owner != owner
        ):
            return duplicate
        succeeded = task.status is TaskStatus.COMPLETED
        job = self.jobs.items[task.job_id]
        at = task.finished_at or job.updated_at
        if task.job_id not in self.progress:  # an earlier version's job: on the job item
            if job.status is not JobStatus.DOWNLOADING:
                self.items[key] = task
                return duplicate
            counted = job.record_file(succeeded=succeeded, now=at)
            self.items[key] = task
            self.jobs.items[job.job_id] = replace(counted, version=job.version + 1)
            return Recorded(RecordOutcome.COUNTED_MAYBE_LAST)
        pending, completed, failed = self.progress[task.job_id]
        self.items[key] = task
        if pending == 0:
            return duplicate
        completed, failed = completed + succeeded, failed + (not succeeded)
        self.progress[task.job_id] = (pending - 1, completed, failed)
        if job.status is JobStatus.DOWNLOADING:  # what the job repository shows
            self.jobs.items[job.job_id] = job.with_progress(completed, failed, at)
        if pending == 1:
            return Recorded(RecordOutcome.COUNTED_LAST, (completed, failed))
        return Recorded(RecordOutcome.COUNTED)

    async def reopen_failed(
        self, job: ExportJob, reopened: ExportJob, tasks: Sequence[DownloadTask]
    ) -> ExportJob:
        await asyncio.sleep(0)
        stored = self.jobs.items.get(job.job_id)
        if (
            stored is None
            or job.job_id not in self.progress  # counted by an earlier version
            or stored.version != job.version
            or stored.status is not job.status
            or stored.callback.status is not job.callback.status
        ):
            raise ConditionFailed(job.job_id)
        chunks = [list(tasks[:98])] + [list(tasks[i : i + 99]) for i in range(98, len(tasks), 99)]
        saved = replace(reopened, version=job.version + 1)
        for number, chunk in enumerate(chunks):  # each chunk all or nothing, like a transaction
            pending, completed, failed = self.progress[job.job_id]
            keys = [(t.job_id, t.task_id) for t in chunk]
            if failed < len(chunk) or any(
                k not in self.items or self.items[k].status is not TaskStatus.FAILED for k in keys
            ):
                if number == 0:
                    raise ConditionFailed(job.job_id)
                raise RuntimeError("transaction cancelled")
            self.progress[job.job_id] = (pending + len(chunk), completed, failed - len(chunk))
            for task in chunk:
                self.items[(task.job_id, task.task_id)] = task
            if number == 0:
                self.jobs.items[job.job_id] = saved
            shown = self.jobs.items[job.job_id]  # what the job repository shows
            self.jobs.items[job.job_id] = shown.with_progress(completed, failed - len(chunk), None)
        return saved

    async def release(self, task: DownloadTask, owner: str) -> None:
        await asyncio.sleep(0)
        stored = self.items[(task.job_id, task.task_id)]
        if stored.status is TaskStatus.RUNNING and stored.lease_owner == owner:
            self.items[(task.job_id, task.task_id)] = replace(
                stored, status=TaskStatus.PENDING, lease_owner=None, lease_expires_at=None
            )


def _by_index(task: DownloadTask) -> int:
    return task.index


class InMemoryJobQueries:  # implements JobQueries
    """Like DynamoDbJobQueries: newest first by createdAt (then jobId), pages of `limit`,
    opaque cursors tied to their filters; the counters item is not a file."""

    def __init__(self, jobs: InMemoryJobs, tasks: InMemoryTasks) -> None:
        self.jobs, self.tasks = jobs, tasks

    @staticmethod
    def _cursor(kind: str, offset: int) -> str:
        return f"{kind}|{offset}"

    @staticmethod
    def _offset(cursor: str | None, kind: str) -> int:
        if not cursor:
            return 0
        cursor_kind, _, offset = cursor.rpartition("|")
        if cursor_kind != kind or not offset.isdigit():
            raise BadCursor("the cursor belongs to another query (or is not a cursor)")
        return int(offset)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        user_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        await asyncio.sleep(0)
        kind = f"{status}:{user_id}"
        start = self._offset(cursor, kind)
        chosen = sorted(
            (
                job
                for job in self.jobs.items.values()
                if (status is None or job.status is status)
                and (user_id is None or job.user_id == user_id)
            ),
            key=lambda job: (job.created_at, job.job_id),
            reverse=True,
        )
        page = chosen[start : start + limit]
        more = start + limit < len(chosen)
        return JobPage(page, self._cursor(kind, start + limit) if more else None)

    async def list_tasks(
        self, job_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> TaskPage:
        kind = f"tasks:{job_id}"
        start = self._offset(cursor, kind)
        recorded = await self.tasks.list_for_job(job_id)
        page = recorded[start : start + limit]
        more = start + limit < len(recorded)
        return TaskPage(page, self._cursor(kind, start + limit) if more else None)


class RecordingQueue:  # implements WorkQueue
    def __init__(self) -> None:
        self.refs: list[TaskRef] = []
        self.waiting = 0  # what backlog() says, besides the refs

    async def backlog(self) -> int:
        return self.waiting

    async def publish(self, refs: Sequence[TaskRef]) -> None:
        self.refs.extend(refs)


class FakeCallbacks:  # implements WorkflowCallbacks
    """Records every answer with the revealed token; `fail_for` makes a token's calls raise,
    `fail_heartbeats_for` only its heartbeats; `recover` lets its calls through again.
    `heartbeats` holds the delivered ones, `heartbeat_attempts` every try."""

    def __init__(self) -> None:
        self.successes: list[tuple[str, Mapping[str, object]]] = []
        self.failures: list[tuple[str, str, str]] = []
        self.heartbeats: list[str] = []
        self.heartbeat_attempts: list[str] = []
        self._errors: dict[str, CallbackError] = {}
        self._heartbeat_errors: dict[str, CallbackError] = {}

    def fail_for(self, token: str, error: CallbackError) -> None:
        self._errors[token] = error

    def fail_heartbeats_for(self, token: str, error: CallbackError) -> None:
        self._heartbeat_errors[token] = error

    def recover(self, token: str) -> None:
        self._errors.pop(token, None)
        self._heartbeat_errors.pop(token, None)

    @property
    def calls(self) -> int:
        return len(self.successes) + len(self.failures)

    def _check(self, token: TaskToken) -> str:
        raw = token.reveal()
        if raw in self._errors:
            raise self._errors[raw]
        return raw

    async def send_success(self, token: TaskToken, output: Mapping[str, object]) -> None:
        self.successes.append((self._check(token), dict(output)))

    async def send_failure(self, token: TaskToken, error: str, cause: str) -> None:
        self.failures.append((self._check(token), error, cause))

    async def send_heartbeat(self, token: TaskToken) -> None:
        raw = token.reveal()
        self.heartbeat_attempts.append(raw)
        if raw in self._heartbeat_errors:
            raise self._heartbeat_errors[raw]
        self.heartbeats.append(self._check(token))


class InMemoryLeases:  # implements Leases
    """Like DynamoDbLeases: one conditional put that wins when the lease is free, expired
    (its end <= now) or already held by the same owner."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, datetime]] = {}

    async def acquire(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        await asyncio.sleep(0)
        current = self.held.get(name)
        if current is not None and current[0] != owner and current[1] > now:
            return False
        self.held[name] = (owner, until)
        return True


class RecordingEvents:  # implements EventPublisher
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]

    async def publish(self, event: DomainEvent) -> None:
        self.events.append(event)


class FixedClock:  # implements Clock
    """Time stands still unless set or slept; sleeping advances it instantly."""

    def __init__(self, now: datetime = T0) -> None:
        self.current = now
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


class FakeExportApi:  # implements ExportApi
    """Plays a script per export id: each call takes the next ExportStatus (or raises the
    next exception); the last entry repeats forever."""

    def __init__(self, scripts: Mapping[str, Sequence[ExportStatus | Exception]]) -> None:
        self._scripts = {export_id: list(steps) for export_id, steps in scripts.items()}
        self.calls: list[str] = []

    async def get_export(self, export_id: str) -> ExportStatus:
        self.calls.append(export_id)
        steps = self._scripts[export_id]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        return step


class FakeTransfer:  # implements FileTransfer
    """Succeeds for every URL except those in `failing` (404) and `refused` (403, as an
    expired presigned URL is); records (url, key) per call and every `resume` it got."""

    def __init__(self, failing: Iterable[str] = (), refused: Iterable[str] = ()) -> None:
        self.failing = set(failing)
        self.refused = set(refused)
        self.calls: list[tuple[str, str]] = []
        self.resumes: list[UploadCheckpoint | None] = []

    @property
    def keys(self) -> list[str]:
        return [key for _url, key in self.calls]

    async def transfer(
        self,
        url: str,
        key: str,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        resume: UploadCheckpoint | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> TransferResult:
        self.calls.append((url, key))
        self.resumes.append(resume)
        await asyncio.sleep(0)
        if url in self.refused:
            raise TransferFailed("HTTP 403 from the file server", url_refused=True)
        if url in self.failing:
            raise TransferFailed(f"HTTP 404 for file {len(self.calls)}")
        return TransferResult(key=key, bytes=expected_size or 0, sha256="0" * 64)
