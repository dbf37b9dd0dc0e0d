"""Each benchmark workload runs at a tiny size, so a change that breaks a bench is seen
in the test command. Figures are not judged here (machines are shared and noisy): only
that the run is correct and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run `python -m bench.<module>` into tmp_path: its result and what it printed."""
    completed = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args,
         "--results-dir", str(tmp_path), "--log-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((tmp_path / f"{module}.json").read_text()), completed.stdout


def test_small_files_runs_correctly_and_counts_the_services_calls(tmp_path: Path) -> None:
    result, printed = run_bench(
        "small_files", tmp_path,
        "--jobs", "2", "--files", "3", "--size-kb", "4", "--idle-seconds", "2", "--timeout", "240",
    )  # fmt: skip
    assert result["correct"] is True
    service = result["service"]
    s3_puts = service["calls_by_operation"]["S3"]["PUT"]
    assert s3_puts == 6  # one PutObject per file: the bench's own calls are not counted
    assert service["aws_calls_per_file"] == service["aws_calls"] / 6 > 1
    assert result["baseline"]["files"] == 6
    assert "AWS calls per file" in printed


def test_intake_runs_correctly_and_counts_the_services_calls(tmp_path: Path) -> None:
    result, printed = run_bench("intake", tmp_path, "--jobs", "20", "--timeout", "240")
    assert result["correct"] is True
    assert result["workload"]["jobs"] == 20
    service = result["service"]
    puts = service["calls_by_operation"]["DynamoDB_20120810"]["PutItem"]
    assert puts >= 20  # one conditional create per job: the bench's own calls are not counted
    assert service["aws_calls_per_job"] == service["aws_calls"] / 20 > 1
    baseline = result["baseline"]
    assert baseline["jobs"] == 20
    assert baseline["jobs_per_s"] > 0
    assert baseline["aws_calls_per_job"] >= 1.3  # a put per job, a send/receive/delete per 10
    assert result["ratio_jobs_per_s"] > 0
    assert "AWS calls per job" in printed


def test_scale_files_survives_both_sigkills_at_a_tiny_size(tmp_path: Path) -> None:
    # Shortened leases and small chunks so that a 200-file dispatch can be caught mid-way
    # and recovery takes seconds, not the default minute.
    result, printed = run_bench(
        "scale_files", tmp_path, "--files", "200", "--timeout", "300",
        "--service-env", "DISPATCH_CHUNK_SIZE=5",
        "--service-env", "DISPATCH_LEASE_SECONDS=3",
        "--service-env", "DISPATCH_RESUME_INTERVAL_SECONDS=1",
        "--service-env", "SQS_VISIBILITY_TIMEOUT=5",
        "--service-env", "SQS_WAIT_TIME_SECONDS=1",
    )  # fmt: skip
    assert result["correct"] is True, result["problems"]
    assert [k["during"] for k in result["kills"]] == ["dispatch", "downloads"]
    assert result["aws_calls_per_file"] > 2
    assert "files/s" in printed
