"""Charts (PNG) of the benchmark results for bench/README.md, drawn with matplotlib's
Agg backend (no display). `draw(stem, result, path)` picks the chart for a result file
and returns the path written, or None when that result has nothing to draw."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

SERVICE, BASELINE, BUDGET = "#1f77b4", "#7f7f7f", "#d62728"


def _flat_calls(calls: dict[str, Any]) -> dict[str, int]:
    """{"Svc": {"Op": n}} or {"Svc.Op": n} -> {"Svc.Op": n}, the API's prefix shortened."""
    flat: dict[str, int] = {}
    for key, value in calls.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for operation, count in items:
            name = key if operation is None else f"{key}.{operation}"
            service, _, op = name.partition(".")
            service = {"DynamoDB_20120810": "DynamoDB", "AmazonSQS": "SQS"}.get(service, service)
            service = service.replace("AWSStepFunctions", "SFN")
            flat[f"{service}.{op}"] = flat.get(f"{service}.{op}", 0) + int(count)
    return flat


def calls_per_unit(ax: Axes, calls: dict[str, Any], units: int, unit: str, title: str) -> None:
    per_unit = sorted(((n / units, name) for name, n in _flat_calls(calls).items()), reverse=True)
    values = [v for v, _ in per_unit][::-1]
    names = [name for _, name in per_unit][::-1]
    ax.barh(names, values, color=SERVICE)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"AWS calls per {unit} (total {sum(values):.2f})")
    ax.set_title(title, fontsize=10)


def pair(ax: Axes, labels: tuple[str, str], values: tuple[float, float], ylabel: str) -> None:
    bars = ax.bar(labels, values, color=[SERVICE, BASELINE])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_ylabel(ylabel)


def _small_files(result: dict[str, Any], fig: Any) -> None:
    w, s, b = result["workload"], result["service"], result["baseline"]
    files = w["jobs"] * w["files_per_job"]
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.2, 1, 1]})
    calls_per_unit(ax1, s["calls_by_operation"], files, "file", "service, by operation")
    pair(ax2, ("service", "baseline"), (s["files_per_s"], b["files_per_s"]), "files/s")
    pair(ax3, ("service", "baseline"), (s["cpu_ms_per_file"], b["cpu_ms_per_file"]), "CPU ms/file")
    fig.suptitle(f"small_files: {w['jobs']} jobs x {w['files_per_job']} x {w['size_kib']} KiB")


def _intake(result: dict[str, Any], fig: Any) -> None:
    s, b, jobs = result["service"], result["baseline"], result["workload"]["jobs"]
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.2, 1, 1]})
    calls_per_unit(ax1, s["calls_by_operation"], jobs, "job", "service, by operation")
    pair(ax2, ("service", "baseline"), (s["jobs_per_s"], b["jobs_per_s"]), "jobs/s")
    pair(ax3, ("service", "baseline"), (s["cpu_ms_per_job"], b["cpu_ms_per_job"]), "CPU ms/job")
    fig.suptitle(f"intake: {jobs} zero-file jobs")


def _stream(result: dict[str, Any], fig: Any) -> None:
    summary, config = result["summary"], result["config"]
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    names = ["service", "raw S3", "raw pipe"]
    keys = ["service_mb_per_s", "raw_s3_mb_per_s", "raw_pipe_mb_per_s"]
    shown = [(n, summary[k]) for n, k in zip(names, keys, strict=True) if k in summary]
    bars = ax1.bar([n for n, _ in shown], [v for _, v in shown], color=SERVICE)
    ax1.bar_label(bars, fmt="%.1f", fontsize=8)
    ax1.set_ylabel("MB/s (raw HTTP: {:.0f})".format(summary["raw_http_mb_per_s"]))
    for run_no, run in enumerate(result["runs"], 1):
        timeline = run["service"].get("rss_timeline_mib") or []
        ax2.plot([t for t, _ in timeline], [m for _, m in timeline], label=f"run {run_no}")
    ax2.axhline(summary["rss_budget_mib"], color=BUDGET, linestyle="--", label="budget")
    ax2.set_xlabel("seconds since the job started")
    ax2.set_ylabel("service RSS (MiB)")
    ax2.legend(fontsize=8)
    fig.suptitle(f"stream: one {config['size_mib']} MiB file, HTTP → S3")


