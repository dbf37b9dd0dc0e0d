"""Jobs in flight (issue 9 asks for 2,000): every waiting workflow kept alive by heartbeats
while its export is held, then answered once when it is released. Reports the heartbeats,
the replicas' AWS calls/s and the items each DynamoDB Query/Scan read while held, and the
answer latency after the release.

    python -m bench.inflight [--jobs 1000] [--replicas 2] [--heartbeat-seconds 120]
                             [--hold-seconds 300] [--start-rate 0]
    python -m bench.inflight --jobs 2000 --start-rate 1.5     # the issue's 2,000

The default is 1,000 started as fast as the intake takes them; 2,000 need their starts
spread (--start-rate) because of the emulator, not the service: moto, the sandbox and this
bench share one CPython process (one GIL, so one core). A job waiting on its export costs
2 requests a minute once its polls have backed off to the 60 s cap (one poll claim that
also takes the heartbeat, one SendTaskHeartbeat), but about 18 in its first 2.5 minutes
(7 backoff polls, each a claim, a schedule write and a heartbeat). 2,000 jobs started
within 5 minutes are all in that phase at once: the emulator saturated, heartbeat rounds
fell behind and workflows timed out (HeartbeatSeconds 120) while the replicas idled.

Each job is a real Step Functions execution of the shipped state machine (HeartbeatSeconds
= --heartbeat-seconds) whose export is `held` by the sandbox: it answers "processing" until
the bench releases it, then one 1 KiB file. The replicas are child processes at the
service's default settings (not the embedded demo's shortened ones), each signing with its
own access key so its calls are told apart. A control execution of the same state machine
that nobody heartbeats shows, in the same run, that a workflow left alone does fail after
HeartbeatSeconds. Exit code 1 when anything is wrong (the problems are listed).

The starts are paced to the service's intake (at most --max-queued export-job messages
waiting): a workflow is heartbeaten only once the service has taken its message in, so a
message that waits longer than HeartbeatSeconds times its workflow out whatever the
heartbeats do; how fast jobs are taken in is bench.intake's subject, not this one's. (An
unpaced burst also made moto's SQS, which scans its whole queue on every send and
receive, the slowest part of the emulator.)"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    add_service_env_option,
    finish,
    kib_to_mib,
    machine,
    proc_cpu_seconds,
    proc_status,
    service_env,
    table,
    utc_now,
)
from tests.support.aws import Aws
from tests.support.service_process import ServiceProcess

LONG_POLL = "AmazonSQS.ReceiveMessage"
HEARTBEAT = "AWSStepFunctions.SendTaskHeartbeat"
SUCCESS = "AWSStepFunctions.SendTaskSuccess"
FAILURE = "AWSStepFunctions.SendTaskFailure"
# The periodic rounds' batch sizes: POLLER_BATCH_SIZE is a setting; the others are fixed
# in src/container.py (heartbeat_round 100, dispatch_round 5) and ReapCommand.limit (100).
FIXED_BATCHES = {"heartbeats": 100, "dispatch": 5, "reaper": 100}
START_THREADS = 4
START_CHUNK = 20
STALLED_SECONDS = 120  # no new job taken in for this long: the rest never will be


def _key(index: int) -> str:
    return f"inflight-replica-{index}"  # the access key replica <index> signs with


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _percentiles(values: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p95": None, "max": None, "n": 0}

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

    return {"p50": at(0.5), "p95": at(0.95), "max": ordered[-1], "n": len(ordered)}


class Replicas:
    """N service replicas, each its own INSTANCE_ID and access key."""

    def __init__(self, env: dict[str, str], log_dir: Path, count: int) -> None:
        self.processes = [
            ServiceProcess(
                {**env, "AWS_ACCESS_KEY_ID": _key(i), "AWS_SECRET_ACCESS_KEY": _key(i)},
                log_dir / f"replica-{i}.log",
                INSTANCE_ID=f"replica-{i}",
            )
            for i in range(count)
        ]

    def start(self) -> None:
        with ThreadPoolExecutor(max_workers=len(self.processes)) as pool:
            list(pool.map(lambda process: process.start(timeout=60), self.processes))

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def cpu_seconds(self) -> list[float]:
        return [proc_cpu_seconds(p.pid) for p in self.processes]

    def rss_mib(self) -> list[float]:
        return [kib_to_mib(proc_status(p.pid)["VmRSS"]) for p in self.processes]


class Emulator:
    """What the emulator counted for the replicas, per phase (reset between phases)."""

    def __init__(self, stack: Any, replicas: int) -> None:
        self._aws, self._keys = stack.aws, [_key(i) for i in range(replicas)]

    def reset(self) -> None:
        self._aws.reset_calls()

    def calls(self) -> list[dict[str, int]]:
        return [self._aws.calls_by(key) for key in self._keys]

    def reads(self) -> dict[str, dict[str, dict[str, int]]]:
        """{"by_operation" | "by_source": {name: figures}}, all replicas together."""
        merged: dict[str, dict[str, dict[str, int]]] = {"by_operation": {}, "by_source": {}}
        for key in self._keys:
            for view, ledger in (
                ("by_operation", self._aws.reads_by(key)),
                ("by_source", self._aws.reads_by_source(key)),
            ):
                for name, figures in ledger.items():
                    into = merged[view].setdefault(name, dict.fromkeys(figures, 0))
                    for figure, value in figures.items():
                        if figure == "max_items":
                            into[figure] = max(into[figure], value)
                        else:
                            into[figure] += value
        return merged


def _items(aws: Aws, job_ids: list[str], attributes: list[str]) -> dict[str, dict[str, Any]]:
    """Some attributes of each job item, 100 a BatchGetItem (the emulator serving the
    replicas is in this process: watching must cost it little)."""
    table_name = aws.env["DYNAMODB_TABLE_NAME"]
    names = {f"#a{i}": name for i, name in enumerate(["jobId", *attributes])}
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 100):
        keys: list[dict[str, Any]] = [{"jobId": {"S": j}} for j in job_ids[start : start + 100]]
        while keys:
            request = {table_name: {"Keys": keys, "ProjectionExpression": ", ".join(names),
                                    "ExpressionAttributeNames": names, "ConsistentRead": True}}  # fmt: skip
            response = aws.ddb.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(table_name, []):
                found[item["jobId"]["S"]] = {
                    name: next(iter(value.values())) for name, value in item.items()
                }
            keys = response.get("UnprocessedKeys", {}).get(table_name, {}).get("Keys", [])
    return found


def _executions(aws: Aws, state_machine: str, status: str) -> dict[str, dict[str, Any]]:
    """Executions of a state machine in `status`, by ARN (1,000 a ListExecutions)."""
    kwargs: dict[str, Any] = {
        "stateMachineArn": state_machine,
        "statusFilter": status,
        "maxResults": 1000,
    }
    found: dict[str, dict[str, Any]] = {}
    while True:
        page = aws.sfn.list_executions(**kwargs)
        found |= {e["executionArn"]: e for e in page["executions"]}
        if not page.get("nextToken"):
            return found
        kwargs["nextToken"] = page["nextToken"]


def _wait(check: Callable[[], bool], timeout: float, every: float) -> bool:
    """True once `check()` is, False when `timeout` passed first."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


