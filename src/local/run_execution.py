"""Start one execution of a state machine, wait for its end, print how it ended.

`python -m src.local.run_execution --endpoint http://localstack:4566 --name export-job
--input '{"exportId": "demo-files-3", "userId": "demo"}'` is docker-compose's `demo` step.
An input object without a `jobId` gets a fresh one (the export-job state machine needs a
UUID there). Exit code 0 only if the execution SUCCEEDED; 1 if it failed, timed out,
was aborted or did not end within `--timeout`; 2 for bad arguments or an unknown machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any, TextIO

import boto3


def start_and_wait(
    sfn: Any, state_machine_arn: str, payload: object, *, timeout: float, interval: float = 1.0
) -> dict[str, Any]:
    """The execution's description once it is no longer RUNNING (or still RUNNING when
    `timeout` seconds have passed)."""
    arn = sfn.start_execution(
        stateMachineArn=state_machine_arn,
        name=f"run-{uuid.uuid4()}",
        input=json.dumps(payload),
    )["executionArn"]
    deadline = time.monotonic() + timeout
    while True:
        execution: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING" or time.monotonic() >= deadline:
            return execution
        time.sleep(interval)


def find_state_machine(sfn: Any, name: str) -> str | None:
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page["stateMachines"]:
            if machine["name"] == name:
                return str(machine["stateMachineArn"])
    return None


def report(execution: dict[str, Any], out: TextIO) -> int:
    """Prints status, then output or error and cause; the exit code."""
    print(f"execution: {execution['executionArn']}", file=out)
    print(f"status: {execution['status']}", file=out)
    if "output" in execution:
        print(f"output: {execution['output']}", file=out)
    for field in ("error", "cause"):
        if execution.get(field):
            print(f"{field}: {execution[field]}", file=out)
    return 0 if execution["status"] == "SUCCEEDED" else 1


def _payload(text: str) -> object:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if isinstance(payload, dict) and "jobId" not in payload:
        payload = {"jobId": str(uuid.uuid4()), **payload}
    return payload


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT"))
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    machine = parser.add_mutually_exclusive_group(required=True)
    machine.add_argument("--state-machine-arn")
    machine.add_argument("--name", help="the state machine's name (looked up)")
    parser.add_argument("--input", type=_payload, default=_payload("{}"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    return parser


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    sfn = boto3.client("stepfunctions", endpoint_url=args.endpoint, region_name=args.region)
    arn = args.state_machine_arn or find_state_machine(sfn, args.name)
    if arn is None:
        parser.error(f"no state machine named {args.name!r}")
    execution = start_and_wait(sfn, arn, args.input, timeout=args.timeout, interval=args.interval)
    if execution["status"] == "RUNNING":
        print(f"still RUNNING after {args.timeout:g}s", file=out)
    return report(execution, out)


if __name__ == "__main__":
    raise SystemExit(main())
