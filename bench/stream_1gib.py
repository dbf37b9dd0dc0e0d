"""Benchmark: stream one generated 1 GiB file HTTP -> S3 through the service.

    python -m bench.stream_1gib [--size-mb 1024] [--runs 1]

One bench process hosts the embedded stack (moto emulator + sandbox Export API/file
server, all on 127.0.0.1). The service runs as a child (`python -m src.main serve`), so
its RSS is its own: VmRSS is sampled from /proc every 50 ms and VmHWM read at the end.
One export-job message (no task token) is sent; the job is timed from the moment it is
DOWNLOADING (and from sending) to COMPLETED, then checked: S3 object size, the task
record's bytes/sha256, the object's sha256 tag and its multipart ETag.

Raw baselines in the same run, each in its own child process like the service: a plain
aiohttp GET of the same URL (bytes discarded), a boto3 multipart upload of as many
in-memory bytes in 8 MiB parts to the same emulator, and (unless --no-pipe) the plainest
HTTP -> S3 pipe of the two. moto's CompleteMultipartUpload, which builds the object in
memory in this process, is timed here and the figures are also given without it.

Results: a table on stdout and bench/results/stream_1gib.json. Exit 0 when every run is
correct and the peak RSS is under the budget, 1 on a correctness failure, 2 when only
the RSS budget is exceeded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    MIB,
    RESULTS_DIR,
    RssSampler,
    add_service_env_option,
    kib_to_mib,
    machine,
    mbps,
    proc_cpu_seconds,
    proc_status,
    run_json_child,
    service_env,
    table,
    utc_now,
    write_json,
)
from tests.support.aws import Aws  # one harness for tests and benchmarks
from tests.support.service_process import ServiceProcess

NAME = "stream_1gib"
RSS_BUDGET_MIB = 150.0
POLL_SECONDS = 0.1  # job-status poll cadence: the timing resolution
IDLE_SETTLE_SECONDS = 2.0
SERVICE_OVERRIDES = {
    "POLLING_INTERVAL_MS": "200",
    "SQS_WAIT_TIME_SECONDS": "1",
    "POLLER_TICK_MS": "200",
    "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.1/32",
    "LOG_LEVEL": "info",
}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


class BenchFailure(Exception):
    """The service did not produce the right result: the figures mean nothing."""


class EmulatorProbe:
    """Times moto's S3 UploadPart / CompleteMultipartUpload per key, in this process.

    moto builds the whole object in memory on CompleteMultipartUpload (seconds per GiB,
    real S3 takes well under a second), so the figures are also given without it."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, float]] = {}
        self._originals: dict[str, Any] = {}

    def install(self) -> EmulatorProbe:
        from moto.s3.models import S3Backend

        for name in ("upload_part", "complete_multipart_upload"):
            original = getattr(S3Backend, name)
            self._originals[name] = original
            setattr(S3Backend, name, self._timed(name, original))
        return self

    def uninstall(self) -> None:
        from moto.s3.models import S3Backend

        for name, original in self._originals.items():
            setattr(S3Backend, name, original)

    def _timed(self, name: str, original: Any) -> Any:
        events = self.events

        def timed(backend: Any, bucket_name: str, multipart_id: str, *args: Any, **kw: Any) -> Any:
            try:
                key = backend.get_bucket(bucket_name).multiparts[multipart_id].key_name
            except Exception:  # unknown upload: moto answers the error itself
                key = f"?{multipart_id}"
            started = time.monotonic()
            try:
                return original(backend, bucket_name, multipart_id, *args, **kw)
            finally:
                ended = time.monotonic()
                mine = events.setdefault(key, {})
                mine.setdefault(f"{name}_first_start", started)
                mine[f"{name}_last_end"] = ended
                mine[f"{name}_calls"] = mine.get(f"{name}_calls", 0) + 1

        return timed

    def for_key(self, key: str) -> dict[str, float]:
        return dict(self.events.get(key, {}))


