"""RecentJobs: one read per job every few seconds, never a stale "ended" for longer."""

from __future__ import annotations

from dataclasses import replace

from src.application.services.recent_jobs import RecentJobs
from src.domain.job_status import JobStatus
from tests.fakes import FixedClock, InMemoryJobs
from tests.unit.builders import JOB_ID, a_job


async def test_a_finished_job_is_read_again_after_the_ttl_since_a_retry_reopens_it() -> None:
    jobs = InMemoryJobs([a_job(status=JobStatus.COMPLETED, total=2, completed=1, failed=1)])
    clock = FixedClock()
    recent = RecentJobs(jobs, clock)
    assert (await recent.get(JOB_ID)).status is JobStatus.COMPLETED

    jobs.items[JOB_ID] = replace(jobs.items[JOB_ID], status=JobStatus.DOWNLOADING)  # retried
    assert (await recent.get(JOB_ID)).status is JobStatus.COMPLETED  # within the ttl
    clock.advance(recent.ttl.total_seconds())
    assert (await recent.get(JOB_ID)).status is JobStatus.DOWNLOADING


async def test_reads_within_the_ttl_are_shared() -> None:
    jobs = InMemoryJobs([a_job(status=JobStatus.DOWNLOADING, total=2)])
    clock = FixedClock()
    recent = RecentJobs(jobs, clock)
    first = await recent.get(JOB_ID)
    jobs.items[JOB_ID] = replace(first, status=JobStatus.CANCELLED)
    clock.advance(1)
    assert (await recent.get(JOB_ID)) is first
