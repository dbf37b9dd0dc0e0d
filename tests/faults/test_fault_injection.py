"""Fault injection: a 20-job workload under crashes, throttling, a failing Export API
and a rolling deploy. Each scenario asserts that every job ends, every workflow gets
exactly one answer and no object is truncated; the suite prints a table at the end."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.local.stack import EmbeddedStack
from tests.faults import workload
from tests.support.aws import Aws
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.faults


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.stop()


def _setup(stack: EmbeddedStack, prefix: str) -> tuple[dict[str, str], Aws]:
    env = {**stack.env(stack.provision(prefix)), **workload.FAST}
    return env, Aws(env)


def _replica(services: list[ServiceProcess], env: dict[str, str], tmp: Path) -> ServiceProcess:
    service = ServiceProcess(env, tmp / f"replica-{len(services)}.log").start()
    services.append(service)
    return service


def _assert_clean(result: workload.Result) -> None:
    assert result.lost == 0, workload.describe(result)
    assert result.duplicates == 0, workload.describe(result)
    assert result.problems == (), workload.describe(result)


def test_sigkill_at_three_random_points(
    embedded_stack: EmbeddedStack, services: list[ServiceProcess], tmp_path: Path
) -> None:
    env, aws = _setup(embedded_stack, "fkill-")
    rng = random.Random(20261127)
    points = sorted(rng.uniform(1.0, 9.0) for _ in range(3))
    before = workload.callback_calls(embedded_stack)
    replica = _replica(services, env, tmp_path)
    runs = workload.start(aws)
    started = time.monotonic()
    for point in points:
        time.sleep(max(0.0, point - (time.monotonic() - started)))
        replica.kill()
        replica = _replica(services, env, tmp_path)

    result = workload.verify("SIGKILL at 3 random points", aws, runs, faults=len(points))
    result = _count_sends(result, embedded_stack, before)
    _assert_clean(result)


def test_ten_percent_of_aws_calls_throttled(
    embedded_stack: EmbeddedStack, services: list[ServiceProcess], tmp_path: Path
) -> None:
    env, aws = _setup(embedded_stack, "fthrottle-")
    rng = random.Random(7)
    lock = threading.Lock()
    refused = {"all": 0, "answers": 0}

    def throttle(operation: str) -> bool:
        # Step Functions' own SendMessage (the workflow's task) is not ours to retry.
        if operation.rsplit(".", 1)[-1] == "SendMessage":
            return False
        with lock:
            if rng.random() >= 0.10:
                return False
            refused["all"] += 1
            if operation.endswith(("SendTaskSuccess", "SendTaskFailure")):
                refused["answers"] += 1
            return True

    _replica(services, env, tmp_path)
    before = workload.callback_calls(embedded_stack)
    embedded_stack.aws.set_fault(throttle)
    try:
        runs = workload.start(aws)
        result = workload.verify("10% of AWS calls throttled", aws, runs, faults=0)
    finally:
        embedded_stack.aws.set_fault(None)
    result = _count_sends(result, embedded_stack, before + refused["answers"])
    result = _replace_last(result, faults=refused["all"])
    assert refused["all"] > 0
    _assert_clean(result)


def test_export_api_fails_or_hangs_for_a_third_of_calls(
    embedded_stack: EmbeddedStack, services: list[ServiceProcess], tmp_path: Path
) -> None:
    env, aws = _setup(embedded_stack, "fapi-")
    rng = random.Random(3)
    lock = threading.Lock()

    def flaky() -> str | None:
        with lock:
            draw = rng.random()
        if draw < 1 / 6:
            return "500"
        if draw < 1 / 3:
            return "hang"
        return None

    _replica(services, env, tmp_path)
    before = workload.callback_calls(embedded_stack)
    embedded_stack.sandbox.faults_injected = 0
    embedded_stack.sandbox.set_fault(flaky, hang_seconds=3.0)
    runs = workload.start(aws)
    result = workload.verify("Export API 500/hang on 1/3 of calls", aws, runs, faults=0)
    result = _count_sends(result, embedded_stack, before)
    embedded_stack.sandbox.set_fault(None)
    result = _replace_last(result, faults=embedded_stack.sandbox.faults_injected)
    assert result.faults > 0
    _assert_clean(result)


def test_two_replicas_and_one_gets_sigterm_mid_run(
    embedded_stack: EmbeddedStack, services: list[ServiceProcess], tmp_path: Path
) -> None:
    env, aws = _setup(embedded_stack, "fdeploy-")
    first = _replica(services, env, tmp_path)
    _replica(services, env, tmp_path)
    before = workload.callback_calls(embedded_stack)
    runs = workload.start(aws)
    time.sleep(3.0)
    assert first.terminate(timeout=30) == 0

    result = workload.verify("2 replicas, SIGTERM to one mid-run", aws, runs, faults=1)
    result = _count_sends(result, embedded_stack, before)
    _assert_clean(result)


def _count_sends(result: workload.Result, stack: EmbeddedStack, before: int) -> workload.Result:
    """SendTask* calls beyond one per workflow (Step Functions refuses them)."""
    extra = workload.callback_calls(stack) - before - result.jobs
    return _replace_last(result, refused_sends=extra)


def _replace_last(result: workload.Result, **changes: int) -> workload.Result:
    from dataclasses import replace

    updated = replace(result, **changes)
    workload.RESULTS[workload.RESULTS.index(result)] = updated
    return updated
