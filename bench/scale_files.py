"""One big export through two replicas, with a SIGKILL during its dispatch (right after a
cursor write, while that chunk's work items go out) and another during its downloads: exactly one answer, exact counters, every object present with its
sha256. Prints the time, files/s and AWS calls per file.

    python -m bench.scale_files [--files 10000] [--size 1024]

Each replica runs at the default settings (a 500 ms first poll aside). The execution is a
real Step Functions execution of the shipped state machine. Exit code 1 when anything is
wrong (the problems are listed)."""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    Replicas,
    add_service_env_option,
    finish,
    machine,
    service_env,
    table,
    utc_now,
)
from tests.support.aws import Aws, wait_for

SERVICE_KEY = "embedded"


def _task_records(aws: Aws, job_id: str) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "TableName": aws.env["DYNAMODB_TASKS_TABLE_NAME"],
        "KeyConditionExpression": "jobId = :j",
        "ExpressionAttributeValues": {":j": {"S": job_id}},
        "ConsistentRead": True,
    }
    items: list[dict[str, Any]] = []
    while True:
        page = aws.ddb.query(**kwargs)
        items += [i for i in page["Items"] if i["taskId"]["S"] != "#progress"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _check(
    aws: Aws, stack: Any, job_id: str, export_id: str, files: int, size: int, answers: int
) -> list[str]:
    from src.local.sandbox import SandboxExportApi

    problems = []
    job = aws.job(job_id) or {}
    counts = (job.get("status"), job.get("totalTasks"), job.get("completedTasks"))
    if counts != ("COMPLETED", files, files) or job.get("failedTasks") != 0:
        problems.append(f"job {counts} failed={job.get('failedTasks')}")
    pages = aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=aws.env["S3_BUCKET_NAME"], Prefix=f"exports/{job_id}/"
    )
    objects = sum(len(page.get("Contents", [])) for page in pages)
    if objects != files:
        problems.append(f"{objects} objects of {files}")
    records = _task_records(aws, job_id)
    wrong = [
        r["index"]["N"]
        for r in records
        if r.get("sha256", {}).get("S")
        != SandboxExportApi.file_sha256(export_id, int(r["index"]["N"]), size)
    ]
    if len(records) != files or wrong:
        problems.append(f"{len(records)} task records, {len(wrong)} with a wrong sha256")
    if answers != 1:
        problems.append(f"{answers} answers sent")
    return problems


