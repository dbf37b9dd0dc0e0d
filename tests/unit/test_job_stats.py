"""JobStats on a seeded set of jobs: every figure exact."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from src.application.use_cases.job_stats import JobStats, percentile
from src.domain.export_job import CallbackRecord
from src.domain.job_status import CallbackStatus, JobStatus
from tests.fakes import T0, InMemoryJobQueries, InMemoryJobs, InMemoryTasks
from tests.unit.builders import a_job


def seeded() -> InMemoryJobQueries:
    def job(n: int, status: JobStatus, *, token: bool, seconds: int, answered_after: int | None,
            callback: CallbackStatus = CallbackStatus.DELIVERED, error: str | None = None,
            total: int = 0, completed: int = 0, failed: int = 0):  # fmt: skip
        made = a_job(job_id=f"00000000-0000-0000-0000-{n:012d}", status=status,
                     token="AAAAKgAA" + "t" * 40 if token else None, now=T0 + timedelta(seconds=n),
                     total=total, completed=completed, failed=failed)  # fmt: skip
        end = made.created_at + timedelta(seconds=seconds)
        if status.is_terminal:
            made = replace(made, completed_at=end)
        if token:
            at = end + timedelta(seconds=answered_after) if answered_after is not None else None
            made = replace(made, callback=CallbackRecord(callback, 1, error, at))
        return made

    jobs = InMemoryJobs([
        job(1, JobStatus.COMPLETED, token=True, seconds=10, answered_after=1, total=3, completed=3),
        job(2, JobStatus.COMPLETED, token=True, seconds=20, answered_after=3, total=4, completed=2,
            failed=2),
        job(3, JobStatus.FAILED, token=True, seconds=30, answered_after=None,
            callback=CallbackStatus.FAILED, error="TaskTimedOut"),
        job(4, JobStatus.COMPLETED, token=False, seconds=40, answered_after=None, total=1,
            completed=1),
        job(5, JobStatus.DOWNLOADING, token=True, seconds=0, answered_after=None,
            callback=CallbackStatus.PENDING, total=5, completed=1),
        job(6, JobStatus.CANCELLED, token=True, seconds=50, answered_after=None,
            callback=CallbackStatus.RETRYING, error="ThrottlingException"),
    ])  # fmt: skip
    return InMemoryJobQueries(jobs, InMemoryTasks(jobs))


async def test_every_figure_is_exact_on_a_seeded_set() -> None:
    stats = await JobStats(seeded()).execute()
    assert stats.jobs_by_status == {"PENDING": 0, "PROCESSING": 0, "POLLING": 0,
        "DOWNLOADING": 1, "COMPLETED": 3, "FAILED": 1, "CANCELLED": 1}  # fmt: skip
    assert stats.complete and stats.jobs_read == 6
    assert stats.files_by_status == {"COMPLETED": 7, "FAILED": 2, "PENDING": 4}
    assert stats.answers == {"DELIVERED": 2, "FAILED:TaskTimedOut": 1, "PENDING": 1,
                             "RETRYING:ThrottlingException": 1}  # fmt: skip
    assert stats.jobs_with_token == 5 and stats.token_share == 5 / 6
    # durations of the 5 finished jobs: 10, 20, 30, 40, 50 s
    assert (stats.duration_ms_p50, stats.duration_ms_p95) == (30_000, 50_000)
    # answer latencies of the two delivered answers: 1 s and 3 s
    assert (stats.answer_latency_ms_p50, stats.answer_latency_ms_p95) == (1_000, 3_000)


async def test_reads_are_bounded_per_status_and_say_so() -> None:
    stats = await JobStats(seeded(), per_status=2).execute()
    assert stats.jobs_by_status["COMPLETED"] == 2
    assert stats.complete is False
    assert stats.jobs_read == 5


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
