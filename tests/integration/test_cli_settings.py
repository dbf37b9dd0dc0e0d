"""Settings as an operator meets them: a missing or invalid one stops the command at once
with one line naming the variable and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVE_SETTINGS = ("SQS_EXPORT_JOBS_URL", "SQS_DOWNLOAD_TASKS_URL", "S3_BUCKET_NAME")
COMPLETE = {
    "SQS_EXPORT_JOBS_URL": "http://127.0.0.1:9/000000000000/jobs",
    "SQS_DOWNLOAD_TASKS_URL": "http://127.0.0.1:9/000000000000/tasks",
    "S3_BUCKET_NAME": "exports",
}


def export_service(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SERVE_SETTINGS and k != "LOG_FORMAT"}
    return subprocess.run(
        [sys.executable, "-m", "src.main", *args],
        cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_serve_without_the_export_job_queue_exits_2_with_one_line_naming_it() -> None:
    env = {k: v for k, v in COMPLETE.items() if k != "SQS_EXPORT_JOBS_URL"}
    done = export_service("serve", **env)

    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "SQS_EXPORT_JOBS_URL is not set" in line
    assert "Traceback" not in done.stderr


def test_serve_with_nothing_set_names_every_missing_setting_in_one_line() -> None:
    done = export_service("serve")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    for name in SERVE_SETTINGS:
        assert name in line


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLLER_BATCH_SIZE", "many"),
        ("SQS_WAIT_TIME_SECONDS", "99"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("SQS_DOWNLOAD_TASKS_URL", "tasks-queue"),
    ],
)
def test_an_invalid_setting_exits_2_with_one_line_naming_it(name: str, value: str) -> None:
    done = export_service("serve", **{**COMPLETE, name: value})
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert name in line and value in line
    assert "Traceback" not in done.stderr


def test_dlq_list_without_its_queue_exits_2_instead_of_a_traceback() -> None:
    done = export_service("dlq", "list")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "SQS_EXPORT_JOBS_URL is not set" in line
