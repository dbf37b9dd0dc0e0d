"""Small files through the service, counted: AWS calls per file and per job (by service
and operation, as the emulator received them), service CPU per file, files/s, and the
idle replica's call rate; next to the raw baseline (bench/small_baseline.py) in the same run.

    python -m bench.small_files [--jobs 100] [--files 10] [--size-kb 64] [--idle-seconds 30]

The service runs as a child process at its default settings except a 500 ms first polling
interval. Its calls are told apart from the bench's by their access key (`embedded`).
Exit code 1 when a job did not end COMPLETED with every file, or an object is missing."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    finish,
    machine,
    per_unit_rows,
    proc_cpu_seconds,
    run_json_child,
    table,
    utc_now,
)
from tests.support.aws import Aws
from tests.support.service_process import ServiceProcess

SERVICE_KEY = "embedded"  # the access key EmbeddedStack.env() gives the service
LONG_POLL = "AmazonSQS.ReceiveMessage"


def _by_service(calls: dict[str, int]) -> dict[str, dict[str, int]]:
    grouped: dict[str, dict[str, int]] = {}
    for name, count in sorted(calls.items()):
        service, _, operation = name.partition(".")
        grouped.setdefault(service, {})[operation] = count
    return grouped


def send_jobs(aws: Aws, export_id: str, job_ids: list[str]) -> None:
    """One export-job message per job id (no task token), ten per SendMessageBatch."""
    for start in range(0, len(job_ids), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps({"jobId": j, "exportId": export_id, "userId": "bench"}),
            }
            for i, j in enumerate(job_ids[start : start + 10])
        ]
        aws.sqs.send_message_batch(QueueUrl=aws.env["SQS_EXPORT_JOBS_URL"], Entries=entries)


def _ended(aws: Aws, job_ids: list[str]) -> set[str]:
    """Which of `job_ids` have ended: statuses only, 100 a call (the emulator serving the
    service is in this process: watching must cost it little)."""
    ended = set()
    for start in range(0, len(job_ids), 100):
        keys = [{"jobId": {"S": job_id}} for job_id in job_ids[start : start + 100]]
        table = aws.env["DYNAMODB_TABLE_NAME"]
        request = {table: {"Keys": keys, "ProjectionExpression": "jobId, #s",
                           "ExpressionAttributeNames": {"#s": "status"}}}  # fmt: skip
        for item in aws.ddb.batch_get_item(RequestItems=request)["Responses"][table]:
            if item["status"]["S"] in ("COMPLETED", "FAILED", "CANCELLED"):
                ended.add(item["jobId"]["S"])
    return ended


def _wait_completed(aws: Aws, job_ids: list[str], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    waiting = set(job_ids)
    while waiting and time.monotonic() < deadline:
        waiting -= _ended(aws, sorted(waiting))
        if waiting:
            time.sleep(0.5)
    if waiting:
        raise SystemExit(f"{len(waiting)} jobs did not finish within {timeout:.0f}s")
    return time.monotonic()


def _check(aws: Aws, job_ids: list[str], files: int) -> list[str]:
    problems = []
    for job_id in job_ids:
        job = aws.job(job_id) or {}
        counts = (job.get("status"), job.get("totalTasks"), job.get("completedTasks"))
        if counts != ("COMPLETED", files, files):
            problems.append(f"{job_id}: {counts}")
        elif len(aws.keys(f"exports/{job_id}/")) != files:
            problems.append(f"{job_id}: objects missing")
    return problems


def run(args: argparse.Namespace) -> dict[str, Any]:
    from src.local.stack import EmbeddedStack

    stack = EmbeddedStack(name_prefix="bench-sf-").start()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-small-"))
    try:
        # The service's own polling default, not the embedded demo's 500 ms: an idle poller
        # backs off to the shorter of POLLER_IDLE_TICK_MS and the first poll interval.
        env = {**stack.env(), "POLLING_INTERVAL_MS": "5000"}
        aws = Aws(env)
        service = ServiceProcess(env, log_dir / "service.log").start(timeout=60)
        try:
            time.sleep(3)  # start-up calls (queue URLs, first long polls) are not idle work
            stack.aws.reset_calls()
            time.sleep(args.idle_seconds)
            idle = stack.aws.calls_by(SERVICE_KEY)

            export_id = f"sf-files-{args.files}-size-{args.size_kb * 1024}"
            job_ids = [str(uuid.uuid4()) for _ in range(args.jobs)]
            stack.aws.reset_calls()
            cpu_before, sent = proc_cpu_seconds(service.pid), time.monotonic()
            emulator_before = proc_cpu_seconds()  # this process: moto + the file server
            send_jobs(aws, export_id, job_ids)
            done = _wait_completed(aws, job_ids, args.timeout)
            calls = stack.aws.calls_by(SERVICE_KEY)
            cpu = proc_cpu_seconds(service.pid) - cpu_before
            emulator_cpu = proc_cpu_seconds() - emulator_before
            problems = _check(aws, job_ids, args.files)
        finally:
            service.stop()
        resources = stack.resources
        assert resources is not None
        emulator_before = proc_cpu_seconds()
        baseline = run_json_child(
            "bench.small_baseline",
            [
                "--listing",
                f"{stack.sandbox.base_url}/exports/{export_id}",
                "--copies",
                str(args.jobs),
                "--bucket",
                resources.bucket,
                "--table",
                resources.tasks_table_name,
            ],
            env,
            timeout=args.timeout,
        )
        baseline_emulator_cpu = proc_cpu_seconds() - emulator_before
    finally:
        stack.stop()
    total_files = args.jobs * args.files
    seconds = done - sent
    all_calls = sum(calls.values())
    return {
        "name": "small_files",
        "at": utc_now(),
        "machine": machine(),
        "workload": {"jobs": args.jobs, "files_per_job": args.files, "size_kib": args.size_kb},
        "correct": not problems,
        "problems": problems[:20],
        "service": {
            "seconds": seconds,
            "files_per_s": total_files / seconds,
            "cpu_ms_per_file": cpu * 1000 / total_files,
            "aws_calls": all_calls,
            "aws_calls_per_file": all_calls / total_files,
            "aws_calls_per_job": all_calls / args.jobs,
            "calls_by_operation": _by_service(calls),
        },
        "baseline": {
            **baseline,
            "cpu_ms_per_file": baseline["cpu_seconds"] * 1000 / baseline["files"],
        },
        "ratio_files_per_s": (total_files / seconds) / baseline["files_per_s"],
        # The emulator and the file server share this process (one GIL): when it is busy
        # all the time, it sets files/s for both, by how much of it each file takes.
        "emulator_cpu_ms_per_file": {
            "service": emulator_cpu * 1000 / total_files,
            "baseline": baseline_emulator_cpu * 1000 / baseline["files"],
        },
        "idle": {
            "seconds": args.idle_seconds,
            "calls_per_s": sum(idle.values()) / args.idle_seconds,
            "calls_per_s_besides_long_polls": sum(n for op, n in idle.items() if op != LONG_POLL)
            / args.idle_seconds,
            "calls_by_operation": _by_service(idle),
        },
        "log_dir": str(log_dir),
    }


def report(result: dict[str, Any]) -> str:
    s, b, idle = result["service"], result["baseline"], result["idle"]
    rows = [
        (
            "workload",
            "{jobs} jobs x {files_per_job} files x {size_kib} KiB".format(**result["workload"]),
        ),
        ("correct", str(result["correct"])),
        ("AWS calls per file (all-in)", f"{s['aws_calls_per_file']:.2f}"),
        ("AWS calls per job", f"{s['aws_calls_per_job']:.1f}"),
        ("service CPU per file", f"{s['cpu_ms_per_file']:.1f} ms"),
        ("baseline CPU per file", f"{b['cpu_ms_per_file']:.1f} ms"),
        ("service files/s", f"{s['files_per_s']:.1f}"),
        ("baseline files/s", f"{b['files_per_s']:.1f}"),
        ("ratio (service / baseline)", f"{result['ratio_files_per_s']:.2f}"),
        (
            "emulator CPU per file (service / baseline)",
            "{service:.1f} / {baseline:.1f} ms".format(**result["emulator_cpu_ms_per_file"]),
        ),
        (
            "idle calls/s (all / besides long polls)",
            f"{idle['calls_per_s']:.2f} / {idle['calls_per_s_besides_long_polls']:.2f}",
        ),
    ]
    files = result["workload"]["jobs"] * result["workload"]["files_per_job"]
    rows += per_unit_rows(s["calls_by_operation"], files, "file")
    return table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-kb", type=int, default=64)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir")
    args = parser.parse_args(argv)
    return finish(run(args), args.results_dir, report)


if __name__ == "__main__":
    raise SystemExit(main())
