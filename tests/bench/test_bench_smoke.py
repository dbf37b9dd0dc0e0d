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
        "--replicas", "2", "--metadata-kb", "2",
    )  # fmt: skip
    assert result["correct"] is True, result["problems"]
    service = result["service"]
    s3_puts = service["calls_by_operation"]["S3"]["PUT"]
    assert s3_puts == 6  # one PutObject per file, by either replica; not the bench's own
    assert service["aws_calls_per_file"] == service["aws_calls"] / 6 > 1
    assert sorted(service["cpu_seconds_by_replica"]) == ["replica-0", "replica-1"]
    assert result["idle"]["calls_per_s_per_replica"] == result["idle"]["calls_per_s"] / 2
    assert result["baseline"]["files"] == 6
    # DynamoDB writes as billed: each file's task record and count (a transaction, twice
    # the units); the job item carries the 2 KiB of metadata, so each of its writes is 3+
    # units; the baseline writes one small record per file.
    writes = service["dynamodb_writes"]
    assert writes["per_file"]["tasks"]["write_units"] >= 4
    assert writes["per_job"]["job"]["bytes"] > 2 * 2048
    assert result["baseline"]["dynamodb_writes"]["write_units_per_file"] == 1
    # What each operation cost the emulator, the service's and the baseline's apart.
    emulator = result["emulator_cpu_by_operation"]
    assert emulator["service"]["S3.PUT"]["ms_per_call"] > 0
    assert "DynamoDB_20120810.TransactWriteItems" in emulator["service"]
    assert "DynamoDB_20120810.TransactWriteItems" not in emulator["baseline"]
    assert emulator["baseline"]["DynamoDB_20120810.PutItem"]["ms_per_unit"] > 0
    assert "AWS calls per file" in printed
    assert "emulator, S3.PUT" in printed
    assert "DynamoDB written per file: tasks table" in printed


def test_scaling_runs_small_files_once_per_replica_count(tmp_path: Path) -> None:
    result, printed = run_bench(
        "scaling", tmp_path,
        "--replicas", "1", "2", "--jobs", "2", "--files", "2", "--size-kb", "4",
        "--idle-seconds", "1", "--timeout", "240",
    )  # fmt: skip
    assert result["correct"] is True, result["problems"]
    runs = result["runs"]
    assert [r["replicas"] for r in runs] == [1, 2]
    assert runs[0]["speedup"] == 1
    assert all(r["files_per_s"] > 0 and r["aws_calls_per_file"] > 1 for r in runs)
    assert len(runs[1]["cpu_seconds_by_replica"]) == 2
    assert "files/s (speed-up)" in printed


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
    # A put per job, a receive and a delete per 10; its own sends of the messages are left
    # out, as the bench's are for the service.
    assert baseline["aws_calls_per_job"] >= 1.2
    emulator = result["emulator_cpu_by_operation"]
    assert "AmazonSQS.SendMessageBatch" not in emulator["baseline"]
    assert emulator["service"]["DynamoDB_20120810.PutItem"]["calls"] >= 20
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
        # a chunk the kill left unsent is sent by the reaper after seconds of quiet
        "--service-env", "DOWNLOAD_STALL_SECONDS=5",
        "--service-env", "REAPER_INTERVAL_SECONDS=1",
    )  # fmt: skip
    assert result["correct"] is True, result["problems"]
    assert [k["during"] for k in result["kills"]] == ["dispatch", "downloads"]
    # no work item sent twice: beyond each file once, only the killed downloader's copies
    assert 200 <= result["files_fetched"] <= 200 + 32
    assert result["redispatched"] in (0, 1)
    assert result["aws_calls_per_file"] > 2
    assert "files/s" in printed


