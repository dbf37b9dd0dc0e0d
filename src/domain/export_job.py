"""The export job: one workflow's request, its progress and its answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from src.domain.dispatch_progress import DispatchProgress
from src.domain.errors import IllegalTransition, InvalidCounters
from src.domain.job_status import ALLOWED, CallbackStatus, JobStatus
from src.domain.polling import PollPolicy, PollState
from src.domain.task_token import TaskToken

RETENTION = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """What happened when the service answered (or tried to answer) the workflow."""

    status: CallbackStatus
    attempts: int = 0
    last_error: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExportJob:
    job_id: str
    export_id: str
    user_id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, object] = field(default_factory=dict)
    task_token: TaskToken | None = None
    total_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    completed_at: datetime | None = None
    error: JobError | None = None
    callback: CallbackRecord = CallbackRecord(CallbackStatus.NOT_REQUIRED)
    poll: PollState | None = None
    dispatch: DispatchProgress | None = None  # while its files are being dispatched
    # Its files are counted apart from the job (on a counters item): every job dispatched
    # by this version. False: an earlier version's, counted on the job item itself.
    counted_apart: bool = False
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    version: int = 0
    # Other workflows that sent the same job (a re-run with the same input): each is
    # answered once with the job's outcome. Stored by digest once answered or gone.
    waiting_tokens: tuple[TaskToken, ...] = ()
    answered: frozenset[str] = frozenset()
    heartbeat_stopped: frozenset[str] = frozenset()  # InvalidToken: no more heartbeats
    # The Step Functions execution that sent the job (optional, for tracing only).
    execution_arn: str | None = None

    @classmethod
    def create(
        cls,
        *,
        job_id: str,
        export_id: str,
        user_id: str,
        now: datetime,
        metadata: Mapping[str, object] | None = None,
        task_token: TaskToken | None = None,
        policy: PollPolicy | None = None,
        execution_arn: str | None = None,
    ) -> ExportJob:
        """A new job starts PROCESSING, as the original's first write did. With a poll
        `policy` its first poll is scheduled (due now) in that same write; the claim of
        that poll moves it to POLLING."""
        callback = CallbackStatus.PENDING if task_token else CallbackStatus.NOT_REQUIRED
        return cls(
            job_id=job_id,
            export_id=export_id,
            user_id=user_id,
            status=JobStatus.PROCESSING,
            created_at=now,
            updated_at=now,
            metadata=dict(metadata or {}),
            task_token=task_token,
            callback=CallbackRecord(callback),
            poll=PollState.start(now, policy) if policy else None,
            execution_arn=execution_arn,
        )

    def has_task_token(self) -> bool:
        """Whether any workflow waits on this job (the first one or one attached later)."""
        return self.task_token is not None or bool(self.waiting_tokens)

    def tokens(self) -> tuple[TaskToken, ...]:
        primary = (self.task_token,) if self.task_token is not None else ()
        return primary + self.waiting_tokens

    def knows_token(self, token: TaskToken) -> bool:
        """The token is this job's already: a redelivered message, not a new workflow."""
        return token in self.tokens() or token.digest() in self.answered

    def same_request(self, export_id: str, user_id: str) -> bool:
        return self.export_id == export_id and self.user_id == user_id

    def unanswered_tokens(self) -> tuple[TaskToken, ...]:
        """The workflows still owed an answer (none while no answer is due)."""
        if self.callback.status not in (CallbackStatus.PENDING, CallbackStatus.RETRYING):
            return ()
        return tuple(t for t in self.tokens() if t.digest() not in self.answered)

    def heartbeat_tokens(self) -> tuple[TaskToken, ...]:
        """Tokens to keep alive: not answered, not gone, not refused as invalid."""
        skip = self.answered | self.heartbeat_stopped
        return tuple(t for t in self.tokens() if t.digest() not in skip)

    def attach(self, token: TaskToken) -> ExportJob:
        """Another workflow waits for this running job too."""
        if self.is_terminal:
            raise IllegalTransition(self.status, self.status)
        callback = self.callback
        if callback.status is CallbackStatus.NOT_REQUIRED:
            callback = CallbackRecord(CallbackStatus.PENDING)
        return replace(self, waiting_tokens=(*self.waiting_tokens, token), callback=callback)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def expires_at(self) -> datetime:
        return self.created_at + RETENTION

    @property
    def pending_tasks(self) -> int:
        return self.total_tasks - self.completed_tasks - self.failed_tasks

    @property
    def all_files_done(self) -> bool:
        return self.pending_tasks == 0

    @property
    def succeeded(self) -> bool:
        return self.status is JobStatus.COMPLETED and self.failed_tasks == 0

    def duration_ms(self) -> int:
        end = self.completed_at or self.updated_at
        return max(0, int((end - self.created_at).total_seconds() * 1000))

    def move_to(self, status: JobStatus, now: datetime) -> ExportJob:
        if status not in ALLOWED[self.status]:
            raise IllegalTransition(self.status, status)
        if status.is_terminal:
            # The poll record stays: how many attempts it took is worth keeping.
            ended = replace(self, status=status, updated_at=now, completed_at=now, dispatch=None)
            return ended.release()
        return replace(self, status=status, updated_at=now)

    def start_polling(self, now: datetime, policy: PollPolicy | None = None) -> ExportJob:
        """POLLING, first poll due now; the schedule lives on the job, not in memory."""
        moved = self.move_to(JobStatus.POLLING, now)
        return replace(moved, poll=PollState.start(now, policy or PollPolicy()))

    def claimed_for_polling(self, owner: str, until: datetime) -> ExportJob:
        """Leased to poll it, and the attempt counted in the same write; a job created
        with its first poll scheduled moves from PROCESSING to POLLING there."""
        poll = self.poll.claimed() if self.poll else None
        status = JobStatus.POLLING if self.status is JobStatus.PROCESSING else self.status
        if status not in (self.status, *ALLOWED[self.status]):
            raise IllegalTransition(self.status, status)
        return replace(self.leased(owner, until), poll=poll, status=status)

    def polled(self, now: datetime, policy: PollPolicy, error: str | None = None) -> ExportJob:
        """The claimed attempt is over (not ready, or failed with `error`): the next one
        backs off; the lease is given back. (A job left POLLING by the original service
        has no schedule yet: it starts one now, this attempt counted.)"""
        state = self.poll or PollState.start(now, policy).claimed()
        return replace(self, poll=state.rescheduled(now, policy, error), updated_at=now).release()

    @property
    def next_poll_at(self) -> datetime | None:
        """When a replica may poll it next: the scheduled poll, or the end of the lease
        of the replica polling it if later (a claim's lease can be the schedule itself)."""
        if self.poll is None:
            return None
        polling = self.status in (JobStatus.POLLING, JobStatus.PROCESSING)
        if (
            polling
            and self.lease_expires_at is not None
            and self.lease_expires_at > self.poll.next_at
        ):
            return self.lease_expires_at
        return self.poll.next_at

    def polling_exhausted(self, now: datetime, policy: PollPolicy) -> bool:
        return self.poll is not None and self.poll.exhausted(now, policy)

    def release(self) -> ExportJob:
        return replace(self, lease_owner=None, lease_expires_at=None)

    def leased(self, owner: str, until: datetime) -> ExportJob:
        """Polling and answering the workflow are leased: whoever holds an unexpired
        lease is the only one doing it; a dead holder's lease runs out."""
        return replace(self, lease_owner=owner, lease_expires_at=until)

    def is_leased(self, now: datetime) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def start_downloading(self, total: int, now: datetime) -> ExportJob:
        if total < 0:
            raise InvalidCounters("total tasks cannot be negative")
        moved = self.move_to(JobStatus.DOWNLOADING, now)
        return replace(moved, total_tasks=total, poll=None, dispatch=None).release()

    def start_dispatching(
        self, total: int, owner: str, until: datetime, now: datetime, ahead: int = 0
    ) -> ExportJob:
        """DOWNLOADING with `total` files of which none is dispatched yet: the workers
        start on the first chunk while `owner` (under its lease) dispatches the rest.
        `ahead`: the cursor written ahead past the first chunk, about to be sent."""
        moved = self.start_downloading(total, now)
        return replace(moved, dispatch=DispatchProgress(ahead)).leased(owner, until)

    @property
    def is_dispatching(self) -> bool:
        return self.dispatch is not None

    def with_progress(self, completed: int, failed: int, at: datetime | None) -> ExportJob:
        """The file counters as counted apart from the job (and when they last moved)."""
        if completed + failed > self.total_tasks or min(completed, failed) < 0:
            raise InvalidCounters(f"job {self.job_id}: {completed}+{failed} of {self.total_tasks}")
        updated = max(self.updated_at, at) if at else self.updated_at
        return replace(
            self,
            completed_tasks=completed,
            failed_tasks=failed,
            updated_at=updated,
            counted_apart=True,
        )

    def record_file(self, *, succeeded: bool, now: datetime) -> ExportJob:
        if self.pending_tasks <= 0:
            raise InvalidCounters(f"job {self.job_id} has no file left to count")
        if succeeded:
            return replace(self, completed_tasks=self.completed_tasks + 1, updated_at=now)
        return replace(self, failed_tasks=self.failed_tasks + 1, updated_at=now)

    def complete(self, now: datetime) -> ExportJob:
        """COMPLETED even when some files failed: failedTasks tells, and the workflow is
        still answered with a failure."""
        if not self.all_files_done:
            raise InvalidCounters(f"job {self.job_id} still has {self.pending_tasks} files")
        return self.move_to(JobStatus.COMPLETED, now)

    def fail(self, code: str, message: str, now: datetime) -> ExportJob:
        return replace(self.move_to(JobStatus.FAILED, now), error=JobError(code, message))

    def cancel(self, code: str, message: str, now: datetime) -> ExportJob:
        return replace(self.move_to(JobStatus.CANCELLED, now), error=JobError(code, message))

    def retry_refusal(self) -> str | None:
        """Why the failed files of this job cannot be copied again, or None."""
        if not self.is_terminal:
            return f"the job is still {self.status.value}"
        if self.status is not JobStatus.COMPLETED:
            return f"the job ended {self.status.value}: only a completed job's failed files can be retried"
        if self.failed_tasks <= 0:
            return "the job has no failed file"
        if self.answered:
            return "a workflow has already taken its answer: a retry cannot change it"
        if self.callback.status is CallbackStatus.DELIVERED:
            at = self.callback.at.isoformat() if self.callback.at else "earlier"
            return f"its answer was delivered to the workflow ({at}): a retry cannot change it"
        return None

    def reopen_failed(self, files: int, now: datetime) -> ExportJob:
        """DOWNLOADING again for `files` of its failed files (an operator's retry of a job
        whose answer was not delivered): the one way back from a finished status. Its
        workflows, if any are still owed an answer, get it when the job ends again."""
        refusal = self.retry_refusal()
        if refusal is not None:
            raise IllegalTransition(self.status, JobStatus.DOWNLOADING)
        if not 0 < files <= self.failed_tasks:
            raise InvalidCounters(f"job {self.job_id}: {files} of {self.failed_tasks} failed")
        callback = self.callback
        if callback.status is CallbackStatus.RETRYING:
            callback = replace(callback, status=CallbackStatus.PENDING)
        return replace(
            self,
            status=JobStatus.DOWNLOADING,
            failed_tasks=self.failed_tasks - files,
            updated_at=now,
            completed_at=None,
            error=None,
            callback=callback,
            poll=None,
            dispatch=None,
        ).release()

    def callback_delivered(self, now: datetime) -> ExportJob:
        record = CallbackRecord(
            CallbackStatus.DELIVERED, self.callback.attempts + 1, self.callback.last_error, now
        )
        return replace(self, callback=record, updated_at=now).release()

    def callback_failed(
        self, error_code: str, now: datetime, *, retryable: bool = False
    ) -> ExportJob:
        status = CallbackStatus.RETRYING if retryable else CallbackStatus.FAILED
        record = CallbackRecord(status, self.callback.attempts + 1, error_code, now)
        return replace(self, callback=record, updated_at=now).release()

    def answers_sent(
        self,
        answered: frozenset[str],
        *,
        delivered: bool,
        retrying: bool,
        error_code: str | None,
        now: datetime,
    ) -> ExportJob:
        """One round of answers: RETRYING while some workflow could not be reached yet,
        else DELIVERED when at least one took its answer, FAILED when none would."""
        if retrying:
            status = CallbackStatus.RETRYING
        elif delivered or self.callback.status is CallbackStatus.DELIVERED:
            status = CallbackStatus.DELIVERED
        else:
            status = CallbackStatus.FAILED
        last_error = error_code or self.callback.last_error
        record = CallbackRecord(status, self.callback.attempts + 1, last_error, now)
        return replace(
            self, callback=record, answered=self.answered | answered, updated_at=now
        ).release()

    def workflow_gone(self, error_code: str, now: datetime) -> ExportJob:
        """The workflow stopped waiting (its token timed out): nobody is left to answer."""
        record = CallbackRecord(CallbackStatus.FAILED, self.callback.attempts, error_code, now)
        return replace(self, callback=record, updated_at=now)
