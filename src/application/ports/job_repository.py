"""Where export jobs live."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import Protocol

from src.domain.dispatch_progress import DispatchProgress
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.task_token import TaskToken


class ConditionFailed(Exception):
    """A conditional write lost: another writer changed the job first."""


class AttachOutcome(Enum):
    ATTACHED = "attached"
    REFUSED = "refused"  # the job ended or its waiting list is full: read it again


class JobRepository(Protocol):
    """Stores jobs durably. Every write is conditional, so two replicas never overwrite
    each other's progress without noticing."""

    async def create(self, job: ExportJob) -> bool:
        """Store a new job. False (and nothing written) when the jobId already exists."""
        ...

    async def get(self, job_id: str, *, counted: bool = True) -> ExportJob | None:
        """The job as stored. `counted` False: a DOWNLOADING job's file counters may be
        behind (they are counted apart from the job), for one read less."""
        ...

    async def save(self, job: ExportJob) -> ExportJob:
        """Write the job if nobody wrote it since it was read (same version); return it
        with its new version. Raises ConditionFailed otherwise, and when a terminal job
        would be changed into another status."""
        ...

    async def attach_workflow(
        self, job_id: str, token: TaskToken, max_waiting: int
    ) -> AttachOutcome:
        """Add a waiting workflow to an unfinished job with fewer than `max_waiting`
        waiting ones, in one conditional write that also moves the job's version (so a
        concurrent terminal write made without it is refused and redone). Idempotent."""
        ...

    async def mark_answered(self, job_id: str, digests: Iterable[str]) -> None:
        """Record workflows (token digests) as answered or gone; never undone."""
        ...

    async def stop_heartbeats(self, job_id: str, digests: Iterable[str]) -> None:
        """Record tokens whose heartbeats are refused as invalid: no more heartbeats."""
        ...

    async def claim_due_for_polling(
        self,
        now: datetime,
        owner: str,
        until: datetime,
        limit: int,
        heartbeat_at: datetime | None = None,
    ) -> list[ExportJob]:
        """POLLING jobs whose next poll is due and whose lease (if any) has expired,
        leased to `owner` until `until` with one conditional write each, so exactly one
        replica polls a job at a time. A dead owner's lease simply runs out. With
        `heartbeat_at`, the same write moves the job's next heartbeat there: the poller
        heartbeats the claimed jobs' workflows itself (one write a poll, not two)."""
        ...

    async def renew_poll(self, job_id: str, owner: str, until: datetime) -> bool:
        """Extend `owner`'s lease on a POLLING job it claimed to `until` (the job stays
        due then): a slow Export API answer keeps its poll exclusive. False when the job
        is no longer POLLING under `owner`'s lease (another replica took it over)."""
        ...

    async def advance_dispatch(
        self,
        job_id: str,
        owner: str,
        cursor: int,
        to: int | None,
        until: datetime,
        now: datetime | None = None,
    ) -> bool:
        """Move a DOWNLOADING job's dispatch cursor from `cursor` to `to` and its lease to
        `until`, if `owner` still holds the lease at that cursor. Moving on resets the
        claim count; `to == cursor` only renews; `to` None means every file is
        dispatched: the cursor and the lease go. A move with `now` sets `updatedAt` (the
        reaper counts a job's quiet from it). Moves the version. False (nothing
        written) when the job ended or another replica has taken the dispatch over."""
        ...

    async def record_dispatch_failure(
        self, job_id: str, owner: str, cursor: int, error: str, retry_at: datetime
    ) -> bool:
        """Keep why the chunk at `cursor` failed, for whoever takes it up next; the lease
        is held until `retry_at`, so that is no sooner than then. Same condition as
        advance_dispatch."""
        ...

    async def rewind_dispatch(
        self,
        job_id: str,
        owner: str,
        cursor: int,
        progress: DispatchProgress,
        retry_at: datetime,
    ) -> bool:
        """`owner` wrote its cursor ahead to `cursor` and then could not queue all of the
        chunk's work items: the dispatch goes back to `progress` (the chunk's start, the
        claims counted, the error, the items that did go out), leased to `owner` until
        `retry_at`, when any replica may take it up. Same condition as advance_dispatch;
        moves the version."""
        ...

    async def restart_dispatch(self, job_id: str, now: datetime) -> bool:
        """A DOWNLOADING job whose dispatch has finished is to be dispatched again from its
        first file (its work items were lost): due at `now` for claim_unfinished_dispatches.
        False when it is not DOWNLOADING or a dispatch of it is unfinished."""
        ...

    async def claim_unfinished_dispatches(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[ExportJob]:
        """DOWNLOADING jobs whose dispatch is unfinished and whose lease has run out (its
        dispatcher died or failed), each leased to `owner` until `until` with the claim
        counted, by one conditional write each: one replica resumes a dispatch."""
        ...

    async def adopt_unscheduled(self, now: datetime, limit: int) -> int:
        """Jobs left POLLING by the original service (a drop-in swap) have no place in the
        schedule the pollers read: give up to `limit` of them one, due at `now`. Reads
        every POLLING job, so it is run seldom. Returns how many were adopted."""
        ...

    async def claim_due_heartbeats(
        self, now: datetime, next_at: datetime, limit: int
    ) -> list[ExportJob]:
        """Unfinished jobs with a task token whose heartbeat is due; each returned job's
        next heartbeat is moved to `next_at` by one conditional write, so one replica
        sends it. Does not change the job's version (it is bookkeeping, not progress)."""
        ...

    async def list_owing_callbacks(self, now: datetime, limit: int) -> list[ExportJob]:
        """Finished jobs with a token whose answer was never delivered (the winner died
        before answering, or delivery is being retried) and whose answer lease (if any)
        has expired by `now`."""
        ...

    async def list_stalled(
        self, status: JobStatus, updated_before: datetime, limit: int
    ) -> list[ExportJob]:
        """Jobs in `status` that nobody has touched since `updated_before`."""
        ...

    async def list_overdue(
        self, status: JobStatus, created_before: datetime, limit: int
    ) -> list[ExportJob]:
        """Jobs in `status` created before `created_before`, progressing or not."""
        ...
