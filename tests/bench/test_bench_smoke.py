"""Each benchmark workload runs at a tiny size, so a change that breaks a bench is seen
in the test command. Figures are not judged here (machines are shared and noisy): only
that the run is correct and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_small_files_runs_correctly_and_counts_the_services_calls(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable, "-m", "bench.small_files",
            "--jobs", "2", "--files", "3", "--size-kb", "4", "--idle-seconds", "2",
            "--timeout", "240", "--results-dir", str(tmp_path), "--log-dir", str(tmp_path),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "small_files.json").read_text())
    assert result["correct"] is True
    service = result["service"]
    s3_puts = service["calls_by_operation"]["S3"]["PUT"]
    assert s3_puts == 6  # one PutObject per file: the bench's own calls are not counted
    assert service["aws_calls_per_file"] == service["aws_calls"] / 6 > 1
    assert result["baseline"]["files"] == 6
    assert "AWS calls per file" in completed.stdout