class HeartbeatWatch:
    """Samples every job's nextHeartbeatAt (moved by each heartbeat claim to claim time +
    interval) often enough to see each value: the claims each job got, and the longest
    time a job went without one. A claim's time is its round's start, a moment before its
    SendTaskHeartbeat: the calls the emulator counted in the same window may differ by the
    (at most two) rounds that straddle its edges."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.values: dict[str, list[str]] = {}  # distinct values, in the order seen
        self.samples = 0

    def sample(self, items: dict[str, dict[str, Any]]) -> None:
        self.samples += 1
        for job_id, item in items.items():
            value = item.get("nextHeartbeatAt")
            seen = self.values.setdefault(job_id, [])
            if value and not value.startswith("1970") and (not seen or seen[-1] != value):
                seen.append(value)

    def summary(self, job_ids: list[str], began: datetime, ended: datetime) -> dict[str, Any]:
        """Claims made between `began` and `ended` (by claim time: value - interval)."""
        claims, gaps = [], []
        for job_id in job_ids:
            at = [_parse(v) - timedelta(seconds=self.interval) for v in self.values.get(job_id, [])]
            claims.append(sum(1 for moment in at if began <= moment <= ended))
            gaps += [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
            if at:  # the time since the last claim when the hold ended
                gaps.append((ended - at[-1]).total_seconds())
        return {
            "samples": self.samples,
            "claims_per_job": {
                "min": min(claims, default=0),
                "mean": statistics.fmean(claims) if claims else 0.0,
                "max": max(claims, default=0),
            },
            "jobs_without_a_heartbeat": sum(1 for n in claims if n == 0),
            "max_seconds_without_heartbeat": max(gaps, default=None),
        }


def _queued(aws: Aws) -> int:
    """Export-job messages waiting for the service's intake."""
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=aws.env["SQS_EXPORT_JOBS_URL"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _start_executions(
    aws: Aws, jobs: list[tuple[str, str]], tag: str, max_queued: int, rate: float = 0.0
) -> tuple[dict[str, str], float]:
    """jobId -> execution ARN, started from a few threads in chunks, and the seconds spent
    waiting: before each chunk, while more than `max_queued` export-job messages wait for
    the service's intake, the starts wait (paced to the intake, see the module doc); with
    `rate` > 0, at most that many executions a second are started (workflows arriving over
    time rather than all at once)."""

    def start(numbered: tuple[int, tuple[str, str]]) -> tuple[str, str]:
        index, (job_id, export_id) = numbered
        payload = {"jobId": job_id, "exportId": export_id, "userId": "bench"}
        arn = aws.sfn.start_execution(
            stateMachineArn=aws.env["STATE_MACHINE_ARN"],
            name=f"inflight-{index:05d}-{tag}",
            input=json.dumps(payload),
        )["executionArn"]
        return job_id, arn

    arns: dict[str, str] = {}
    waited = 0.0
    numbered = list(enumerate(jobs))
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=START_THREADS) as pool:
        for first in range(0, len(numbered), START_CHUNK):
            if rate > 0 and (ahead := began + first / rate - time.monotonic()) > 0:
                time.sleep(ahead)
            while _queued(aws) > max_queued:
                time.sleep(0.5)
                waited += 0.5
            arns.update(pool.map(start, numbered[first : first + START_CHUNK]))
    return arns, waited


