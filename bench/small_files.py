"""Small files through the service, counted: AWS calls per file and per job (by service
and operation, as the emulator received them), DynamoDB bytes and write units per file and
per job (by table, as AWS bills them), service CPU per file, files/s, and the idle
replicas' call rate; next to the raw baseline (bench/small_baseline.py) in the same run.

    python -m bench.small_files [--jobs 100] [--files 10] [--size-kb 64] [--idle-seconds 30]
                                [--replicas 1] [--metadata-kb 1]

The service runs as `--replicas` child processes at their default settings (the service's
own 5 s first polling interval). Their calls are told apart from the bench's by their
access key (`embedded`, shared by all replicas: calls and writes are counted over all of
them, and so is CPU). Every job message carries `--metadata-kb` KiB of metadata (0: none;
default 1 KiB, a plausible workflow payload), stored on the job item.
Exit code 1 when a job did not end COMPLETED with every file and its metadata, an object is
missing, or a DynamoDB write went unaccounted."""

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
    Replicas,
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
from tests.support.aws import Aws

SERVICE_KEY = "embedded"  # the access key EmbeddedStack.env() gives the service
BASELINE_KEY = "baseline"  # the raw baseline's (bench.common.baseline_client_kwargs)
LONG_POLL = "AmazonSQS.ReceiveMessage"
KIB = 1024
SQS_BATCH_BYTES = 256 * KIB  # SendMessageBatch: at most this much in all its messages


def _by_service(calls: dict[str, int]) -> dict[str, dict[str, int]]:
    grouped: dict[str, dict[str, int]] = {}
    for name, count in sorted(calls.items()):
        service, _, operation = name.partition(".")
        grouped.setdefault(service, {})[operation] = count
    return grouped


def metadata_of(kib: int) -> dict[str, Any]:
    """About `kib` KiB of job metadata (its JSON), {} for 0."""
    if kib <= 0:
        return {}
    head = {"source": "bench.small_files", "padding": ""}
    return {**head, "padding": "m" * max(0, kib * KIB - len(json.dumps(head)))}


def send_jobs(
    aws: Aws, export_id: str, job_ids: list[str], metadata: dict[str, Any] | None = None
) -> None:
    """One export-job message per job id (no task token), up to ten per SendMessageBatch
    (fewer when the messages are big: a batch carries at most 256 KiB)."""
    bodies = [
        json.dumps(
            {"jobId": j, "exportId": export_id, "userId": "bench"}
            | ({"metadata": metadata} if metadata else {})
        )
        for j in job_ids
    ]
    batches: list[list[str]] = []
    for body in bodies:
        last = batches[-1] if batches else None
        if last is None or len(last) == 10 or sum(map(len, last)) + len(body) > SQS_BATCH_BYTES:
            batches.append([body])
        else:
            last.append(body)
    for batch in batches:
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
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


def _check(
    aws: Aws, job_ids: list[str], files: int, metadata: dict[str, Any] | None = None
) -> list[str]:
    problems = []
    for job_id in job_ids:
        job = aws.job(job_id) or {}
        counts = (job.get("status"), job.get("totalTasks"), job.get("completedTasks"))
        if counts != ("COMPLETED", files, files):
            problems.append(f"{job_id}: {counts}")
        elif len(aws.keys(f"exports/{job_id}/")) != files:
            problems.append(f"{job_id}: objects missing")
        elif metadata is not None and job.get("metadata") != metadata:
            problems.append(f"{job_id}: metadata not stored as sent")
    return problems