def expected_multipart_etag(export_id: str, size: int, part_size: int) -> str:
    """S3's multipart ETag (md5 of the parts' md5s, '-N') for the sandbox file, assuming
    the service cuts `part_size` parts. Sandbox content is one 64 KiB block repeated, so
    every full part is the same bytes: cheap to compute without building the file."""
    from src.local.sandbox import CHUNK_SIZE, content_block

    if size <= part_size or part_size % CHUNK_SIZE:
        return ""
    block = content_block(export_id, 0)
    full = hashlib.md5(block * (part_size // CHUNK_SIZE)).digest()
    count, rest = divmod(size, part_size)
    digests = [full] * count
    if rest:
        tail = (block * (rest // CHUNK_SIZE + 1))[:rest]
        digests.append(hashlib.md5(tail).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def run_service(
    stack: Any,
    probe: EmulatorProbe,
    env: dict[str, str],
    export_id: str,
    size: int,
    timeout: float,
    log_path: Path,
) -> dict[str, Any]:
    """One job through a fresh service child; returns timings, RSS and checks."""
    aws = Aws(env)
    service = ServiceProcess(env, log_path).start(timeout=60)
    sampler = RssSampler(service.pid).start()
    try:
        time.sleep(IDLE_SETTLE_SECONDS)
        idle = proc_status(service.pid)
        job_id = str(uuid.uuid4())
        body = {"jobId": job_id, "exportId": export_id, "userId": "bench"}
        file_gets_before = stack.sandbox.file_requests(export_id)

        cpu_before, bench_cpu_before = proc_cpu_seconds(service.pid), time.process_time()
        sent = time.monotonic()
        aws.sqs.send_message(QueueUrl=env["SQS_EXPORT_JOBS_URL"], MessageBody=json.dumps(body))
        seen: dict[str, float] = {}
        file_get_at: float | None = None
        job: dict[str, Any] | None = None
        while True:
            now = time.monotonic()
            if now - sent > timeout:
                raise BenchFailure(f"job not terminal after {timeout:.0f}s (seen {list(seen)})")
            if file_get_at is None and stack.sandbox.file_requests(export_id) > file_gets_before:
                file_get_at = now
            job = aws.job(job_id)
            if job is not None:
                seen.setdefault(job["status"], now)
                if job["status"] in TERMINAL:
                    break
            time.sleep(POLL_SECONDS)
        done = seen[job["status"]]
        end = proc_status(service.pid)  # read while the child is alive: VmHWM is its peak
        cpu = proc_cpu_seconds(service.pid) - cpu_before
        bench_cpu = time.process_time() - bench_cpu_before
        time.sleep(0.2)
    finally:
        sampler.stop()
        exit_code = service.stop()

    if job["status"] != "COMPLETED":
        raise BenchFailure(f"job ended {job['status']}: {job.get('error')}\n{service.log_tail()}")
    started = seen.get("DOWNLOADING")
    if started is None:  # passed through DOWNLOADING between two polls
        started = file_get_at if file_get_at is not None else sent
    key = f"{env.get('S3_PREFIX', 'exports/')}{job_id}/0_file-0.bin"
    s3 = probe.for_key(key)
    complete_start = s3.get("complete_multipart_upload_first_start")
    complete_end = s3.get("complete_multipart_upload_last_end")
    streamed = (complete_start - started) if complete_start else None
    return {
        "job_id": job_id,
        "job": job,
        "service_exit_code": exit_code,
        "status_seen_after_s": {status: at - sent for status, at in seen.items()},
        "file_get_after_s": None if file_get_at is None else file_get_at - sent,
        "seconds_downloading_to_completed": done - started,
        "seconds_send_to_completed": done - sent,
        "mb_per_s": mbps(size, done - started),
        "mb_per_s_end_to_end": mbps(size, done - sent),
        "seconds_downloading_to_complete_multipart": streamed,
        "mb_per_s_without_emulator_complete": mbps(size, streamed) if streamed else None,
        "emulator_complete_seconds": (complete_end - complete_start) if complete_start else None,
        "emulator_upload_part_calls": s3.get("upload_part_calls"),
        "service_cpu_seconds_during_job": cpu,
        "bench_process_cpu_seconds_during_job": bench_cpu,
        "idle_rss_mib": kib_to_mib(idle["VmRSS"]),
        "idle_hwm_mib": kib_to_mib(idle["VmHWM"]),
        # VmHWM is the kernel's high-water mark; the sampled peak can read a few pages above
        # it (per-thread RSS counters are synced lazily): take the larger, conservatively.
        "peak_rss_mib": kib_to_mib(max(end["VmHWM"], sampler.peak_kib())),
        "vm_hwm_mib": kib_to_mib(end["VmHWM"]),
        "peak_rss_sampled_during_job_mib": kib_to_mib(sampler.peak_kib(start=sent, end=done)),
        "rss_after_job_mib": kib_to_mib(end["VmRSS"]),
        "rss_samples": len(sampler.samples),
        "rss_timeline_mib": _timeline(sampler, sent, done),
    }


def _timeline(sampler: RssSampler, sent: float, done: float, points: int = 20) -> list[list[float]]:
    """About `points` (seconds since send, RSS MiB) pairs over the job, for the JSON."""
    window = [(at - sent, kib) for at, kib in sampler.samples if sent <= at <= done]
    step = max(1, len(window) // points)
    return [[round(t, 2), round(kib_to_mib(kib), 1)] for t, kib in window[::step]]


def verify(aws: Aws, run: dict[str, Any], export_id: str, size: int, part_size: int) -> None:
    """Fails loudly unless the object and the task record match the sandbox file."""
    from src.local.sandbox import SandboxExportApi

    expected_sha = SandboxExportApi.file_sha256(export_id, 0, size)
    job, job_id = run["job"], run["job_id"]
    problems = []
    if (int(job.get("completedTasks", -1)), int(job.get("failedTasks", -1))) != (1, 0):
        problems.append(f"job counters {job.get('completedTasks')}/{job.get('failedTasks')}")
    task = aws.task(job_id, "00000")
    if task is None:
        raise BenchFailure(f"no task record {job_id}/00000")
    if task.get("status") != "COMPLETED":
        problems.append(f"task status {task.get('status')}: {task.get('error')}")
    if int(task.get("bytes") or -1) != size:
        problems.append(f"task bytes {task.get('bytes')} != {size}")
    if task.get("sha256") != expected_sha:
        problems.append(f"task sha256 {task.get('sha256')} != {expected_sha}")
    if problems and task.get("status") != "COMPLETED":  # no object to look at
        raise BenchFailure("; ".join(problems))
    key = task.get("outputKey") or f"{aws.env.get('S3_PREFIX', 'exports/')}{job_id}/0_file-0.bin"
    bucket = aws.env["S3_BUCKET_NAME"]
    head = aws.s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        problems.append(f"S3 object {key} has {head['ContentLength']} bytes != {size}")
    tags = {
        t["Key"]: t["Value"]
        for t in aws.s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
    }
    if tags.get("sha256") not in (None, expected_sha):
        problems.append(f"S3 object sha256 tag {tags.get('sha256')} != {expected_sha}")
    etag = head["ETag"].strip('"')
    expected_etag = expected_multipart_etag(export_id, size, part_size)
    # Same part count: the part size is the one assumed, so a different ETag means different
    # bytes. Another count: the service cut other parts (a changed default), not checkable.
    etag_checked = (
        bool(expected_etag) and etag.rpartition("-")[2] == expected_etag.rpartition("-")[2]
    )
    if etag_checked and etag != expected_etag:
        problems.append(f"S3 multipart ETag {etag} != {expected_etag} (content differs)")
    run["checks"] = {
        "expected_sha256": expected_sha,
        "task_sha256": task.get("sha256"),
        "task_bytes": task.get("bytes"),
        "s3_key": key,
        "s3_bytes": head["ContentLength"],
        "s3_etag": etag,
        "s3_etag_checked": etag_checked,
        "s3_sha256_tag": tags.get("sha256"),
        "ok": not problems,
    }
    aws.s3.delete_object(Bucket=bucket, Key=key)  # the emulator holds it: free it
    if problems:
        raise BenchFailure("; ".join(problems))


def run_once(
    stack: Any,
    probe: EmulatorProbe,
    env: dict[str, str],
    export_id: str,
    size: int,
    args: argparse.Namespace,
    n: int,
) -> dict[str, Any]:
    from src.local.sandbox import ExportPlan

    url = stack.sandbox.file_url(ExportPlan.parse(export_id), 0)
    child_timeout = args.timeout
    print(f"[run {n}] raw HTTP read of {size / MIB:.0f} MiB ...", flush=True)
    raw_http = run_json_child(
        "bench.baselines", ["http", url, "--size", str(size)], env, child_timeout
    )
    print(f"[run {n}]   {raw_http['mb_per_s']:.1f} MB/s", flush=True)
    bucket = env["S3_BUCKET_NAME"]
    print(f"[run {n}] raw S3 multipart upload of {size / MIB:.0f} MiB ...", flush=True)
    raw_s3 = run_json_child(
        "bench.baselines",
        ["s3", "--size", str(size), "--bucket", bucket,
         "--key", f"bench-raw/{uuid.uuid4()}.bin", "--part-mib", str(args.part_mib)],
        env,
        child_timeout,
    )  # fmt: skip
    _without_complete(raw_s3, size)
    print(f"[run {n}]   {_raw_line(raw_s3)}", flush=True)
    raw_pipe = None
    if not args.no_pipe:
        print(f"[run {n}] raw pipe HTTP -> S3 of {size / MIB:.0f} MiB ...", flush=True)
        raw_pipe = run_json_child(
            "bench.baselines",
            ["pipe", url, "--size", str(size), "--bucket", bucket,
             "--key", f"bench-raw/{uuid.uuid4()}.bin", "--part-mib", str(args.part_mib)],
            env,
            child_timeout,
        )  # fmt: skip
        _without_complete(raw_pipe, size)
        print(f"[run {n}]   {_raw_line(raw_pipe)}", flush=True)
    print(f"[run {n}] service: one job, export {export_id} ...", flush=True)
    log_path = Path(args.log_dir) / f"service-run{n}.log"
    service = run_service(stack, probe, env, export_id, size, args.timeout, log_path)
    service_part_size = int(env.get("S3_PART_SIZE_MB", "8")) * MIB  # the service's default
    verify(Aws(env), service, export_id, size, service_part_size)
    print(
        f"[run {n}]   {service['mb_per_s']:.1f} MB/s, peak RSS {service['peak_rss_mib']:.1f} MiB"
        f" (idle {service['idle_rss_mib']:.1f} MiB), checks ok",
        flush=True,
    )
    return {"raw_http": raw_http, "raw_s3": raw_s3, "raw_pipe": raw_pipe, "service": service}


def _without_complete(raw: dict[str, Any], size: int) -> None:
    raw["seconds_without_emulator_complete"] = raw["seconds"] - raw["complete_seconds"]
    raw["mb_per_s_without_emulator_complete"] = mbps(size, raw["seconds_without_emulator_complete"])


def _raw_line(raw: dict[str, Any]) -> str:
    return (
        f"{raw['mb_per_s']:.1f} MB/s ({raw['complete_seconds']:.1f}s of it in the emulator's"
        f" CompleteMultipartUpload; {raw['mb_per_s_without_emulator_complete']:.1f} MB/s without)"
    )


def summarize(runs: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    def med(path: tuple[str, str]) -> float:
        return statistics.median(run[path[0]][path[1]] for run in runs)

    service = med(("service", "mb_per_s"))
    pipe: dict[str, Any] = {}
    if all(run["raw_pipe"] for run in runs):
        pipe_mbps = med(("raw_pipe", "mb_per_s"))
        pipe = {
            "raw_pipe_mb_per_s": pipe_mbps,
            "raw_pipe_mb_per_s_without_emulator_complete": med(
                ("raw_pipe", "mb_per_s_without_emulator_complete")
            ),
            "ratio_service_to_raw_pipe": service / pipe_mbps,
            "raw_pipe_client_peak_rss_mib": kib_to_mib(
                max(r["raw_pipe"]["vm_hwm_kib"] for r in runs)
            ),
        }
    raw_http = med(("raw_http", "mb_per_s"))
    raw_s3 = med(("raw_s3", "mb_per_s"))
    peak = max(run["service"]["peak_rss_mib"] for run in runs)
    return {
        "service_mb_per_s": service,
        "service_mb_per_s_end_to_end": med(("service", "mb_per_s_end_to_end")),
        "raw_http_mb_per_s": raw_http,
        "raw_s3_mb_per_s": raw_s3,
        "ratio_service_to_min_raw": service / min(raw_http, raw_s3),
        "ratio_service_to_min_raw_without_emulator_complete": (
            med(("service", "mb_per_s_without_emulator_complete"))
            / min(raw_http, med(("raw_s3", "mb_per_s_without_emulator_complete")))
        ),
        "service_mb_per_s_without_emulator_complete": med(
            ("service", "mb_per_s_without_emulator_complete")
        ),
        "raw_s3_mb_per_s_without_emulator_complete": med(
            ("raw_s3", "mb_per_s_without_emulator_complete")
        ),
        "service_emulator_complete_seconds": med(("service", "emulator_complete_seconds")),
        "raw_s3_emulator_complete_seconds": med(("raw_s3", "complete_seconds")),
        "service_cpu_seconds_during_job": med(("service", "service_cpu_seconds_during_job")),
        **pipe,
        "service_seconds_downloading_to_completed": med(
            ("service", "seconds_downloading_to_completed")
        ),
        "peak_rss_mib": peak,
        "peak_rss_sampled_during_job_mib": max(
            run["service"]["peak_rss_sampled_during_job_mib"] for run in runs
        ),
        "idle_rss_mib": med(("service", "idle_rss_mib")),
        "rss_after_job_mib": med(("service", "rss_after_job_mib")),
        "raw_http_client_peak_rss_mib": kib_to_mib(max(r["raw_http"]["vm_hwm_kib"] for r in runs)),
        "raw_s3_client_peak_rss_mib": kib_to_mib(max(r["raw_s3"]["vm_hwm_kib"] for r in runs)),
        "rss_budget_mib": budget,
        "rss_pass": peak < budget,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The printed table's rows for a result file (the README generator calls this)."""
    config = result["config"]
    return _rows(result["summary"], config["bytes"], config["runs"])


def report(summary: dict[str, Any], size: int, runs: int) -> str:
    return table(_rows(summary, size, runs))


def _rows(summary: dict[str, Any], size: int, runs: int) -> list[tuple[str, str]]:
    s = summary
    has_pipe = "raw_pipe_mb_per_s" in s

    def f(key: str, digits: int = 1) -> str:
        value = s.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [
        ("file", f"{size / MIB:.0f} MiB, {runs} run(s), medians"),
        ("service MB/s (DOWNLOADING -> COMPLETED)", f("service_mb_per_s")),
        ("service MB/s (send -> COMPLETED)", f("service_mb_per_s_end_to_end")),
        ("raw HTTP read MB/s", f("raw_http_mb_per_s")),
        ("raw S3 multipart upload MB/s", f("raw_s3_mb_per_s")),
        ("ratio service / min(raw HTTP, raw S3)", f("ratio_service_to_min_raw", 2)),
    ]
    if has_pipe:
        rows += [
            ("raw pipe HTTP -> S3 MB/s", f("raw_pipe_mb_per_s")),
            ("ratio service / raw pipe", f("ratio_service_to_raw_pipe", 2)),
        ]
    rows += [
        ("without the emulator's CompleteMultipartUpload:", ""),
        ("  service / raw S3" + (" / raw pipe" if has_pipe else "") + " MB/s",
         " / ".join(f(k) for k in ("service_mb_per_s_without_emulator_complete",
                                   "raw_s3_mb_per_s_without_emulator_complete",
                                   "raw_pipe_mb_per_s_without_emulator_complete")[: 3 if has_pipe else 2])),
        ("  ratio service / min(raw HTTP, raw S3)",
         f("ratio_service_to_min_raw_without_emulator_complete", 2)),
        ("  emulator's complete s (service / raw S3)",
         f"{f('service_emulator_complete_seconds')} / {f('raw_s3_emulator_complete_seconds')}"),
        ("service CPU s / wall s during the job",
         f"{f('service_cpu_seconds_during_job')} / {f('service_seconds_downloading_to_completed')}"),
        ("service idle RSS MiB (before the job)", f("idle_rss_mib")),
        ("service peak RSS MiB (VmHWM, or sampled if higher)", f("peak_rss_mib")),
        ("  increase over idle MiB", f"{s['peak_rss_mib'] - s['idle_rss_mib']:.1f}"),
        ("  RSS after the job MiB", f("rss_after_job_mib")),
        ("raw clients' peak RSS MiB (HTTP / S3" + (" / pipe)" if has_pipe else ")"),
         " / ".join(f(k) for k in ("raw_http_client_peak_rss_mib", "raw_s3_client_peak_rss_mib",
                                   "raw_pipe_client_peak_rss_mib")[: 3 if has_pipe else 2])),
        (f"peak RSS < {s['rss_budget_mib']:.0f} MiB", "PASS" if s["rss_pass"] else "FAIL"),
    ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--part-mib", type=int, default=8, help="raw S3 part size")
    parser.add_argument("--timeout", type=float, default=600.0, help="per transfer, seconds")
    parser.add_argument("--rss-budget-mib", type=float, default=RSS_BUDGET_MIB)
    parser.add_argument("--no-pipe", action="store_true", help="skip the raw pipe baseline")
    add_service_env_option(parser)
    parser.add_argument("--output", default=str(RESULTS_DIR / f"{NAME}.json"))
    parser.add_argument("--log-dir", default=None, help="service logs (default: a temp dir)")
    args = parser.parse_args(argv)
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="bench-stream-")
    overrides = {**SERVICE_OVERRIDES, **service_env(parser, args.service_env)}
    if args.size_mb > 1024:
        overrides.setdefault("MAX_FILE_SIZE_MB", str(args.size_mb))
    size = args.size_mb * MIB
    export_id = f"b-files-1-sizemb-{args.size_mb}"

    from src.local.stack import EmbeddedStack

    began = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": NAME,
        "date": utc_now(),
        "machine": machine(),
        "config": {
            "size_mib": args.size_mb,
            "bytes": size,
            "runs": args.runs,
            "export_id": export_id,
            "service_env_overrides": overrides,
            "rss_sample_interval_s": 0.05,
            "status_poll_interval_s": POLL_SECONDS,
        },
        "runs": [],
    }
    code = 0
    stack = EmbeddedStack(name_prefix="bench-").start()
    probe = EmulatorProbe().install()
    try:
        env = {**stack.env(), **overrides}
        for n in range(1, args.runs + 1):
            result["runs"].append(run_once(stack, probe, env, export_id, size, args, n))
        result["summary"] = summarize(result["runs"], args.rss_budget_mib)
        if not result["summary"]["rss_pass"]:
            code = 2
    except Exception as failure:  # any failure: record it, exit 1, never half a report
        result["error"] = f"{type(failure).__name__}: {failure}"
        print(f"\nFAIL: {result['error']}", file=sys.stderr)
        code = 1
    finally:
        result["bench_process_peak_rss_mib"] = kib_to_mib(proc_status()["VmHWM"])
        result["wall_seconds"] = time.monotonic() - began
        probe.uninstall()
        stack.stop()
        write_json(Path(args.output), result)
    if "summary" in result:
        print()
        print(report(result["summary"], size, args.runs))
    print(
        f"bench process (emulator + sandbox) peak RSS {result['bench_process_peak_rss_mib']:.0f}"
        f" MiB; wall {result['wall_seconds']:.0f}s; service logs in {args.log_dir};"
        f" results in {args.output}"
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
