"""The operator CLI against the embedded stack and a running service: the same use cases
as the admin API, readable tables or --json, clear refusals (exit 1), `check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from src.infrastructure.log_setup import detach_logging
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ROOT, ServiceProcess

pytestmark = pytest.mark.e2e

FAST = {"POLLING_INTERVAL_MS": "300", "POLLING_MAX_INTERVAL_MS": "500", "POLLER_TICK_MS": "200",
        "SQS_WAIT_TIME_SECONDS": "1"}  # fmt: skip


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    return {**embedded_stack.env(embedded_stack.provision("cli-")), **FAST}


@pytest.fixture(scope="module")
def service(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    process = ServiceProcess(env, tmp_path_factory.mktemp("cli") / "service.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own: how an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "src.main", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def run(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same CLI in this process (typer's runner): the same code, without the 2-3 s
    of imports each command costs in a process of its own."""
    from typer.testing import CliRunner

    from src import operator_cli
    from src.infrastructure.log_setup import configure_logging
    from src.main import app

    def uncached(*args: Any, **kwargs: Any) -> None:
        # The runner's stream closes after each command: no module logger may keep it
        # (structlog caches a logger on first use), or later tests log to a closed file.
        configure_logging(*args, **kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(operator_cli, "configure_logging", uncached)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        result = runner.invoke(app, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

    yield invoke
    structlog.reset_defaults()
    detach_logging()


def finished_job(aws: Aws, export_id: str, user: str = "cli-user") -> str:
    job_id = str(uuid.uuid4())
    aws.send_job({"jobId": job_id, "exportId": export_id, "userId": user})
    wait_for(lambda: (aws.job(job_id) or {}).get("completedAt"), 60, f"job {job_id}")
    return job_id


def test_check_reaches_everything_and_says_so_line_by_line(env: dict[str, str]) -> None:
    done = cli(env, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ok   settings"
    assert len(lines) == 7 and all(line.startswith("ok   ") for line in lines)
    assert any("Export API" in line for line in lines)


def test_check_names_what_it_cannot_reach(env: dict[str, str]) -> None:
    done = cli(
        {**env, "S3_BUCKET_NAME": "no-such-bucket", "EXPORT_API_BASE_URL": "http://127.0.0.1:9"},
        "check",
    )
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == ["FAIL bucket no-such-bucket: NoSuchBucket",
                      "FAIL Export API http://127.0.0.1:9: ClientConnectorError"]  # fmt: skip


def test_version_and_missing_settings() -> None:
    assert cli({}, "--version").stdout.startswith("export-service ")
    done = cli({"SQS_EXPORT_JOBS_URL": ""}, "check")
    assert done.returncode == 2 and "SQS_EXPORT_JOBS_URL is not set" in done.stderr


def test_list_and_show_as_tables_and_json(run: Any, aws: Aws, service: ServiceProcess) -> None:
    user = f"u{uuid.uuid4().hex[:6]}"
    job_id = finished_job(aws, "files-2-size-100", user)

    listed = json.loads(run("jobs", "list", "--user", user, "--json").stdout)
    assert [j["jobId"] for j in listed["items"]] == [job_id]
    table = run("jobs", "list", "--user", user, "--status", "completed").stdout
    assert job_id in table and "2/2" in table

    shown = json.loads(run("jobs", "show", job_id, "--json").stdout)
    assert shown["status"] == "COMPLETED" and len(shown["files"]["items"]) == 2
    text = run("jobs", "show", job_id).stdout
    assert "COMPLETED" in text and "answer: NOT_REQUIRED" in text
    missing = run("jobs", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_retry_cancel_and_resend_with_their_refusals(
    run: Any, aws: Aws, service: ServiceProcess
) -> None:
    job_id = finished_job(aws, f"t{uuid.uuid4().hex[:6]}-files-3-fail-1-failfirst-1")
    retried = run("jobs", "retry", job_id, "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["status"] == "DOWNLOADING"
    wait_for(lambda: ((j := aws.job(job_id)) and j["status"] == "COMPLETED"
             and int(j["completedTasks"]) == 3) or None, 60, "the retried file")  # fmt: skip
    again = run("jobs", "retry", job_id)
    assert again.returncode == 1 and "no failed file" in again.stderr

    resend = run("jobs", "resend", job_id)
    assert resend.returncode == 1 and "no workflow waits" in resend.stderr

    held = str(uuid.uuid4())
    aws.send_job({"jobId": held, "exportId": f"t{uuid.uuid4().hex[:6]}-neverready", "userId": "u"})
    wait_for(lambda: aws.job(held), 30, "the held job")
    cancelled = run("jobs", "cancel", held, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "CANCELLED"
    assert run("jobs", "cancel", held).returncode == 1


def test_stats_and_dead_letters(run: Any, aws: Aws, service: ServiceProcess) -> None:
    finished_job(aws, "files-1")
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["jobsByStatus"]["COMPLETED"] >= 1 and stats["complete"] is True
    assert "jobsByStatus" in run("stats").stdout

    aws.send_job("this is not json")
    found = wait_for(lambda: [line for line in run("dlq", "list").stdout.splitlines()
                              if "not json" in line] or None, 60, "the DLQ")  # fmt: skip
    assert "Invalid JSON" in json.loads(found[0])["reason"]
    moved = run("dlq", "redrive")
    assert moved.returncode == 0 and "sent back to export-jobs" in moved.stderr
    assert run("dlq", "list", "--queue", "nowhere").returncode == 1


def test_the_cli_never_prints_a_traceback_for_bad_input(env: dict[str, str]) -> None:
    done = cli(env, "jobs", "list", "--cursor", "garbage")
    assert done.returncode == 1 and "refused" in done.stderr
    assert "Traceback" not in done.stderr