def test_inflight_keeps_every_waiting_workflow_alive_then_answers_each_once(
    tmp_path: Path,
) -> None:
    # HeartbeatSeconds 4 and a heartbeat every second, held 10 s: a workflow left alone
    # fails after 4 s (the control), each of these needs several heartbeats to live.
    result, printed = run_bench(
        "inflight", tmp_path, "--jobs", "10", "--replicas", "2", "--heartbeat-seconds", "4",
        "--hold-seconds", "10", "--timeout", "120",
        "--service-env", "HEARTBEAT_INTERVAL_SECONDS=1",
        "--service-env", "POLLING_INTERVAL_MS=500",
        "--service-env", "POLLING_MAX_INTERVAL_MS=1000",
        "--service-env", "POLLER_TICK_MS=200",
        "--service-env", "SQS_WAIT_TIME_SECONDS=1",
    )  # fmt: skip
    assert result["correct"] is True, result["problems"]
    hold, release = result["hold"], result["release"]
    assert hold["executions_running_after"] == 10
    assert result["control"]["status"] == "FAILED"  # no heartbeats: HeartbeatSeconds ends it
    beats = hold["heartbeats"]
    assert beats["jobs_without_a_heartbeat"] == 0
    assert beats["claims_per_job"]["min"] >= 2
    assert beats["send_task_heartbeat_calls"] >= 20
    assert beats["max_seconds_without_heartbeat"] < 4
    assert hold["calls_per_s"]["by_operation"]["AWSStepFunctions.SendTaskHeartbeat"] > 0
    assert len(hold["calls_per_s"]["per_replica_besides_long_polls"]) == 2
    reads = hold["reads"]["by_operation"]["Query"]
    assert 0 < reads["max_items"] <= 10 and reads["calls"] > 0
    assert (release["send_task_success"], release["send_task_failure"]) == (10, 0)
    for figure in ("answer_latency_ms", "seconds_release_to_succeeded"):
        assert release[figure]["n"] == 10 and release[figure]["p95"] is not None
    assert "answer latency" in printed
    from bench.inflight import report, rows

    assert report(result) and all(isinstance(v, str) for _, v in rows(result))


def test_the_report_regenerates_the_readme_block_with_a_table_and_chart_per_result(
    tmp_path: Path,
) -> None:
    import shutil

    results = tmp_path / "results"
    shutil.copytree(ROOT / "bench" / "results", results, ignore=shutil.ignore_patterns("*.tmp"))
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "bench" / "README.md", readme)
    before = readme.read_text()
    completed = subprocess.run(
        [sys.executable, "-m", "bench.report", "--results-dir", str(results), "--readme", str(readme)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    text = readme.read_text()
    stems = sorted(p.stem for p in results.glob("*.json"))
    assert stems
    for stem in stems:
        assert f"### {stem}\n" in text and f"`bench/results/{stem}.json`" in text
        assert (tmp_path / "charts" / f"{stem}.png").stat().st_size > 5_000
    # only the generated block changed: the hand-written text around it is kept
    head = before.split("<!-- generated:begin -->")[0]
    tail = before.split("<!-- generated:end -->")[1]
    assert text.startswith(head) and text.endswith(tail)


def test_stream_copies_one_file_through_the_service_and_both_raw_baselines(
    tmp_path: Path,
) -> None:
    # stream_1gib (and stream_128mib, the same module) at 16 MiB: two multipart parts.
    output = tmp_path / "stream.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.stream_1gib", "--size-mb", "16", "--runs", "1",
         "--timeout", "240", "--output", str(output), "--log-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(output.read_text())
    assert "error" not in result
    (run,) = result["runs"]
    # The bench checks the copy itself (task record and object sha256): it raised otherwise.
    assert run["service"]["peak_rss_mib"] > 0
    summary = result["summary"]
    assert summary["service_mb_per_s"] > 0 and summary["raw_s3_mb_per_s"] > 0
    assert summary["ratio_service_to_min_raw"] > 0
    assert summary["rss_pass"] is True
    assert "peak RSS < " in completed.stdout