def _scale_files(result: dict[str, Any], fig: Any) -> None:
    ax = fig.subplots(1, 1)
    w = result["workload"]
    calls_per_unit(ax, result["calls_by_operation"], w["files"], "file", "all replicas")
    fig.suptitle(f"scale_files: one {w['files']}-file job, {w['replicas']} replicas, 2 SIGKILLs")


def _scaling(result: dict[str, Any], fig: Any) -> None:
    runs = sorted(result["runs"], key=lambda r: r["replicas"])
    n = [r["replicas"] for r in runs]
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(n, [r["files_per_s"] for r in runs], "o-", color=SERVICE, label="service")
    ax1.plot(n, [r["baseline_files_per_s"] for r in runs], "s--", color=BASELINE,
             label="raw baseline (same run)")  # fmt: skip
    ax1.set_xticks(n)
    ax1.set_xlabel("replicas (2 cores, the emulator in one of its processes)")
    ax1.set_ylabel("files/s")
    ax1.legend(fontsize=8)
    ax2.bar([str(x) for x in n], [r["cpu_ms_per_file"] for r in runs], color=SERVICE)
    ax2.set_xlabel("replicas")
    ax2.set_ylabel("service CPU ms per file (all replicas)")
    w = result["workload"]
    fig.suptitle(f"scaling: {w['jobs']} jobs x {w['files_per_job']} x {w['size_kib']} KiB")


def _inflight(result: dict[str, Any], fig: Any) -> None:
    hold, release = result["hold"], result["release"]
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    calls = sorted(hold["calls_per_s"]["by_operation"].items(), key=lambda kv: kv[1])
    ax1.barh([_flat_name(k) for k, _ in calls], [v for _, v in calls], color=SERVICE)
    ax1.set_xlabel("AWS calls/s, all replicas, while every job waits")
    latency = release["answer_latency_ms"]
    shown = [(k, latency[k]) for k in ("p50", "p95") if latency.get(k) is not None]
    bars = ax2.bar([k for k, _ in shown], [v for _, v in shown], color=SERVICE)
    ax2.bar_label(bars, fmt="%.0f", fontsize=8)
    ax2.set_ylabel("answer latency ms (job end -> answer taken)")
    w = result["workload"]
    fig.suptitle(f"inflight: {w['jobs']} jobs waiting, {w['replicas']} replicas, "
                 f"HeartbeatSeconds {w['heartbeat_seconds']}")  # fmt: skip


def _flat_name(name: str) -> str:
    return next(iter(_flat_calls({name: 1})))


DRAWERS: dict[str, tuple[Callable[[dict[str, Any], Any], None], tuple[float, float]]] = {
    "small_files": (_small_files, (11, 3.6)),
    "small_files_metadata_100kib": (_small_files, (11, 3.6)),
    "intake": (_intake, (11, 3.6)),
    "stream_1gib": (_stream, (10, 3.6)),
    "stream_128mib": (_stream, (10, 3.6)),
    "scale_files": (_scale_files, (7, 3.6)),
    "scaling": (_scaling, (10, 3.6)),
    "inflight": (_inflight, (11, 4)),
    "inflight_2000_default_heartbeat": (_inflight, (11, 4)),
}


def draw(stem: str, result: dict[str, Any], path: Path) -> Path | None:
    if stem not in DRAWERS or not result.get("correct", "summary" in result):
        return None
    drawer, size = DRAWERS[stem]
    fig = plt.figure(figsize=size, dpi=90, layout="constrained")
    try:
        drawer(result, fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})  # no version stamp: stable bytes
    finally:
        plt.close(fig)
    return path
