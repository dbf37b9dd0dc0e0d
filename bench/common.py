"""Shared helpers for the benchmarks: the service as child processes (replicas), /proc
sampling, machine description, result files and tables. Standard library only (plus the
project)."""

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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.support.service_process import ServiceProcess

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


class Replicas:
    """Replicas of the service, each a child process (`ServiceProcess`) with its own
    INSTANCE_ID (`replica-<n>`, numbered in start order) and log (`<log_dir>/replica-<n>.log`).
    `settings` are every replica's extra environment variables (on top of `env`)."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, settings: dict[str, str] | None = None
    ) -> None:
        self._env, self._log_dir, self._settings = env, log_dir, dict(settings or {})
        self.live: dict[str, ServiceProcess] = {}
        self.started = 0

    def _new(self) -> tuple[str, ServiceProcess]:
        name = f"replica-{self.started}"
        self.started += 1
        settings = {**self._settings, "INSTANCE_ID": name}
        return name, ServiceProcess(self._env, self._log_dir / f"{name}.log", **settings)

    def start(self, timeout: float = 60) -> ServiceProcess:
        name, process = self._new()
        self.live[name] = process  # stopped by stop() even if it never became ready
        return process.start(timeout=timeout)

    def start_many(self, count: int, timeout: float = 60) -> list[ServiceProcess]:
        """`count` replicas started at the same time; returns once all are ready."""
        new = [self._new() for _ in range(count)]
        self.live.update(new)
        with ThreadPoolExecutor(max_workers=max(count, 1)) as pool:
            return list(pool.map(lambda named: named[1].start(timeout=timeout), new))

    def kill(self, name: str) -> None:
        self.live.pop(name).kill()

    def stop(self) -> None:
        for process in self.live.values():
            process.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each live replica (user + system, all threads)."""
        return {name: proc_cpu_seconds(p.pid) for name, p in self.live.items()}


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


def emulator_by_operation(
    cpu: dict[str, dict[str, float]], units: int
) -> dict[str, dict[str, float]]:
    """`EmbeddedAws.cpu_by`'s figures as {operation: {"ms_per_unit", "ms_per_call",
    "moto_ms_per_call" (without the emulator's accounting), "calls"}}, the costliest per
    unit first."""
    shown = {
        op: {
            "ms_per_unit": f["seconds"] * 1000 / units,
            "ms_per_call": f["seconds"] * 1000 / f["calls"],
            "moto_ms_per_call": f["moto_seconds"] * 1000 / f["calls"],
            "calls": f["calls"],
        }
        for op, f in cpu.items()
        if f["calls"]
    }
    return dict(sorted(shown.items(), key=lambda kv: -kv[1]["ms_per_unit"]))


def emulator_rows(by_operation: dict[str, Any] | None, unit: str) -> list[tuple[str, str]]:
    """Emulator CPU by operation: the service's per unit and per call, with the baseline's
    per call where it makes the same call."""
    if not by_operation:
        return []  # a result from before the emulator kept CPU by operation
    service, baseline = by_operation["service"], by_operation["baseline"]
    rows = [
        (
            f"emulator CPU per {unit} (total of operations): service / baseline",
            "{:.1f} / {:.1f} ms".format(
                sum(f["ms_per_unit"] for f in service.values()),
                sum(f["ms_per_unit"] for f in baseline.values()),
            ),
        )
    ]
    for op, f in service.items():
        theirs = baseline.get(op)
        per_call = f"{f['ms_per_call']:.2f} ms a call"
        if "moto_ms_per_call" in f:  # (older results have no split)
            per_call += f", moto {f['moto_ms_per_call']:.2f}"
        if theirs:
            per_call += f" (baseline {theirs['ms_per_call']:.2f}"
            per_call += (
                f", moto {theirs['moto_ms_per_call']:.2f})" if "moto_ms_per_call" in theirs else ")"
            )
        rows.append((f"  emulator, {op}", f"{f['ms_per_unit']:.2f} ms per {unit}, {per_call}"))
    return rows