def run(args: argparse.Namespace) -> dict[str, Any]:
    from src.local.stack import EmbeddedStack

    stack = EmbeddedStack(name_prefix="bench-scale-").start()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-scale-"))
    replicas = Replicas(stack.env(), log_dir, {"POLLING_INTERVAL_MS": "500", **args.overrides})
    kills: list[dict[str, Any]] = []
    try:
        aws = Aws(stack.env())
        replicas.start()
        replicas.start()
        time.sleep(2)
        stack.aws.reset_calls()
        export_id = f"sc{uuid.uuid4().hex[:6]}-files-{args.files}-size-{args.size}"
        job_id = str(uuid.uuid4())
        began = time.monotonic()
        arn = aws.start_execution({"jobId": job_id, "exportId": export_id, "userId": "bench"})

        def dispatching() -> dict[str, Any] | None:
            job = aws.job(job_id) or {}
            cursor = int(job.get("dispatchCursor", 0))
            if job.get("status") == "DOWNLOADING" and "dispatchCursor" not in job:
                return job  # done before it could be caught
            return job if cursor >= args.files // 5 else None

        at = wait_for(dispatching, args.timeout, "the dispatch under way")
        if "dispatchCursor" in at:  # kill right after the next cursor write: mid-chunk
            at = _moved_on(aws, job_id, at, args.timeout)
        owner = str(at.get("leaseOwner", ""))
        if "dispatchCursor" in at and owner in replicas.live:
            replicas.kill(owner)
            kills.append({"during": "dispatch", "replica": owner, "cursor": at["dispatchCursor"]})
            replicas.start()

        def downloading() -> dict[str, Any] | None:
            job = aws.job(job_id) or {}
            done = int(job.get("completedTasks", 0))
            return job if job.get("status") == "DOWNLOADING" and done >= args.files // 2 else None

        at = wait_for(downloading, args.timeout, "half the files copied")
        victim = sorted(replicas.live)[0]
        replicas.kill(victim)
        kills.append({"during": "downloads", "replica": victim, "done": at["completedTasks"]})
        replicas.start()

        execution = aws.wait_execution(arn, timeout=args.timeout)
        seconds = time.monotonic() - began
        aws.wait_answered(job_id)
        calls = stack.aws.calls_by(SERVICE_KEY)
        fetched = stack.sandbox.file_requests(export_id)
        answers = stack.aws.calls("SendTaskSuccess") + stack.aws.calls("SendTaskFailure")
        problems = [] if execution["status"] == "SUCCEEDED" else [f"execution {execution}"]
        problems += _check(aws, stack, job_id, export_id, args.files, args.size, answers)
    finally:
        replicas.stop()
        stack.stop()
    all_calls = sum(calls.values())
    return {
        "name": "scale_files",
        "at": utc_now(),
        "machine": machine(),
        "workload": {"files": args.files, "size_bytes": args.size, "replicas": 2},
        "service_env_overrides": args.overrides,
        "kills": kills,
        "correct": not problems,
        "problems": problems,
        "seconds": seconds,
        "files_per_s": args.files / seconds,
        "aws_calls": all_calls,
        "aws_calls_per_file": all_calls / args.files,
        "calls_by_operation": dict(sorted(calls.items())),
        # Files served by the Export API: each once, but for copies the replica killed
        # mid-downloads had in flight (no work item is sent twice).
        "files_fetched": fetched,
        # The work items the dispatcher killed between its cursor write and its sends
        # left unsent, sent by the reaper once the job was quiet (0 or 1 times).
        "redispatched": _logged(
            log_dir, "download job stalled; dispatching its unrecorded files again"
        ),
        "log_dir": str(log_dir),
    }


def _moved_on(aws: Aws, job_id: str, seen: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The job once its dispatch cursor has moved past `seen`'s (or the dispatch closed),
    looked at without pause: the dispatcher has just written it ahead and is sending that
    chunk's work items, so a kill now most likely leaves some of them unsent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = aws.job(job_id) or {}
        if job.get("dispatchCursor") != seen["dispatchCursor"]:
            return job
    raise TimeoutError("the dispatch cursor did not move")


def _logged(log_dir: Path, event: str) -> int:
    """How many lines of the replicas' logs tell of `event`."""
    return sum(
        path.read_text(errors="replace").count(f'"{event}"') for path in log_dir.glob("*.log")
    )


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    w = result["workload"]
    extra = []
    if "files_fetched" in result:
        twice = result["files_fetched"] - w["files"]
        extra = [
            ("files fetched (beyond the files: copies in flight at the kill)",
             f"{result['files_fetched']} (+{twice})"),
            ("lost work items re-sent by the reaper (jobs)", str(result["redispatched"])),
        ]  # fmt: skip
    return [
        ("workload", "1 job x {files} files x {size_bytes} B, 2 replicas".format(**w)),
        ("correct", str(result["correct"])),
        ("SIGKILLs", "; ".join(f"{k['during']}: {k['replica']}" for k in result["kills"])),
        ("seconds to the answer", f"{result['seconds']:.1f}"),
        ("files/s", f"{result['files_per_s']:.1f}"),
        ("AWS calls per file (all-in)", f"{result['aws_calls_per_file']:.2f}"),
        *extra,
    ]


def report(result: dict[str, Any]) -> str:
    return table(rows(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir")
    add_service_env_option(parser)
    args = parser.parse_args(argv)
    args.overrides = service_env(parser, args.service_env)
    return finish(run(args), args.results_dir, report)


if __name__ == "__main__":
    raise SystemExit(main())
