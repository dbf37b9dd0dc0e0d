"""`python -m src.local.run_execution` (docker-compose's demo step): one real execution of
the export-job state machine, answered by the service; its exit code says how it ended."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import boto3
import pytest

from src.local.run_execution import main
from tests.support.service_process import ROOT, ServiceProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def aws_env(module_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The credentials boto3 reads from the environment, as compose's demo step has them."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, module_env[name])
    return module_env


def run(env: dict[str, str], export_id: str, *extra: str) -> tuple[int, dict[str, str]]:
    """main() in this process; its exit code and its printed `field: value` lines."""
    out = io.StringIO()
    machine = env["STATE_MACHINE_ARN"].rsplit(":", 1)[-1]
    payload = json.dumps({"exportId": export_id, "userId": "compose-demo"})
    argv = ["--endpoint", env["AWS_ENDPOINT"], "--name", machine, "--input", payload]
    code = main([*argv, "--interval", "0.2", "--timeout", "60", *extra], out=out)  # extra wins
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines() if ": " in line)
    return code, lines


def test_a_succeeded_execution_prints_its_output_and_exits_0(
    aws_env: dict[str, str], module_service: ServiceProcess
) -> None:
    export_id = f"t{uuid.uuid4().hex[:8]}-files-2"

    code, printed = run(aws_env, export_id)

    assert (code, printed["status"]) == (0, "SUCCEEDED")
    output = json.loads(printed["output"])
    assert output["exportId"] == export_id
    assert uuid.UUID(output["jobId"])  # the job id it made up
    assert (output["status"], output["totalTasks"], output["completedTasks"]) == ("COMPLETED", 2, 2)


def test_a_failed_execution_prints_error_and_cause_and_exits_1(
    aws_env: dict[str, str], module_service: ServiceProcess
) -> None:
    code, printed = run(aws_env, f"t{uuid.uuid4().hex[:8]}-failed")

    assert (code, printed["status"]) == (1, "FAILED")
    assert printed["error"] == "ExportFailed"
    assert "Export generation failed" in printed["cause"]


def test_one_still_running_at_the_timeout_exits_1(
    aws_env: dict[str, str], module_service: ServiceProcess
) -> None:
    code, printed = run(aws_env, f"t{uuid.uuid4().hex[:8]}-neverready", "--timeout", "1")

    assert (code, printed["status"]) == (1, "RUNNING")
    sfn = boto3.client(
        "stepfunctions", endpoint_url=aws_env["AWS_ENDPOINT"], region_name=aws_env["AWS_REGION"]
    )
    sfn.stop_execution(executionArn=printed["execution"])  # not left for the service to poll


def test_as_a_command_it_refuses_an_unknown_machine_and_bad_input(aws_env: dict[str, str]) -> None:
    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "src.local.run_execution", "--endpoint", aws_env["AWS_ENDPOINT"], *args],
            cwd=ROOT, env={**os.environ, **aws_env}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    unknown = command("--name", "no-such-machine")
    assert unknown.returncode == 2
    assert "no state machine named 'no-such-machine'" in unknown.stderr
    not_json = command("--name", "x", "--input", "{oops")
    assert not_json.returncode == 2
    assert "not JSON" in not_json.stderr
