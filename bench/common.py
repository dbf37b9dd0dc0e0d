"""Shared helpers for the benchmarks: the service as a child process, /proc sampling,
machine description, result files and tables. Standard library only (plus the project)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"

MB = 1_000_000  # throughput is reported in decimal MB/s
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The Vm* lines of /proc/<pid>/status, in KiB (VmRSS, VmHWM, ...)."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Vm"):
                name, _, rest = line.partition(":")
                values[name] = int(rest.split()[0])
    return values


def proc_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds used so far by a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kib_to_mib(kib: int | float) -> float:
    return kib / 1024


def mbps(size: int, seconds: float) -> float:
    return size / MB / seconds if seconds > 0 else float("nan")


class RssSampler:
    """Samples VmRSS of one process every `interval` seconds on a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = proc_status(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return  # the process is gone
            self.samples.append((time.monotonic(), rss))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def peak_kib(self, start: float | None = None, end: float | None = None) -> int:
        window = [
            rss
            for at, rss in self.samples
            if (start is None or at >= start) and (end is None or at <= end)
        ]
        return max(window, default=0)


def run_json_child(module: str, args: Sequence[str], env: dict[str, str], timeout: float) -> Any:
    """Runs `python -m module args` and parses the last stdout line as JSON."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{module} {' '.join(args)} exited {completed.returncode}:\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_total_mib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_mib = int(line.split()[1]) // 1024
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_total_mib": mem_total_mib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json(path: Path, data: Any) -> None:
    """Atomic write (the `.tmp` sibling is git-ignored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):  # DynamoDB numbers
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    line = "-" * (width + 3 + max(len(value) for _, value in rows))
    body = "\n".join(f"{name:<{width}} | {value}" for name, value in rows)
    return f"{line}\n{body}\n{line}"


def add_service_env_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra service setting, for A/B runs (e.g. S3_PARTS_IN_FLIGHT=1); repeatable",
    )


def service_env(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    """The --service-env KEY=VALUE items as a dict."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--service-env wants KEY=VALUE, got {item!r}")
        overrides[key] = value
    return overrides


def finish(
    result: dict[str, Any], results_dir: str, report: Callable[[dict[str, Any]], str]
) -> int:
    """Write `result` to <results_dir>/<name>.json, print its table; 1 when incorrect."""
    write_json(Path(results_dir) / f"{result['name']}.json", result)
    print(report(result), flush=True)
    if not result["correct"]:
        print("INCORRECT:", *result["problems"], sep="\n  ", file=sys.stderr)
        return 1
    return 0


def baseline_client_kwargs() -> dict[str, Any]:
    """What a raw baseline's clients use: the emulator of this run, its own access key
    (so its calls are told apart from the service's)."""
    return {
        "endpoint_url": os.environ["AWS_ENDPOINT"],
        "region_name": os.environ.get("AWS_REGION", "us-east-1"),
        "aws_access_key_id": "baseline",
        "aws_secret_access_key": "baseline",
    }


def per_unit_rows(
    calls_by_operation: dict[str, dict[str, int]], units: int, unit: str
) -> list[tuple[str, str]]:
    """Table rows `  per <unit>: <service>.<operation> | calls / units`, most first."""
    per_unit = {
        f"{service}.{operation}": n / units
        for service, operations in calls_by_operation.items()
        for operation, n in operations.items()
    }
    ranked = sorted(per_unit.items(), key=lambda item: -item[1])
    return [(f"  per {unit}: {name}", f"{n:.2f}") for name, n in ranked]
