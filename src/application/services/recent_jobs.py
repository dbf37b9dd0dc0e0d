"""RecentJobs: what a worker needs to know of a job, read once per job every few seconds
instead of once per file."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from src.application.ports.clock import Clock
from src.application.ports.job_repository import JobRepository
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus


@dataclass(slots=True)
class RecentJobs:
    """A job read while DOWNLOADING or finished is reused for `ttl` (a job cancelled
    meanwhile is noticed that much later: the files started meanwhile, up to a chunk of
    a dispatch, are still copied, never counted twice, since counting does not rely on
    this). A finished job is not kept longer: an operator's retry makes it DOWNLOADING
    again, and its fresh work items must not be dropped as belonging to an ended job.
    Any other status is not kept: the caller asks again.
    Callers asking for the same job at once (a batch of its files) share one read."""

    jobs: JobRepository
    clock: Clock
    ttl: timedelta = timedelta(seconds=2)
    size: int = 1024
    _seen: OrderedDict[str, tuple[ExportJob, datetime]] = field(default_factory=OrderedDict)
    _reading: dict[str, asyncio.Future[ExportJob | None]] = field(default_factory=dict)

    async def get(self, job_id: str) -> ExportJob | None:
        seen = self._seen.get(job_id)
        if seen is not None and self.clock.now() - seen[1] < self.ttl:
            self._seen.move_to_end(job_id)
            return seen[0]
        reading = self._reading.get(job_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(job_id))
            self._reading[job_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(job_id, None))
        return await asyncio.shield(reading)

    async def _read(self, job_id: str) -> ExportJob | None:
        now = self.clock.now()
        job = await self.jobs.get(job_id, counted=False)  # its status is what matters
        if job is not None and (job.is_terminal or job.status is JobStatus.DOWNLOADING):
            self._seen[job_id] = (job, now)
            self._seen.move_to_end(job_id)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
        else:
            self._seen.pop(job_id, None)
        return job