def _writes(
    by_table: dict[str, dict[str, int]], tables: dict[str, str], files: int, jobs: int
) -> dict[str, Any]:
    """The emulator's billed writes (`writes_by`), per file and per job, and by role:
    `tables` maps a table name to its role (`job`: the job item, `tasks`: task records and
    the progress item); a table's indexes ("<table>/<index>") count with their table."""
    roles: dict[str, dict[str, int]] = {}
    for name, figures in by_table.items():
        role = tables.get(name.split("/", 1)[0], "other")
        totals = roles.setdefault(role, {"items": 0, "bytes": 0, "write_units": 0})
        for key in totals:
            totals[key] += figures[key]
    all_bytes = sum(f["bytes"] for f in by_table.values())
    all_units = sum(f["write_units"] for f in by_table.values())
    return {
        "by_table": by_table,
        "by_role": roles,
        "bytes_per_file": all_bytes / files,
        "write_units_per_file": all_units / files,
        "bytes_per_job": all_bytes / jobs,
        "write_units_per_job": all_units / jobs,
        "per_file": {
            role: {"bytes": t["bytes"] / files, "write_units": t["write_units"] / files}
            for role, t in roles.items()
        },
        "per_job": {
            role: {"bytes": t["bytes"] / jobs, "write_units": t["write_units"] / jobs}
            for role, t in roles.items()
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from src.local.stack import EmbeddedStack

    stack = EmbeddedStack(name_prefix="bench-sf-").start()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-small-"))
    try:
        # The service's own polling default, not the embedded demo's 500 ms: an idle poller
        # backs off to the shorter of POLLING_INTERVAL_MS and POLLER_IDLE_TICK_MS.
        env = {**stack.env(), "POLLING_INTERVAL_MS": "5000"}
        aws = Aws(env)
        resources = stack.resources
        assert resources is not None
        replicas = Replicas(env, log_dir)
        try:
            replicas.start_many(args.replicas)
            time.sleep(3)  # start-up calls (queue URLs, first long polls) are not idle work
            stack.aws.reset_calls()
            time.sleep(args.idle_seconds)
            idle = stack.aws.calls_by(SERVICE_KEY)

            export_id = f"sf-files-{args.files}-size-{args.size_kb * KIB}"
            job_ids = [str(uuid.uuid4()) for _ in range(args.jobs)]
            metadata = metadata_of(args.metadata_kb)
            stack.aws.reset_calls()
            cpu_before, sent = replicas.cpu_seconds(), time.monotonic()
            emulator_before = proc_cpu_seconds()  # this process: moto + the file server
            send_jobs(aws, export_id, job_ids, metadata)
            done = _wait_completed(aws, job_ids, args.timeout)
            calls = stack.aws.calls_by(SERVICE_KEY)
            writes = stack.aws.writes_by(SERVICE_KEY)
            moto_cpu = stack.aws.cpu_by(SERVICE_KEY)
            cpu_by_replica = {
                name: seconds - cpu_before[name] for name, seconds in replicas.cpu_seconds().items()
            }
            emulator_cpu = proc_cpu_seconds() - emulator_before
            unaccounted = stack.aws.writes_unaccounted
            problems = _check(aws, job_ids, args.files, metadata)
        finally:
            replicas.stop()
        if unaccounted:
            problems.append(f"{unaccounted} DynamoDB write requests not accounted")
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
        baseline_writes = stack.aws.writes_by(BASELINE_KEY)
        baseline_moto_cpu = stack.aws.cpu_by(BASELINE_KEY)
    finally:
        stack.stop()
    total_files = args.jobs * args.files
    seconds = done - sent
    cpu = sum(cpu_by_replica.values())
    all_calls = sum(calls.values())
    idle_calls = sum(idle.values())
    idle_besides = sum(n for op, n in idle.items() if op != LONG_POLL)
    tables = {resources.table_name: "job", resources.tasks_table_name: "tasks"}
    return {
        "name": args.name,
        "at": utc_now(),
        "machine": machine(),
        "workload": {
            "jobs": args.jobs,
            "files_per_job": args.files,
            "size_kib": args.size_kb,
            "replicas": args.replicas,
            "metadata_kib": args.metadata_kb,
            "metadata_json_bytes": len(json.dumps(metadata)) if metadata else 0,
        },
        "correct": not problems,
        "problems": problems[:20],
        "service": {
            "replicas": args.replicas,
            "seconds": seconds,
            "files_per_s": total_files / seconds,
            "cpu_ms_per_file": cpu * 1000 / total_files,  # all replicas' CPU
            "cpu_seconds_by_replica": cpu_by_replica,
            "aws_calls": all_calls,
            "aws_calls_per_file": all_calls / total_files,
            "aws_calls_per_job": all_calls / args.jobs,
            "calls_by_operation": _by_service(calls),
            "dynamodb_writes": _writes(writes, tables, total_files, args.jobs),
        },
        "baseline": {
            **baseline,
            "cpu_ms_per_file": baseline["cpu_seconds"] * 1000 / baseline["files"],
            "dynamodb_writes": _writes(baseline_writes, tables, baseline["files"], args.jobs),
        },
        "ratio_files_per_s": (total_files / seconds) / baseline["files_per_s"],
        # The emulator and the file server share this process (one GIL): when it is busy
        # all the time, it sets files/s for both, by how much of it each file takes.
        "emulator_cpu_ms_per_file": {
            "service": emulator_cpu * 1000 / total_files,
            "baseline": baseline_emulator_cpu * 1000 / baseline["files"],
        },
        # Of that, what handling each operation took (moto's work and the accounting, on
        # the request's thread): per file, and per call.
        "emulator_cpu_by_operation": {
            "service": emulator_by_operation(moto_cpu, total_files),
            "baseline": emulator_by_operation(baseline_moto_cpu, baseline["files"]),
        },
        "idle": {  # every replica running: the rates are for all of them, and per replica
            "seconds": args.idle_seconds,
            "replicas": args.replicas,
            "calls_per_s": idle_calls / args.idle_seconds,
            "calls_per_s_besides_long_polls": idle_besides / args.idle_seconds,
            "calls_per_s_per_replica": idle_calls / args.idle_seconds / args.replicas,
            "calls_per_s_besides_long_polls_per_replica": idle_besides
            / args.idle_seconds
            / args.replicas,
            "calls_by_operation": _by_service(idle),
        },
        "log_dir": str(log_dir),
    }


def _write_rows(writes: dict[str, Any] | None, unit: str) -> list[tuple[str, str]]:
    """Per file or per job: bytes and write units, all-in and by role (job / tasks table)."""
    if not writes:
        return []  # a result from before the write accounting
    per = writes[f"per_{unit}"]
    shown = [("all", writes[f"bytes_per_{unit}"], writes[f"write_units_per_{unit}"])]
    shown += [(f"{role} table", f["bytes"], f["write_units"]) for role, f in sorted(per.items())]
    return [
        (f"DynamoDB written per {unit}: {name}", f"{b / KIB:.2f} KiB, {w:.2f} write units")
        for name, b, w in shown
    ]


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The human table of a result (printed, and rendered by bench.report)."""
    s, b, idle, w = result["service"], result["baseline"], result["idle"], result["workload"]
    replicas = w.get("replicas", 1)
    figures = [
        (
            "workload",
            "{jobs} jobs x {files_per_job} files x {size_kib} KiB".format(**w)
            + f", {replicas} replica{'s' if replicas > 1 else ''}"
            + (f", {w['metadata_kib']} KiB metadata" if "metadata_kib" in w else ""),
        ),
        ("correct", str(result["correct"])),
        ("AWS calls per file (all-in)", f"{s['aws_calls_per_file']:.2f}"),
        ("AWS calls per job", f"{s['aws_calls_per_job']:.1f}"),
        ("service CPU per file (all replicas)", f"{s['cpu_ms_per_file']:.1f} ms"),
        ("baseline CPU per file", f"{b['cpu_ms_per_file']:.1f} ms"),
        ("service files/s", f"{s['files_per_s']:.1f}"),
        ("baseline files/s", f"{b['files_per_s']:.1f}"),
        ("ratio (service / baseline)", f"{result['ratio_files_per_s']:.2f}"),
    ]
    if "emulator_cpu_ms_per_file" in result:  # (older results have no such figure)
        figures.append(
            (
                "emulator CPU per file (service / baseline)",
                "{service:.1f} / {baseline:.1f} ms".format(**result["emulator_cpu_ms_per_file"]),
            )
        )
    figures += emulator_rows(result.get("emulator_cpu_by_operation"), "file")
    figures.append(
        (
            "idle calls/s (all / besides long polls)",
            f"{idle['calls_per_s']:.2f} / {idle['calls_per_s_besides_long_polls']:.2f}",
        )
    )
    if replicas > 1:
        figures.append(
            (
                "idle calls/s per replica (all / besides long polls)",
                f"{idle['calls_per_s_per_replica']:.2f}"
                f" / {idle['calls_per_s_besides_long_polls_per_replica']:.2f}",
            )
        )
    writes = s.get("dynamodb_writes")
    figures += _write_rows(writes, "file") + _write_rows(writes, "job")
    if b.get("dynamodb_writes"):
        figures.append(
            (
                "baseline DynamoDB written per file",
                f"{b['dynamodb_writes']['bytes_per_file'] / KIB:.2f} KiB,"
                f" {b['dynamodb_writes']['write_units_per_file']:.2f} write units",
            )
        )
    files = w["jobs"] * w["files_per_job"]
    return figures + per_unit_rows(s["calls_by_operation"], files, "file")


def report(result: dict[str, Any]) -> str:
    return table(rows(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-kb", type=int, default=64)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--replicas", type=int, default=1, help="service child processes")
    parser.add_argument(
        "--metadata-kb", type=int, default=1, help="KiB of metadata per job message (0: none)"
    )
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir")
    parser.add_argument(
        "--name", default="small_files", help="result name: <results-dir>/<name>.json"
    )
    args = parser.parse_args(argv)
    return finish(run(args), args.results_dir, report)


if __name__ == "__main__":
    raise SystemExit(main())
