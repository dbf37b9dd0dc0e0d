"""Job intake through the service, counted: jobs/s, service CPU per job and AWS calls per
job (by service and operation, as the emulator received them) for zero-file exports, which
complete at their first poll; next to the raw baseline (bench/intake_baseline.py) in the
same run.

    python -m bench.intake [--jobs 1000] [--timeout 900]

N export-job messages (SendMessageBatch of 10, exportId `intake-files-0`) go to the
service, a child process with the same settings as in bench.small_files (the embedded
stack's env, the service's own 5 s first polling interval). Timed from the first send to
the last job's completedAt; the bench polls the job items until all have ended. Calls are
the service's (access key `embedded`). Exit code 1 when a job did not end COMPLETED with
no tasks."""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    emulator_by_operation,
    emulator_rows,
    finish,
    machine,
    per_unit_rows,
    proc_cpu_seconds,
    run_json_child,
    table,
    utc_now,
)
from bench.small_files import SERVICE_KEY, _by_service, _check, _wait_completed, send_jobs
from tests.support.aws import Aws
from tests.support.service_process import ServiceProcess

EXPORT_ID = "intake-files-0"  # the sandbox answers ready, with no files


def _last_completed_at(aws: Aws, job_ids: list[str]) -> float | None:
    """The last job's completedAt (wall clock, to the ms), read from the job items: the
    poll only sees a completion up to one pass over the waiting jobs late."""
    stamps = [(aws.job(job_id) or {}).get("completedAt") for job_id in job_ids]
    if not all(stamps):
        return None
    return max(datetime.fromisoformat(stamp).timestamp() for stamp in stamps)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from src.local.stack import EmbeddedStack

    stack = EmbeddedStack(name_prefix="bench-in-").start()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-intake-"))
    try:
        env = {**stack.env(), "POLLING_INTERVAL_MS": "5000"}
        aws = Aws(env)
        service = ServiceProcess(env, log_dir / "service.log").start(timeout=60)
        try:
            time.sleep(3)  # start-up calls (queue URLs, first long polls) are not per job
            job_ids = [str(uuid.uuid4()) for _ in range(args.jobs)]
            stack.aws.reset_calls()
            cpu_before, sent = proc_cpu_seconds(service.pid), time.time()
            send_jobs(aws, EXPORT_ID, job_ids)
            _wait_completed(aws, job_ids, args.timeout)
            calls = stack.aws.calls_by(SERVICE_KEY)
            moto_cpu = stack.aws.cpu_by(SERVICE_KEY)
            cpu = proc_cpu_seconds(service.pid) - cpu_before
            seen = time.time()
            problems = _check(aws, job_ids, 0)
            done = _last_completed_at(aws, job_ids) or seen
        finally:
            service.stop()
        assert stack.resources is not None
        stack.aws.reset_calls()
        baseline = run_json_child(
            "bench.intake_baseline",
            [
                *("--queue-url", env["SQS_EXPORT_JOBS_URL"]),
                *("--table", stack.resources.table_name),
                *("--jobs", str(args.jobs)),
            ],
            env,
            timeout=args.timeout,
        )
        # The baseline sends the jobs' messages itself; in the service's run the bench
        # does (its calls are not the service's): leave the sends out of both figures.
        sends = "AmazonSQS.SendMessageBatch"
        baseline_by_operation = stack.aws.calls_by("baseline")
        baseline_by_operation.pop(sends, None)
        baseline_moto_cpu = stack.aws.cpu_by("baseline")
        baseline_moto_cpu.pop(sends, None)
        baseline_calls = sum(baseline_by_operation.values())
    finally:
        stack.stop()
    seconds = done - sent
    all_calls = sum(calls.values())
    return {
        "name": "intake",
        "at": utc_now(),
        "machine": machine(),
        "workload": {"jobs": args.jobs, "export_id": EXPORT_ID},
        "correct": not problems,
        "problems": problems[:20],
        "service": {
            "seconds": seconds,
            "jobs_per_s": args.jobs / seconds,
            "cpu_ms_per_job": cpu * 1000 / args.jobs,
            "aws_calls": all_calls,
            "aws_calls_per_job": all_calls / args.jobs,
            "calls_by_operation": _by_service(calls),
        },
        "baseline": {
            **baseline,
            "cpu_ms_per_job": baseline["cpu_seconds"] * 1000 / baseline["jobs"],
            "aws_calls_per_job": baseline_calls / baseline["jobs"],
        },
        "ratio_jobs_per_s": (args.jobs / seconds) / baseline["jobs_per_s"],
        # What handling each operation cost the emulator (moto and its accounting), per
        # job and per call: the emulator sets the pace of both runs.
        "emulator_cpu_by_operation": {
            "service": emulator_by_operation(moto_cpu, args.jobs),
            "baseline": emulator_by_operation(baseline_moto_cpu, baseline["jobs"]),
        },
        "log_dir": str(log_dir),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    s, b, jobs = result["service"], result["baseline"], result["workload"]["jobs"]
    figures = [
        ("workload", f"{jobs} zero-file jobs ({result['workload']['export_id']})"),
        ("correct", str(result["correct"])),
        ("AWS calls per job (service / baseline)", f"{s['aws_calls_per_job']:.2f} / {b['aws_calls_per_job']:.2f}"),
        ("service CPU per job", f"{s['cpu_ms_per_job']:.1f} ms"),
        ("baseline CPU per job", f"{b['cpu_ms_per_job']:.1f} ms"),
        ("service jobs/s", f"{s['jobs_per_s']:.1f}"),
        ("baseline jobs/s", f"{b['jobs_per_s']:.1f}"),
        ("ratio (service / baseline)", f"{result['ratio_jobs_per_s']:.2f}"),
    ]  # fmt: skip
    figures += emulator_rows(result.get("emulator_cpu_by_operation"), "job")
    return figures + per_unit_rows(s["calls_by_operation"], jobs, "job")


def report(result: dict[str, Any]) -> str:
    return table(rows(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir")
    args = parser.parse_args(argv)
    return finish(run(args), args.results_dir, report)


if __name__ == "__main__":
    raise SystemExit(main())