def _largest_read(reads: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """The most items one Query/Scan call read, and where."""
    by_source = reads["by_source"].items()
    source, figures = max(by_source, key=lambda i: i[1]["max_items"], default=("-", {}))
    return {"items": figures.get("max_items", 0), "source": source}


def _calls_per_s(calls: list[dict[str, int]], seconds: float) -> dict[str, Any]:
    total: dict[str, int] = {}
    for replica in calls:
        for operation, n in replica.items():
            total[operation] = total.get(operation, 0) + n
    besides = [sum(n for op, n in c.items() if op != LONG_POLL) / seconds for c in calls]
    return {
        "by_operation": {op: n / seconds for op, n in sorted(total.items(), key=lambda i: -i[1])},
        "all": sum(total.values()) / seconds,
        "besides_long_polls": sum(besides),
        "per_replica_besides_long_polls": besides,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from src.infrastructure.config.settings import Settings
    from src.local.stack import EMBEDDED_DEFAULTS, EmbeddedStack

    defaults = Settings.model_fields
    interval = float(
        args.overrides.get(
            "HEARTBEAT_INTERVAL_SECONDS", defaults["heartbeat_interval_seconds"].default
        )
    )
    poller_batch = int(
        args.overrides.get("POLLER_BATCH_SIZE", defaults["poller_batch_size"].default)
    )
    batches = {"poller": poller_batch, **FIXED_BATCHES}
    hold = args.hold_seconds if args.hold_seconds is not None else 2.5 * args.heartbeat_seconds
    task_timeout = int(3 * args.timeout + hold)  # never the reason an execution ends here
    problems: list[str] = []

    stack = EmbeddedStack(
        name_prefix="bench-if-",
        task_timeout_seconds=task_timeout,
        heartbeat_seconds=args.heartbeat_seconds,
    ).start()
    control = stack.provision(
        "bench-if-ctl-", task_timeout_seconds=task_timeout, heartbeat_seconds=args.heartbeat_seconds
    )  # its queue has no consumer: nobody heartbeats its execution
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench-inflight-"))
    # The service's own defaults, not the embedded demo's shortened ones.
    env = {k: v for k, v in stack.env().items() if k not in EMBEDDED_DEFAULTS}
    env |= args.overrides
    replicas = Replicas(env, log_dir, args.replicas)
    emulator = Emulator(stack, args.replicas)
    peak = {"threads": threading.active_count(), "rss_kib": proc_status()["VmRSS"]}

    def note_peak() -> None:
        peak["threads"] = max(peak["threads"], threading.active_count())
        peak["rss_kib"] = max(peak["rss_kib"], proc_status()["VmRSS"])

    try:
        aws = Aws(stack.env())
        replicas.start()
        time.sleep(2)
        emulator.reset()

        # -- intake: N executions, each job held at its export -----------------------------
        tag = uuid.uuid4().hex[:6]
        jobs = [
            (str(uuid.uuid4()), f"if{tag}{i:05d}-held-files-1-size-1024") for i in range(args.jobs)
        ]
        job_ids = [job_id for job_id, _ in jobs]
        began = time.monotonic()
        arns, paced = _start_executions(aws, jobs, tag, args.max_queued, args.start_rate)
        started = time.monotonic() - began
        note_peak()

        every = max(1.0, args.jobs / 400)  # between looks at every job (20 calls at 2,000)

        progress = {"jobs": 0.0, "at": time.monotonic()}

        def taken_in() -> bool:  # every job created (in flight, or ended already: wrong)
            note_peak()
            jobs = len(_items(aws, job_ids, ["status"]))
            if jobs > progress["jobs"]:
                progress.update(jobs=jobs, at=time.monotonic())
            return jobs == len(job_ids) or time.monotonic() - progress["at"] > STALLED_SECONDS

        if not _wait(taken_in, args.timeout, every):
            raise SystemExit(f"{args.jobs} jobs not taken in within {args.timeout:.0f}s")
        found = _items(aws, job_ids, ["status"])
        if len(found) < len(job_ids):  # the rest of the run goes on with those taken in
            problems.append(f"{len(job_ids) - len(found)} jobs never taken in (their messages?)")
            job_ids = [job_id for job_id in job_ids if job_id in found]
            arns = {job_id: arns[job_id] for job_id in job_ids}
        statuses = [i["status"] for i in found.values()]
        ended_early = sum(s not in ("PROCESSING", "POLLING") for s in statuses)
        if ended_early:
            example = next(s for s in statuses if s not in ("PROCESSING", "POLLING"))
            problems.append(f"{ended_early} jobs ended before the hold, e.g. {example}")
        intake = {
            "seconds_to_start": started,
            "starts_per_s": args.jobs / started,
            "seconds_paced": paced,
            "seconds_to_all_in_flight": time.monotonic() - began,
            "jobs_ended_before_the_hold": ended_early,
            "reads": emulator.reads(),
        }

        # -- hold: nothing but heartbeats (and polls of the held exports) ------------------
        watch = HeartbeatWatch(interval)
        control_aws = Aws({**stack.env(control), "STATE_MACHINE_ARN": control.state_machine_arn})
        control_arn = control_aws.start_execution({"jobId": str(uuid.uuid4()),
                                                   "exportId": "control", "userId": "bench"})  # fmt: skip
        every = max(0.2, min(15.0, interval / 3))
        emulator.reset()
        cpu_before, emulator_cpu_before = replicas.cpu_seconds(), proc_cpu_seconds()
        hold_began, hold_began_at = time.monotonic(), datetime.now(UTC)
        watch.sample(_items(aws, job_ids, ["nextHeartbeatAt"]))
        while (left := hold - (time.monotonic() - hold_began)) > 0:
            time.sleep(min(every, left))
            watch.sample(_items(aws, job_ids, ["nextHeartbeatAt"]))
            note_peak()
        held_seconds = time.monotonic() - hold_began
        hold_ended_at = datetime.now(UTC)
        hold_calls, hold_reads = emulator.calls(), emulator.reads()
        replica_cpu = [b - a for a, b in zip(cpu_before, replicas.cpu_seconds(), strict=True)]
        emulator_cpu = proc_cpu_seconds() - emulator_cpu_before
        replica_rss = replicas.rss_mib()
        running = _executions(aws, aws.env["STATE_MACHINE_ARN"], "RUNNING")
        not_running = [job_id for job_id, arn in arns.items() if arn not in running]
        if not_running:
            problems.append(f"{len(not_running)} executions not RUNNING after the hold")
        heartbeats = watch.summary(job_ids, hold_began_at, hold_ended_at)
        heartbeats["send_task_heartbeat_calls"] = sum(c.get(HEARTBEAT, 0) for c in hold_calls)
        if hold >= 1.5 * interval and heartbeats["jobs_without_a_heartbeat"]:
            problems.append(f"{heartbeats['jobs_without_a_heartbeat']} jobs got no heartbeat")
        control_end = control_aws.wait_execution(control_arn, timeout=args.heartbeat_seconds + 60)
        control_seconds = (control_end["stopDate"] - control_end["startDate"]).total_seconds()
        control_error = (control_end.get("cause") or "").split(":")[0]
        if control_end["status"] != "FAILED" or "Timeout" not in control_error:
            problems.append(f"control execution ended {control_end['status']} ({control_error})")

        # -- release: every export ready, every workflow answered -------------------------
        emulator.reset()
        released_at = datetime.now(UTC)
        stack.sandbox.release_all()

        def all_recorded() -> bool:  # recorded on the job just after Step Functions took it
            note_peak()
            items = _items(aws, job_ids, ["callbackStatus"]).values()
            return all(i.get("callbackStatus") in ("DELIVERED", "FAILED") for i in items)

        if not _wait(all_recorded, args.timeout, every):
            problems.append(f"not every answer recorded within {args.timeout:.0f}s of the release")
        ended: dict[str, dict[str, Any]] = {}

        def all_ended() -> bool:  # a few ListExecutions: only once the answers are in
            for status in ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"):
                ended.update(_executions(aws, aws.env["STATE_MACHINE_ARN"], status))
            return all(arn in ended for arn in arns.values())

        if not _wait(all_ended, 60, 2):
            problems.append("not every execution ended within 60 s of its answer")
        outcomes = [ended.get(arn, {}).get("status", "RUNNING") for arn in arns.values()]
        if any(status != "SUCCEEDED" for status in outcomes):
            others = sorted({s for s in outcomes if s != "SUCCEEDED"})
            problems.append(
                f"{sum(s != 'SUCCEEDED' for s in outcomes)} executions did not succeed ({others})"
            )
        finals = _items(
            aws, job_ids,
            ["status", "totalTasks", "completedTasks", "failedTasks", "completedAt",
             "callbackStatus", "callbackAt", "callbackAttempts"],
        )  # fmt: skip
        finish_calls, finish_reads = emulator.calls(), emulator.reads()
        successes = sum(c.get(SUCCESS, 0) for c in finish_calls)
        failures = sum(c.get(FAILURE, 0) for c in finish_calls)
        if (successes, failures) != (len(job_ids), 0):
            problems.append(f"{successes} SendTaskSuccess and {failures} SendTaskFailure calls")
        shape = ("status", "totalTasks", "completedTasks", "failedTasks", "callbackStatus")
        expected = ("COMPLETED", "1", "1", "0", "DELIVERED")
        wrong = [j for j in job_ids if tuple(finals.get(j, {}).get(a) for a in shape) != expected]
        if wrong:
            problems.append(f"{len(wrong)} jobs not COMPLETED 1/1/0 and DELIVERED, e.g. {wrong[0]}")
        sample = [arns[j] for j in job_ids[:: max(1, len(job_ids) // 10)]]
        for arn in sample:  # a few outputs, in full
            output = json.loads(aws.sfn.describe_execution(executionArn=arn).get("output") or "{}")
            job_id = next(j for j, a in arns.items() if a == arn)
            if (output.get("jobId"), output.get("status")) != (job_id, "COMPLETED"):
                problems.append(f"execution output {output}")
    finally:
        replicas.stop()
        stack.stop()

    def seconds_after(start: datetime, moments: Iterable[datetime]) -> list[float]:
        return [(m - start).total_seconds() for m in moments]

    done = [finals[j] for j in job_ids if finals.get(j, {}).get("callbackAt")]
    succeeded = [e for a in arns.values() if (e := ended.get(a, {})).get("status") == "SUCCEEDED"]
    read_target = max(batches.values())
    largest_read = _largest_read(hold_reads)
    intake["largest_read"] = _largest_read(intake["reads"])
    return {
        "name": "inflight",
        "at": utc_now(),
        "machine": machine(),
        "workload": {
            "jobs": args.jobs,
            "replicas": args.replicas,
            "heartbeat_seconds": args.heartbeat_seconds,
            "heartbeat_interval_seconds": interval,
            "hold_seconds": hold,
            "files_per_job": 1,
            "start_rate": args.start_rate,
        },
        "service_env_overrides": args.overrides,
        "batch_sizes": batches,
        "correct": not problems,
        "problems": problems[:20],
        "intake": intake,
        "hold": {
            "seconds": held_seconds,
            "executions_running_after": len(job_ids) - len(not_running),
            "heartbeats": heartbeats,
            "calls_per_s": _calls_per_s(hold_calls, held_seconds),
            "reads": hold_reads,
            "largest_read": largest_read,
            "reads_within_batch": largest_read["items"] <= read_target,
            "replica_cpu_percent": [100 * c / held_seconds for c in replica_cpu],
            "replica_rss_mib": replica_rss,
            "emulator_cpu_percent": 100 * emulator_cpu / held_seconds,
        },
        "control": {
            "status": control_end["status"],
            "error": control_error,
            "seconds_to_end": control_seconds,
        },
        "release": {
            "send_task_success": successes,
            "send_task_failure": failures,
            "seconds_release_to_succeeded": _percentiles(
                seconds_after(released_at, (e["stopDate"] for e in succeeded))
            ),
            "seconds_release_to_job_end": _percentiles(
                seconds_after(released_at, (_parse(i["completedAt"]) for i in done))
            ),
            "answer_latency_ms": _percentiles(
                1000 * (_parse(i["callbackAt"]) - _parse(i["completedAt"])).total_seconds()
                for i in done
            ),
            "reads": finish_reads,
            "largest_read": _largest_read(finish_reads),
        },
        "emulator_process": {
            "peak_threads": peak["threads"],
            "peak_rss_mib": kib_to_mib(peak["rss_kib"]),
        },
        "log_dir": str(log_dir),
    }


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The human table, row by row (the README generator uses these)."""
    w, hold, release = result["workload"], result["hold"], result["release"]
    beats, calls = hold["heartbeats"], hold["calls_per_s"]
    claims = beats["claims_per_job"]
    latency, to_succeeded = release["answer_latency_ms"], release["seconds_release_to_succeeded"]
    to_end = release["seconds_release_to_job_end"]
    control = result["control"]
    batches = ", ".join(f"{k} {v}" for k, v in result["batch_sizes"].items())
    table_rows = [
        (
            "workload",
            "{jobs} jobs in flight, {replicas} replicas, HeartbeatSeconds {heartbeat_seconds}, "
            "heartbeat every {heartbeat_interval_seconds:g} s, held {hold_seconds:g} s".format(**w),
        ),
        ("correct", str(result["correct"])),
        (
            "executions started/s (paced to the intake"
            + (f", at most {w['start_rate']:g}/s)" if w.get("start_rate") else ")"),
            f"{_fmt(result['intake']['starts_per_s'])} "
            f"(waited {result['intake']['seconds_paced']:.0f} s)",
        ),
        ("executions RUNNING after the hold", f"{hold['executions_running_after']} of {w['jobs']}"),
        (
            "control (no heartbeats) ended",
            f"{control['status']} {control['error']} after {control['seconds_to_end']:.0f} s",
        ),
        ("SendTaskHeartbeat calls during the hold", str(beats["send_task_heartbeat_calls"])),
        (
            "heartbeat claims per job (min/mean/max)",
            f"{claims['min']} / {claims['mean']:.2f} / {claims['max']}",
        ),
        ("jobs without a heartbeat in the hold", str(beats["jobs_without_a_heartbeat"])),
        ("longest time without a heartbeat", _fmt(beats["max_seconds_without_heartbeat"], " s")),
        ("replicas' calls/s (all)", _fmt(calls["all"], "", 2)),
        ("replicas' calls/s besides long polls", _fmt(calls["besides_long_polls"], "", 2)),
    ]
    table_rows += [(f"  {op}", f"{n:.2f}/s") for op, n in calls["by_operation"].items()]
    for source, figures in hold["reads"]["by_source"].items():
        mean = figures["items"] / figures["calls"] if figures["calls"] else 0
        table_rows.append(
            (f"  items read per call: {source}", f"max {figures['max_items']}, mean {mean:.1f}")
        )
    table_rows += [
        (
            f"largest read per call <= batch ({batches})",
            f"{hold['largest_read']['items']}: {'met' if hold['reads_within_batch'] else 'NOT met'}",
        ),
        *(
            (f"largest read per call, {phase}", "{items} ({source})".format(**figures))
            for phase, figures in (
                ("intake", result["intake"]["largest_read"]),
                ("after the release", release["largest_read"]),
            )
        ),
        (
            "replica CPU % / RSS MiB during the hold",
            ", ".join(
                f"{c:.1f} / {r:.0f}"
                for c, r in zip(hold["replica_cpu_percent"], hold["replica_rss_mib"], strict=True)
            ),
        ),
        ("emulator CPU % during the hold", _fmt(hold["emulator_cpu_percent"])),
        (
            "emulator process peak threads / RSS",
            f"{result['emulator_process']['peak_threads']} / "
            f"{result['emulator_process']['peak_rss_mib']:.0f} MiB",
        ),
        (
            "SendTaskSuccess / SendTaskFailure",
            f"{release['send_task_success']} / {release['send_task_failure']}",
        ),
        (
            "release -> job end p50/p95",
            f"{_fmt(to_end['p50'], ' s')} / {_fmt(to_end['p95'], ' s')}",
        ),
        (
            "answer latency (job end -> answer taken) p50/p95",
            f"{_fmt(latency['p50'], ' ms', 0)} / {_fmt(latency['p95'], ' ms', 0)}",
        ),
        (
            "release -> execution SUCCEEDED p50/p95",
            f"{_fmt(to_succeeded['p50'], ' s')} / {_fmt(to_succeeded['p95'], ' s')}",
        ),
    ]
    return table_rows


def report(result: dict[str, Any]) -> str:
    return table(rows(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="see the module doc for 2,000")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--heartbeat-seconds", type=int, default=120)
    parser.add_argument(
        "--hold-seconds", type=float, default=None, help="default: 2.5 x --heartbeat-seconds"
    )
    parser.add_argument(
        "--max-queued", type=int, default=50,
        help="starts wait while more export-job messages than this wait for intake",
    )  # fmt: skip
    parser.add_argument(
        "--start-rate", type=float, default=0.0,
        help="executions started per second at most (0: as fast as the intake takes them)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800, help="for each wait")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir")
    add_service_env_option(parser)
    args = parser.parse_args(argv)
    args.overrides = service_env(parser, args.service_env)
    return finish(run(args), args.results_dir, report)


if __name__ == "__main__":
    raise SystemExit(main())
