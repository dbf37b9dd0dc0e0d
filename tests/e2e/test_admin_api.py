"""The admin API over real HTTP, on the real service (a child process) and the embedded
stack: every route, with and without keys, and its errors (401, 403, 404, 409, 422)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.local.stack import EmbeddedStack
from tests.support.admin_api import AdminApi
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

FULL, READ_ONLY = "full-key-for-tests", "read-only-key-for-tests"
RAW_TOKEN = "AAAAKgAAAAIAAAAAAAAAAQ" + "x" * 60 + "ZZZZ"
FAST = {
    "POLLING_INTERVAL_MS": "300",
    "POLLING_MAX_INTERVAL_MS": "500",
    "POLLER_TICK_MS": "200",
    "SQS_WAIT_TIME_SECONDS": "1",
    "ADMIN_API_KEYS": FULL,
    "ADMIN_READONLY_KEYS": READ_ONLY,
    # No background answer retries: the resend test sends the answer itself.
    "REAPER_INTERVAL_SECONDS": "0",
}


@pytest.fixture(scope="module")
def env(embedded_stack: EmbeddedStack) -> dict[str, str]:
    return {**embedded_stack.env(embedded_stack.provision("adm-")), **FAST}


@pytest.fixture(scope="module")
def service(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    process = ServiceProcess(env, tmp_path_factory.mktemp("adm") / "service.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(service: ServiceProcess) -> AdminApi:
    return AdminApi(f"http://127.0.0.1:{service.port}", FULL)


@pytest.fixture(scope="module")
def aws(env: dict[str, str]) -> Aws:
    return Aws(env)


def a_job(export_id: str, **extra: object) -> dict[str, object]:
    return {"jobId": str(uuid.uuid4()), "exportId": export_id, "userId": "ops", **extra}


def ended(api: AdminApi, job_id: str) -> dict[str, object]:
    def check() -> dict[str, object] | None:
        reply = api.get(f"/jobs/{job_id}")
        return reply.body if reply.status == 200 and reply.body["completedAt"] else None

    return wait_for(check, 60, f"job {job_id} to end")


def test_health_needs_no_key_and_ready_names_every_dependency(api: AdminApi) -> None:
    anonymous = api.as_key(None)
    assert anonymous.get("/health/live").body == {"status": "ok"}
    ready = anonymous.get("/health/ready")
    assert ready.status == 200, ready.text
    assert ready.body["status"] == "ready"
    checks = ready.body["checks"]
    assert len(checks) == 5 and set(checks.values()) == {"ok"}
    assert any(name.startswith("bucket ") for name in checks)


def test_everything_else_needs_a_key(api: AdminApi) -> None:
    for path in ("/jobs", f"/jobs/{uuid.uuid4()}", "/metrics"):
        for who in (api.as_key(None), api.as_key("wrong-key")):
            reply = who.get(path)
            assert reply.status == 401, (path, reply.text)
            assert reply.body["code"] == "unauthorized"
            assert reply.headers.get("www-authenticate") == "Bearer"
    bearer = api.as_key(None).get("/jobs", headers={"Authorization": f"Bearer {READ_ONLY}"})
    assert bearer.status == 200


def test_a_read_only_key_reads_but_cannot_write(api: AdminApi) -> None:
    reader = api.as_key(READ_ONLY)
    assert reader.get("/jobs").status == 200
    assert reader.get("/metrics").status == 200
    reply = reader.post("/jobs", a_job("files-1"))
    assert reply.status == 403 and reply.body["code"] == "forbidden"
    assert reader.post(f"/jobs/{uuid.uuid4()}/cancel").status == 403


def test_start_a_job_then_see_it_with_its_files(api: AdminApi) -> None:
    body = a_job("files-3-size-2048", metadata={"team": "ops"})
    created = api.post("/jobs", body)
    assert created.status == 202, created.text
    location = f"/jobs/{body['jobId']}"
    assert created.headers["location"] == location == created.body["location"]

    job = ended(api, str(body["jobId"]))
    assert job["status"] == "COMPLETED"
    assert (job["totalTasks"], job["completedTasks"], job["failedTasks"]) == (3, 3, 0)
    assert job["metadata"] == {"team": "ops"}
    assert job["callback"]["status"] == "NOT_REQUIRED" and job["hasTaskToken"] is False
    files = job["files"]
    assert [f["status"] for f in files["items"]] == ["COMPLETED"] * 3
    assert all(f["size"] == 2048 and len(f["sha256"]) == 64 for f in files["items"])
    assert files["cursor"] is None and files["unrecorded"] == 0

    paged = api.get(f"{location}?filesLimit=2")
    assert len(paged.body["files"]["items"]) == 2 and paged.body["files"]["unrecorded"] is None
    rest = api.get(f"{location}?filesLimit=2&filesCursor={paged.body['files']['cursor']}")
    assert [f["index"] for f in rest.body["files"]["items"]] == [2]


def test_an_existing_job_id_is_a_conflict_with_its_location(api: AdminApi) -> None:
    body = a_job("files-1")
    assert api.post("/jobs", body).status == 202
    again = api.post("/jobs", {**body, "exportId": "files-2"})
    assert again.status == 409
    assert again.body["code"] == "conflict"
    assert again.body["location"] == f"/jobs/{body['jobId']}"


def test_invalid_bodies_and_ids_are_422_without_echoing_the_input(api: AdminApi) -> None:
    reply = api.post("/jobs", {"jobId": "not-a-uuid", "exportId": "", "taskToken": RAW_TOKEN})
    assert reply.status == 422
    assert reply.body["code"] == "validation_error"
    assert "jobId" in reply.body["message"]
    assert RAW_TOKEN not in reply.text
    assert api.post("/jobs", "this is not json").status == 422
    assert api.get("/jobs/not-a-uuid").status == 422
    assert api.get("/jobs?status=NOPE").status == 422
    assert api.get("/jobs?limit=0").status == 422


def test_unknown_jobs_are_404_and_bad_cursors_400(api: AdminApi) -> None:
    missing = api.get(f"/jobs/{uuid.uuid4()}")
    assert missing.status == 404 and missing.body["code"] == "not_found"
    assert api.post(f"/jobs/{uuid.uuid4()}/cancel").status == 404
    bad = api.get("/jobs?cursor=garbage")
    assert bad.status == 400 and bad.body["code"] == "bad_cursor"


def test_jobs_are_listed_newest_first_by_status_and_user_in_pages(api: AdminApi) -> None:
    user = f"lister-{uuid.uuid4().hex[:6]}"
    ids = []
    for _ in range(3):
        body = {**a_job("files-1"), "userId": user}
        assert api.post("/jobs", body).status == 202
        ids.append(body["jobId"])
    for job_id in ids:
        ended(api, str(job_id))

    first = api.get(f"/jobs?userId={user}&limit=2")
    assert [j["jobId"] for j in first.body["items"]] == ids[::-1][:2]
    second = api.get(f"/jobs?userId={user}&limit=2&cursor={first.body['cursor']}")
    assert [j["jobId"] for j in second.body["items"]] == ids[:1]
    assert second.body["cursor"] is None

    completed = api.get(f"/jobs?status=COMPLETED&userId={user}")
    assert {j["jobId"] for j in completed.body["items"]} == set(ids)
    assert api.get(f"/jobs?status=FAILED&userId={user}").body["items"] == []
    everything = api.get("/jobs?limit=200").body["items"]
    assert set(ids) <= {j["jobId"] for j in everything}


def test_cancel_an_unfinished_job_then_it_is_a_conflict(api: AdminApi, aws: Aws) -> None:
    body = a_job(f"t{uuid.uuid4().hex[:8]}-neverready", taskToken=RAW_TOKEN)
    assert api.post("/jobs", body).status == 202
    job_id = str(body["jobId"])
    wait_for(lambda: (aws.job(job_id) or {}).get("status") == "POLLING" or None, 30)

    shown = api.get(f"/jobs/{job_id}").body
    assert shown["hasTaskToken"] is True
    [waiting] = shown["waitingWorkflows"]
    assert waiting["token"] != RAW_TOKEN and waiting["token"].startswith("AAAAKgAA")
    assert RAW_TOKEN not in api.get(f"/jobs/{job_id}").text

    cancelled = api.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status == 200, cancelled.text
    assert cancelled.body["status"] == "CANCELLED"
    assert cancelled.body["error"]["message"] == "Cancelled by an operator"
    again = api.post(f"/jobs/{job_id}/cancel")
    assert again.status == 409 and "CANCELLED" in again.body["message"]


def test_ready_is_503_naming_the_dependency_that_fails(env: dict[str, str], tmp_path: Path) -> None:
    broken = ServiceProcess(env, tmp_path / "s.log", S3_BUCKET_NAME="no-such-bucket-here")
    broken.start(ready_path="/health/live")
    try:
        reply = AdminApi(f"http://127.0.0.1:{broken.port}").get("/health/ready")
    finally:
        broken.stop()
    assert reply.status == 503
    assert reply.body["failed"] == ["bucket no-such-bucket-here"]
    assert reply.body["checks"]["bucket no-such-bucket-here"] == "NoSuchBucket"


def test_retry_copies_the_failed_files_again_and_the_job_completes(api: AdminApi) -> None:
    # the last two files answer 404 once: failed in the first run, copied on the retry
    body = a_job(f"t{uuid.uuid4().hex[:6]}-files-4-fail-2-failfirst-1")
    assert api.post("/jobs", body).status == 202
    job_id = str(body["jobId"])
    first = ended(api, job_id)
    assert (first["completedTasks"], first["failedTasks"]) == (2, 2)
    assert [f["status"] for f in first["files"]["items"]] == ["COMPLETED"] * 2 + ["FAILED"] * 2

    reply = api.post(f"/jobs/{job_id}/retry")
    assert reply.status == 202, reply.text
    assert reply.body == {"jobId": job_id, "status": "DOWNLOADING", "retriedFiles": 2}

    def redone() -> dict[str, object] | None:
        job = api.get(f"/jobs/{job_id}").body
        return job if job["status"] == "COMPLETED" and job["completedTasks"] == 4 else None

    job = wait_for(redone, 60, "the retried files")
    assert job["failedTasks"] == 0
    assert [f["status"] for f in job["files"]["items"]] == ["COMPLETED"] * 4
    again = api.post(f"/jobs/{job_id}/retry")
    assert again.status == 409 and "no failed file" in again.body["message"]


def test_retry_and_resend_are_refused_once_the_workflow_has_its_answer(
    api: AdminApi, aws: Aws
) -> None:
    job_id = str(uuid.uuid4())
    arn = aws.start_execution({"jobId": job_id, "exportId": "files-3-fail-1", "userId": "u"})
    assert aws.wait_execution(arn)["status"] == "FAILED"
    aws.wait_answered(job_id)

    retry = api.post(f"/jobs/{job_id}/retry")
    assert retry.status == 409 and "taken its answer" in retry.body["message"]
    resend = api.post(f"/jobs/{job_id}/callback")
    assert resend.status == 409 and "delivered already" in resend.body["message"]
    running = api.post(f"/jobs/{uuid.uuid4()}/callback")
    assert running.status == 404


def test_an_answer_that_could_not_be_delivered_is_resent(
    api: AdminApi, aws: Aws, embedded_stack: EmbeddedStack
) -> None:
    embedded_stack.aws.set_fault(lambda operation: operation == "SendTaskSuccess")
    try:
        job_id = str(uuid.uuid4())
        arn = aws.start_execution({"jobId": job_id, "exportId": "files-1", "userId": "u"})
        job = wait_for(
            lambda: (j := api.get(f"/jobs/{job_id}").body).get("callback", {}).get("status")
            == "RETRYING" and j, 90, "the answer to be given up for now")  # fmt: skip
        assert job["callback"]["lastError"] == "ThrottlingException"
    finally:
        embedded_stack.aws.set_fault(None)

    reply = api.post(f"/jobs/{job_id}/callback")
    assert reply.status == 200, reply.text
    assert reply.body["callback"]["status"] == "DELIVERED"
    assert aws.wait_execution(arn)["status"] == "SUCCEEDED"


def test_stats_count_jobs_files_and_answers(api: AdminApi) -> None:
    reply = api.get("/stats")
    assert reply.status == 200, reply.text
    stats = reply.body
    assert set(stats["jobsByStatus"]) == {
        "PENDING", "PROCESSING", "POLLING", "DOWNLOADING", "COMPLETED", "FAILED", "CANCELLED"
    }  # fmt: skip
    assert stats["jobsByStatus"]["COMPLETED"] >= 3 and stats["complete"] is True
    assert stats["jobsRead"] == sum(stats["jobsByStatus"].values())
    assert stats["filesByStatus"]["COMPLETED"] >= 3
    assert stats["durationMs"]["p50"] is not None
    assert api.as_key(None).get("/stats").status == 401


def test_dead_letters_are_shown_masked_and_sent_back(api: AdminApi, aws: Aws) -> None:
    poison = f'{{"jobId": "nope-{uuid.uuid4().hex[:6]}", "taskToken": "{RAW_TOKEN}"}}'
    aws.send_job(poison)

    def in_dlq() -> list[dict[str, object]] | None:
        found = api.get("/dlq?queue=export-jobs&limit=100").body["messages"]
        return [m for m in found if "nope-" in str(m["body"])] or None

    [letter] = wait_for(in_dlq, 60, "the poison message in the DLQ")
    assert RAW_TOKEN not in str(letter["body"]) and "AAAAKgAA" in str(letter["body"])
    assert "jobId" in str(letter["reason"])

    moved = api.post("/dlq/redrive?queue=export-jobs")
    assert moved.status == 200, moved.text
    assert moved.body["method"] in ("message-move-task", "receive-send-delete")
    if moved.body["method"] == "receive-send-delete":
        assert moved.body["moved"] >= 1 and "StartMessageMoveTask" in moved.body["note"]
    assert api.get("/dlq?queue=nowhere").status == 404
    assert api.as_key(READ_ONLY).post("/dlq/redrive?queue=export-jobs").status == 403


def test_the_execution_is_traced_on_the_job_its_log_lines_and_metrics(
    api: AdminApi, aws: Aws, service: ServiceProcess
) -> None:
    job_id = str(uuid.uuid4())
    arn = aws.start_execution({"jobId": job_id, "exportId": "files-2", "userId": "tracer"})
    assert aws.wait_execution(arn)["status"] == "SUCCEEDED"
    aws.wait_answered(job_id)

    assert api.get(f"/jobs/{job_id}").body["executionArn"] == arn
    lines = [json.loads(line) for line in service.log_path.read_text().splitlines()
             if job_id in line]  # fmt: skip
    about_the_job = [line for line in lines if line.get("job_id") == job_id]
    assert len(about_the_job) >= 3  # created, downloads, finished, ...
    assert all(line.get("execution_arn") == arn for line in about_the_job), about_the_job
    page = api.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
    name = arn.rsplit(":", 1)[-1]
    assert f'# {{execution="{name}"}}' in page


def test_the_api_alone_serves_operators_and_consumes_nothing(
    env: dict[str, str], aws: Aws, tmp_path: Path
) -> None:
    alone = ServiceProcess(env, tmp_path / "api.log", command="api").start()
    try:
        api = AdminApi(f"http://127.0.0.1:{alone.port}", FULL)
        assert api.get("/health/ready").status == 200
        assert api.get("/jobs?limit=1").status == 200
        started = [json.loads(line) for line in alone.logs().splitlines()
                   if '"service started"' in line]  # fmt: skip
    finally:
        alone.stop()
    assert started and started[0]["consumers"] == []


def _samples(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a Prometheus text page: labels -> value."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name) :]] = float(value)
    return found


def test_metrics_match_what_the_table_says_happened(api: AdminApi, aws: Aws) -> None:
    """Runs last in this module: every job above was started by this one service."""
    jobs = aws.all_jobs()
    delivered = [j for j in jobs if j.get("callbackStatus") == "DELIVERED"]
    with_token = [j for j in jobs if j.get("callbackStatus", "NOT_REQUIRED") != "NOT_REQUIRED"]
    text = api.get("/metrics", headers={"Accept": "text/plain"}).text

    started = _samples(text, "export_jobs_started_total")
    assert sum(started.values()) == len(jobs)
    assert started.get('{token="yes"}', 0) == len(with_token)
    answered = _samples(text, "export_answer_latency_seconds_count")
    assert answered == {"": len(delivered)} and delivered
    callbacks = _samples(text, "export_callbacks_total")
    taken = sum(
        v for k, v in callbacks.items() if 'outcome="delivered"' in k and "heartbeat" not in k
    )
    assert taken == len(delivered)
    ended = _samples(text, "export_jobs_ended_total")
    finished = [j for j in jobs if j.get("completedAt")]
    partly = [j for j in finished if j["status"] == "COMPLETED" and int(j["failedTasks"]) > 0]
    cancelled = [j for j in finished if j["status"] == "CANCELLED"]
    assert sum(ended.values()) >= len(finished)  # a retried job ends twice
    assert ended.get('{error="JobCompletedWithFailures",status="COMPLETED"}', 0) >= len(partly)
    assert ended.get('{error="JobCancelled",status="CANCELLED"}', 0) == len(cancelled)
    if len(jobs) < 10:  # this test alone: the rest is only seen after the others
        return
    messages = _samples(text, "export_messages_total")
    assert messages['{event="rejected",queue="export-jobs"}'] >= 1
    assert messages['{event="received",queue="download-tasks"}'] >= 10
    assert _samples(text, "export_download_duration_seconds_count")['{outcome="stored"}'] >= 10
    assert _samples(text, "export_api_requests_total")['{outcome="ok"}'] >= 5
