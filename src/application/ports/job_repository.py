"""Where export jobs live."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from src.domain.export_job import ExportJob


class ConditionFailed(Exception):
    """A conditional write lost: another writer changed the job first."""


class JobRepository(Protocol):
    """Stores jobs durably. Every write is conditional, so two replicas never overwrite
    each other's progress without noticing."""

    async def create(self, job: ExportJob) -> bool:
        """Store a new job. False (and nothing written) when the jobId already exists."""
        ...

    async def get(self, job_id: str) -> ExportJob | None: ...

    async def save(self, job: ExportJob) -> ExportJob:
        """Write the job if nobody wrote it since it was read (same version); return it
        with its new version. Raises ConditionFailed otherwise, and when a terminal job
        would be changed into another status."""
        ...

    async def claim_due_for_polling(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[ExportJob]:
        """POLLING jobs whose next poll is due and whose lease (if any) has expired,
        leased to `owner` until `until` with one conditional write each, so exactly one
        replica polls a job at a time. A dead owner's lease simply runs out."""
        ...
