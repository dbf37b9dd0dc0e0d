"""Scaling with the number of replicas: the small_files workload once per replica count,
each run in its own child process (`python -m bench.small_files --replicas N`; moto's
backends are process-global), side by side with the speed-up over the first count.

    python -m bench.scaling [--replicas 1 2 4] [--jobs 100] [--files 10] [--size-kb 64]
                            [--idle-seconds 10] [--metadata-kb 1]

Per run: files/s, service CPU per file (all replicas), AWS calls per file, the emulator's
CPU per file (this machine's emulator is one process, one GIL: when it is busy all the
time it caps files/s whatever the replicas do), and the raw baseline's files/s of that run.
Speed-up = files/s / files/s with 1 replica (the first count when 1 is not run). Exit code 1 when a
run is incorrect or broke (its problems are listed)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, ROOT, finish, machine, table, utc_now


def _run_once(args: argparse.Namespace, replicas: int, work_dir: Path) -> dict[str, Any]:
    """One small_files run with `replicas` replicas; its result, or `{"problems": [...]}`."""
    results_dir = work_dir / f"replicas-{replicas}"
    command = [
        sys.executable, "-m", "bench.small_files",
        "--replicas", str(replicas), "--jobs", str(args.jobs), "--files", str(args.files),
        "--size-kb", str(args.size_kb), "--idle-seconds", str(args.idle_seconds),
        "--metadata-kb", str(args.metadata_kb), "--timeout", str(args.timeout),
        "--results-dir", str(results_dir), "--log-dir", str(results_dir / "logs"),
    ]  # fmt: skip
    print(f"--- {replicas} replica(s) ---", flush=True)
    completed = subprocess.run(command, cwd=ROOT, timeout=args.timeout * 2 + 300, check=False)
    path = results_dir / "small_files.json"
    if completed.returncode not in (0, 1) or not path.exists():
        exited = f"bench.small_files --replicas {replicas} exited {completed.returncode}"
        return {"problems": [exited]}
    return dict(json.loads(path.read_text()))


def _summary(replicas: int, result: dict[str, Any]) -> dict[str, Any]:
    s, b, idle = result["service"], result["baseline"], result["idle"]
    return {
        "replicas": replicas,
        "correct": result["correct"],
        "files_per_s": s["files_per_s"],
        "seconds": s["seconds"],
        "cpu_ms_per_file": s["cpu_ms_per_file"],
        "cpu_seconds_by_replica": s["cpu_seconds_by_replica"],
        "aws_calls_per_file": s["aws_calls_per_file"],
        "emulator_cpu_ms_per_file": result["emulator_cpu_ms_per_file"]["service"],
        "baseline_files_per_s": b["files_per_s"],
        "ratio_files_per_s": result["ratio_files_per_s"],
        "idle_calls_per_s_per_replica": idle["calls_per_s_per_replica"],
        "dynamodb_write_units_per_file": s["dynamodb_writes"]["write_units_per_file"],
        "log_dir": result["log_dir"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-scaling-"))
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    for replicas in args.replicas:
        result = _run_once(args, replicas, work_dir)
        problems += [f"{replicas} replicas: {p}" for p in result["problems"]]
        if "service" in result:
            runs.append(_summary(replicas, result))
    # relative to 1 replica (to the first count when 1 is not among them)
    base = next((r for r in runs if r["replicas"] == 1), runs[0] if runs else None)
    for summary in runs:
        summary["speedup"] = summary["files_per_s"] / base["files_per_s"] if base else None
    return {
        "name": "scaling",
        "at": utc_now(),
        "machine": machine(),
        "workload": {
            "replicas": args.replicas,
            "jobs": args.jobs,
            "files_per_job": args.files,
            "size_kib": args.size_kb,
            "metadata_kib": args.metadata_kb,
            "idle_seconds": args.idle_seconds,
        },
        "correct": not problems and len(runs) == len(args.replicas),
        "problems": problems,
        "runs": runs,
        "log_dir": str(work_dir),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The human table of a result (printed, and rendered by bench.report)."""
    w = result["workload"]
    figures = [
        (
            "workload",
            "{jobs} jobs x {files_per_job} files x {size_kib} KiB".format(**w)
            + f", {w['metadata_kib']} KiB metadata, per replica count",
        ),
        ("correct", str(result["correct"])),
    ]
    for r in result["runs"]:
        n = r["replicas"]
        speedup = f"x{r['speedup']:.2f}" if r.get("speedup") is not None else "?"
        figures += [
            (f"{n} replicas: files/s (speed-up)", f"{r['files_per_s']:.1f} ({speedup})"),
            (
                f"{n} replicas: service / emulator CPU per file",
                f"{r['cpu_ms_per_file']:.1f} / {r['emulator_cpu_ms_per_file']:.1f} ms",
            ),
            (f"{n} replicas: AWS calls per file", f"{r['aws_calls_per_file']:.2f}"),
            (f"{n} replicas: baseline files/s", f"{r['baseline_files_per_s']:.1f}"),
        ]
    return figures


def report(result: dict[str, Any]) -> str:
    return table(rows(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--size-kb", type=int, default=64)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--metadata-kb", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900, help="per run's jobs")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir", help="each run's results and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    return finish(run(args), args.results_dir, report)


if __name__ == "__main__":
    raise SystemExit(main())
