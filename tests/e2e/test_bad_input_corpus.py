"""Bad input, table-driven: 73 export-job messages (not JSON, not an object, missing,
empty, wrong-typed and over-long fields, control characters and path tricks in ids,
malformed task tokens, unknown fields, duplicates) and 13 malformed or unusable Export API
answers, all against one running service.

Every message must end in exactly one known place: rejected to the export-jobs DLQ with a
`rejectReason` (and the same reason logged), processed into a job, recorded as a failed job
(with the workflow's failure callback when it has a token), or refused by SQS itself before
it ever reaches the service. Nothing is silently dropped, nothing crashes the service, and
the consumer goes on taking valid work afterwards."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from src.local.provision import Resources
from src.local.stack import EmbeddedStack
from tests.support.aws import Aws, wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

FAST = {
    "POLLING_INTERVAL_MS": "200",
    "POLLING_MAX_INTERVAL_MS": "500",
    "POLLER_TICK_MS": "200",
    "POLLING_TIMEOUT_MS": "6000",  # an Export API that never answers usefully: ExportTimedOut
    "SQS_WAIT_TIME_SECONDS": "1",
    "SQS_VISIBILITY_TIMEOUT": "3",  # a message whose handling raises comes back quickly
    "EXPORT_API_MAX_RETRIES": "1",
    "EXPORT_API_TIMEOUT": "1000",
    "HEARTBEAT_INTERVAL_SECONDS": "2",
    "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.1/32",  # the sandbox's files are on loopback
}
SETTLE_SECONDS = 75.0

TAG = uuid.uuid4().hex[:8]
MISSING = object()  # a field left out of the message

DLQ, PROCESSED, FAILED_JOB, REFUSED = "DLQ", "PROCESSED", "FAILED_JOB", "REFUSED"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
INVALID_JSON = "body: Invalid JSON"
NOT_AN_OBJECT = "body: Input should be an object"
NOT_A_UUID = "jobId: Value error, jobId must be a hyphenated UUID"
CONTROL_CHARS = "Value error, must not contain control characters"
BAD_TOKEN = "taskToken: Value error, taskToken must be visible ASCII without whitespace"
NOT_A_DICT = "metadata: Input should be an object"
NOT_A_STRING = "Input should be a valid string"


def _job_id() -> str:
    return str(uuid.uuid4())


def _export(spec: str = "files-1") -> str:
    return f"t{TAG}-{spec}"


def _message(**fields: Any) -> dict[str, Any]:
    """A valid message (new jobId, a one-file export) with `fields` changed or removed."""
    body: dict[str, Any] = {"jobId": _job_id(), "exportId": _export(), "userId": "user-1"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not MISSING}


def _json(fields: dict[str, Any], *, ascii_only: bool = True) -> str:
    return json.dumps(fields, ensure_ascii=ascii_only)


@dataclass(frozen=True)
class Case:
    """One export-job message and where it must end up."""

    id: str
    body: str
    to: str  # DLQ | PROCESSED | FAILED_JOB | REFUSED
    reason: str = ""  # DLQ: part of the rejectReason (and of the logged reason)
    status: tuple[str, ...] = ("COMPLETED",)  # PROCESSED / FAILED_JOB: its final status
    error_code: str | None = None  # FAILED_JOB: the job's error.code
    callback: str = "NOT_REQUIRED"  # the job's callbackStatus at the end
    copies: int = 1  # sent this many times (duplicates)
    later: bool = False  # sent once the first batch's jobs exist
    job_id: str | None = None  # the job it must create (default: the body's jobId)
    bug: str = ""  # a known src bug: the test is xfail(strict)
    sqs_may_refuse: bool = False  # DLQ, unless SQS refuses it at send (it never arrives)

    @property
    def expected_job_id(self) -> str:
        return self.job_id or json.loads(self.body)["jobId"]


BIG_METADATA = {"blob": "m" * 180_000, "nested": {"list": list(range(100)), "ok": True}}
DUPLICATE = _json(_message(metadata={"copy": "same"}))
CONFLICT_ID = _job_id()
UPPER_ID = _job_id().upper()
LAST_KEY_ID = _job_id()
TRAILING_GARBAGE = _json(_message()) + " trailing"

MESSAGES: list[Case] = [
    # -- not JSON, or JSON but not an object --------------------------------------------
    # Real SQS refuses an empty body; an emulator may take it, and then it must be rejected.
    Case("empty-body", "", DLQ, INVALID_JSON, sqs_may_refuse=True),
    Case("whitespace-only", "   ", DLQ, INVALID_JSON),
    Case("plain-text", "please export my files", DLQ, INVALID_JSON),
    Case("truncated-object", "{", DLQ, INVALID_JSON),
    Case("truncated-valid-message", _json(_message())[:-7], DLQ, INVALID_JSON),
    Case("trailing-garbage", TRAILING_GARBAGE, DLQ, INVALID_JSON),
    Case("utf8-bom", "\ufeff" + _json(_message()), DLQ, INVALID_JSON),
    Case("lone-surrogate-escape", _json(_message())[:-1] + ', "x": "\\ud800"}', DLQ, INVALID_JSON),
    Case("null", "null", DLQ, NOT_AN_OBJECT),
    Case("empty-array", "[]", DLQ, NOT_AN_OBJECT),
    Case("number", "42", DLQ, NOT_AN_OBJECT),
    Case("string", '"str"', DLQ, NOT_AN_OBJECT),
    Case("boolean", "true", DLQ, NOT_AN_OBJECT),
    Case("array-of-a-valid-message", json.dumps([_message()]), DLQ, NOT_AN_OBJECT),
    # -- required fields missing or empty ------------------------------------------------
    Case("empty-object", "{}", DLQ, "jobId: Field required; exportId: Field required"),
    Case("missing-jobId", _json(_message(jobId=MISSING)), DLQ, "jobId: Field required"),
    Case("missing-exportId", _json(_message(exportId=MISSING)), DLQ, "exportId: Field required"),
    Case("missing-userId", _json(_message(userId=MISSING)), DLQ, "userId: Field required"),
    Case("empty-jobId", _json(_message(jobId="")), DLQ, NOT_A_UUID),
    Case(
        "empty-exportId",
        _json(_message(exportId="")),
        DLQ,
        "exportId: String should have at least 1 character",
    ),
    Case(
        "empty-userId",
        _json(_message(userId="")),
        DLQ,
        "userId: String should have at least 1 character",
    ),
    # -- wrong types ----------------------------------------------------------------------
    Case("jobId-number", _json(_message(jobId=42)), DLQ, f"jobId: {NOT_A_STRING}"),
    Case("jobId-object", _json(_message(jobId={"id": _job_id()})), DLQ, f"jobId: {NOT_A_STRING}"),
    Case("exportId-number", _json(_message(exportId=12345)), DLQ, f"exportId: {NOT_A_STRING}"),
    Case("exportId-list", _json(_message(exportId=[_export()])), DLQ, f"exportId: {NOT_A_STRING}"),
    Case("exportId-null", _json(_message(exportId=None)), DLQ, f"exportId: {NOT_A_STRING}"),
    Case("userId-boolean", _json(_message(userId=True)), DLQ, f"userId: {NOT_A_STRING}"),
    Case("metadata-null", _json(_message(metadata=None)), DLQ, NOT_A_DICT),
    Case("metadata-array", _json(_message(metadata=[{"a": 1}])), DLQ, NOT_A_DICT),
    Case("metadata-string", _json(_message(metadata='{"a": 1}')), DLQ, NOT_A_DICT),
    Case("metadata-number", _json(_message(metadata=7)), DLQ, NOT_A_DICT),
    # -- sizes ----------------------------------------------------------------------------
    Case(
        "userId-1000-chars",
        _json(_message(userId="u" * 1000)),
        DLQ,
        "userId: String should have at most 256 characters",
    ),
    Case(
        "exportId-257-chars",
        _json(_message(exportId=_export("files-1-") + "x" * (257 - len(_export("files-1-"))))),
        DLQ,
        "exportId: String should have at most 256 characters",
    ),
    Case(
        "exportId-256-chars-is-the-limit",
        _json(_message(exportId=_export("files-1-") + "x" * (256 - len(_export("files-1-"))))),
        PROCESSED,
    ),
    Case("metadata-180KB-fits-sqs-and-dynamodb", _json(_message(metadata=BIG_METADATA)), PROCESSED),
    # SQS takes bodies up to 1 MiB (since 2025), a DynamoDB item only 400 KB. (The emulator
    # counts an attribute's old and new value together on UpdateItem, so a job whose
    # metadata is over ~200 KB cannot be saved there: 180 KB is what this run can prove.)
    Case(
        "body-500KB-over-the-dynamodb-item-limit",
        _json(_message(metadata={"b": "x" * 500_000})),
        DLQ,
        "metadata",
    ),
    Case("body-over-1MiB-sqs-refuses", _json(_message(metadata={"b": "x" * 1_100_000})), REFUSED),
    # -- control characters and path tricks in ids ----------------------------------------
    Case("jobId-trailing-newline", _json(_message(jobId=_job_id() + "\n")), DLQ, NOT_A_UUID),
    Case("jobId-leading-space", _json(_message(jobId=" " + _job_id())), DLQ, NOT_A_UUID),
    Case("jobId-dot-dot-slash", _json(_message(jobId="../" + _job_id())), DLQ, NOT_A_UUID),
    Case("jobId-encoded-slash", _json(_message(jobId=_job_id() + "%2F..")), DLQ, NOT_A_UUID),
    Case("jobId-not-a-uuid", _json(_message(jobId="job-1")), DLQ, NOT_A_UUID),
    Case("jobId-no-hyphens", _json(_message(jobId=uuid.uuid4().hex)), DLQ, NOT_A_UUID),
    Case("jobId-in-braces", _json(_message(jobId="{" + _job_id() + "}")), DLQ, NOT_A_UUID),
    Case("jobId-fullwidth-digit", _json(_message(jobId="\uff11" + _job_id()[1:])), DLQ, NOT_A_UUID),
    Case(
        "exportId-bell-u0007",
        _json(_message(exportId=_export() + "\u0007")),
        DLQ,
        f"exportId: {CONTROL_CHARS}",
    ),
    Case(
        "exportId-next-line-u0085-escaped",
        _json(_message(exportId=_export() + "\u0085")),
        DLQ,
        f"exportId: {CONTROL_CHARS}",
    ),
    Case(
        "exportId-next-line-u0085-raw",
        _json(_message(exportId=_export() + "\u0085"), ascii_only=False),
        DLQ,
        f"exportId: {CONTROL_CHARS}",
    ),
    Case(
        "exportId-newline-log-forging",
        _json(_message(exportId=_export() + '\n{"event": "export job created"}')),
        DLQ,
        f"exportId: {CONTROL_CHARS}",
    ),
    Case(
        "exportId-ansi-escape",
        _json(_message(exportId="\u001b[31m" + _export())),
        DLQ,
        f"exportId: {CONTROL_CHARS}",
    ),
    Case(
        "userId-nul-u0000",
        _json(_message(userId="user\u00001")),
        DLQ,
        f"userId: {CONTROL_CHARS}",
    ),
    Case(
        "exportId-path-traversal-is-just-an-id",
        _json(_message(exportId=f"../../t{TAG}/etc/passwd")),
        PROCESSED,
    ),
    Case(
        "exportId-url-specials-are-just-an-id",
        _json(_message(exportId=_export("files-1 ?a=1&b=%2F#frag"))),
        PROCESSED,
    ),
    # -- task tokens ----------------------------------------------------------------------
    Case(
        "taskToken-with-spaces",
        _json(_message(taskToken="AAAAKgAAAAIAAAAA secret token with spaces")),
        DLQ,
        BAD_TOKEN,
    ),
    Case(
        "taskToken-with-newline",
        _json(_message(taskToken="AAAAKgAAAAIAAAAA\nsecret")),
        DLQ,
        BAD_TOKEN,
    ),
    Case(
        "taskToken-2049-chars",  # Step Functions allows 2048
        _json(_message(taskToken="AAAAKgAAAAIAAAAA" + "T" * 2033)),
        DLQ,
        "taskToken: String should have at most 2048 characters",
    ),
    Case("taskToken-number", _json(_message(taskToken=123456)), DLQ, f"taskToken: {NOT_A_STRING}"),
    Case("taskToken-list", _json(_message(taskToken=["a"])), DLQ, f"taskToken: {NOT_A_STRING}"),
    Case("taskToken-empty-means-none", _json(_message(taskToken="")), PROCESSED),
    Case("taskToken-null-means-none", _json(_message(taskToken=None)), PROCESSED),
    Case(
        "taskToken-unknown-to-step-functions",
        _json(
            _message(
                exportId=_export("files-1-filedelay-5000"),
                taskToken="AAAAKgAAAAIAAAAAAAAAA" + uuid.uuid4().hex * 4,
            )
        ),
        # A heartbeat (every 2 s here) comes while the file is still downloading: Step
        # Functions answers InvalidToken, which says the token is not valid, not that a
        # workflow gave up: heartbeats stop, the job completes, and its answer's
        # rejection is recorded on it.
        PROCESSED,
        status=("COMPLETED",),
        callback="FAILED",
    ),
    # -- unknown fields, ids as sent ------------------------------------------------------
    Case(
        "unknown-fields-ignored",
        _json(_message(priority=1, extra={"deep": [1, 2]}, __proto__={"x": 1}, JOBID="nope")),
        PROCESSED,
    ),
    Case("callbackUrl-ignored", _json(_message(callbackUrl="https://example.com/cb")), PROCESSED),
    Case("callbackUrl-number-invalid", _json(_message(callbackUrl=5)), DLQ, "callbackUrl"),
    Case("callbackUrl-not-a-url", _json(_message(callbackUrl="not a url")), DLQ, "callbackUrl"),
    Case("jobId-uppercase-stored-as-sent", _json(_message(jobId=UPPER_ID)), PROCESSED),
    Case(
        "exportId-unknown-to-the-export-api",
        _json(_message(exportId="missing")),
        FAILED_JOB,
        status=("FAILED",),
        error_code="EXPORT_API_FAILED",
    ),
    # -- duplicates -----------------------------------------------------------------------
    Case("duplicate-message-sent-twice", DUPLICATE, PROCESSED, copies=2),
    Case(
        "duplicate-keys-last-one-wins",
        f'{{"jobId": "{_job_id()}", "jobId": "{LAST_KEY_ID}", "exportId": "{_export()}", '
        '"userId": "u"}',
        PROCESSED,
        job_id=LAST_KEY_ID,
    ),
    Case("same-jobId-first", _json(_message(jobId=CONFLICT_ID, userId="first")), PROCESSED),
    Case(
        "same-jobId-other-content-later",
        _json(_message(jobId=CONFLICT_ID, exportId=_export("files-2"), userId="second")),
        PROCESSED,  # acknowledged; the job stays the first message's
        later=True,
    ),
    # -- numbers DynamoDB cannot store ----------------------------------------------------
    Case(
        "metadata-nan",
        _json(_message())[:-1] + ', "metadata": {"n": NaN}}',
        DLQ,
        "metadata",
    ),
    Case(
        "metadata-1e400",
        _json(_message())[:-1] + ', "metadata": {"n": 1e400}}',
        DLQ,
        "metadata",
    ),
    Case(
        "metadata-45-digit-integer",
        _json(_message(metadata={"n": 10**44 + 1})),
        DLQ,
        "metadata",
    ),
]


@dataclass(frozen=True)
class ApiCase:
    """A workflow execution whose export the sandbox answers badly, and how it must end."""

    id: str
    export_id: str
    execution: tuple[str, str | None]  # (status, error)
    job: tuple[str, str | None]  # (status, error.code)
    log_event: str  # the log line that names the reason
    log_reason: str
    failed_tasks: int = 0
    later: bool = False  # started once the rest has settled (see the http-500 case)


TIMED_OUT = ("FAILED", "ExportTimedOut"), ("FAILED", "POLLING_TIMEOUT")
MALFORMED = "malformed Export API response"
UNAVAILABLE = "export status unavailable"

API_ANSWERS: list[ApiCase] = [
    ApiCase("html-with-200", _export("malformed-notjson"), *TIMED_OUT, MALFORMED, "Invalid JSON"),
    ApiCase(
        "json-array", _export("malformed-array"), *TIMED_OUT, MALFORMED, "Input should be an object"
    ),
    ApiCase(
        "no-status", _export("malformed-nostatus"), *TIMED_OUT, MALFORMED, "status: Field required"
    ),
    ApiCase(
        "unknown-status",
        _export("malformed-badstatus"),
        *TIMED_OUT,
        MALFORMED,
        "status: Input should be 'pending'",
    ),
    ApiCase(
        "downloadUrls-a-string",
        _export("malformed-badurls"),
        *TIMED_OUT,
        MALFORMED,
        "downloadUrls: Input should be a valid array",
    ),
    ApiCase(
        "download-entry-without-url",
        _export("malformed-badentry"),
        *TIMED_OUT,
        MALFORMED,
        "downloadUrls.0.url: Field required",
    ),
    ApiCase(
        "exportId-a-number",
        _export("malformed-numberid"),
        *TIMED_OUT,
        MALFORMED,
        "exportId: Input should be a valid string",
    ),
    ApiCase(
        "http-404",
        "missing",
        ("FAILED", "ExportFailed"),
        ("FAILED", "EXPORT_API_FAILED"),
        UNAVAILABLE,
        "HTTP 404",
    ),
    ApiCase("http-500-always", _export("api500-99"), *TIMED_OUT, UNAVAILABLE, "HTTP 500"),
    # Two 500s (one poll, with its retry), then ready. Started once everything else has
    # settled: a poll round waits for its slowest Export API call (and the emulator is slow
    # under the whole corpus), so in the crowd its second poll can miss the deadline.
    ApiCase(
        "http-500-twice-then-ready",
        _export("api500-2"),
        ("SUCCEEDED", None),
        ("COMPLETED", None),
        UNAVAILABLE,
        "HTTP 500",
        later=True,
    ),
    ApiCase("hangs-past-the-timeout", _export("apihang-99"), *TIMED_OUT, UNAVAILABLE, "timed out"),
    ApiCase(
        "wrong-checksum",
        _export("files-2-badchecksum"),
        ("FAILED", "JobCompletedWithFailures"),
        ("COMPLETED", None),
        "file failed",
        "checksum",
        failed_tasks=1,
    ),
    ApiCase(
        "fileName-path-traversal",
        _export("files-2-traversal"),
        ("SUCCEEDED", None),
        ("COMPLETED", None),
        "file stored",
        "",
    ),
]


# ---- the run: send everything once, wait for it all to settle -----------------------


@dataclass
class Run:
    sent: dict[str, list[str]] = field(default_factory=dict)  # case id -> SQS MessageIds
    refused: dict[str, str] = field(default_factory=dict)  # case id -> SQS error code
    dlq: dict[str, dict[str, Any]] = field(default_factory=dict)  # source MessageId -> msg
    executions: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (job, arn)
    settled: bool = False
    seconds: float = 0.0
    unsettled: list[str] = field(default_factory=list)

    def rejected(self, case: Case) -> list[dict[str, Any]]:
        return [self.dlq[m] for m in self.sent.get(case.id, []) if m in self.dlq]


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return embedded_stack.provision("badinput-")


@pytest.fixture(scope="module")
def aws(embedded_stack: EmbeddedStack, resources: Resources) -> Aws:
    return Aws(embedded_stack.env(resources))


@pytest.fixture(scope="module")
def service(
    embedded_stack: EmbeddedStack, resources: Resources, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("badinput") / "service.log"
    process = ServiceProcess(embedded_stack.env(resources), log, **FAST)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def run(aws: Aws, service: ServiceProcess, resources: Resources) -> Run:
    started = time.monotonic()
    result = Run()
    for api in API_ANSWERS:
        if not api.later:
            _start(aws, api, result)
    for case in MESSAGES:
        if not case.later:
            _send(aws, case, result)
    first = [c.expected_job_id for c in MESSAGES if c.to in (PROCESSED, FAILED_JOB) and c.later]
    wait_for(lambda: all(aws.job(j) for j in first), 30, "the first batch's jobs")
    for case in MESSAGES:
        if case.later:
            _send(aws, case, result)
    deadline = started + SETTLE_SECONDS
    _settle(aws, resources, result, deadline)
    for api in API_ANSWERS:
        if api.later:
            _start(aws, api, result)
    _settle(aws, resources, result, deadline)
    result.settled = not result.unsettled
    result.seconds = time.monotonic() - started
    print(f"bad-input corpus settled={result.settled} in {result.seconds:.1f}s")
    return result


def _settle(aws: Aws, resources: Resources, run: Run, deadline: float) -> None:
    while True:
        _drain_dlq(aws, resources.export_jobs_dlq_url, run)
        run.unsettled = _unsettled(aws, run)
        if not run.unsettled or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _start(aws: Aws, api: ApiCase, run: Run) -> None:
    job_id = _job_id()
    arn = aws.start_execution({"jobId": job_id, "exportId": api.export_id, "userId": "u"})
    run.executions[api.id] = (job_id, arn)


def _running(aws: Aws, run: Run) -> list[str]:
    return [
        api_id
        for api_id, (_, arn) in run.executions.items()
        if aws.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    ]


def _send(aws: Aws, case: Case, run: Run) -> None:
    for _ in range(case.copies):
        try:
            response = aws.sqs.send_message(
                QueueUrl=aws.env["SQS_EXPORT_JOBS_URL"], MessageBody=case.body
            )
        except ClientError as err:
            run.refused[case.id] = err.response["Error"]["Code"]
            return
        run.sent.setdefault(case.id, []).append(response["MessageId"])


def _drain_dlq(aws: Aws, dlq_url: str, run: Run) -> None:
    """Collects every DLQ message (kept invisible, not deleted) by the id it was sent with:
    `sourceMessageId` for a reject, the MessageId itself for a redrive."""
    while True:
        messages = aws.sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=600,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return
        for message in messages:
            attrs = message.get("MessageAttributes", {})
            source = attrs.get("sourceMessageId", {}).get("StringValue", message["MessageId"])
            run.dlq[source] = message


def _queue_idle(aws: Aws) -> bool:
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=aws.env["SQS_EXPORT_JOBS_URL"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attrs.values())


def _unsettled(aws: Aws, run: Run) -> list[str]:
    waiting = []
    for case in MESSAGES:
        if case.to == DLQ and len(run.rejected(case)) < len(run.sent.get(case.id, [])):
            waiting.append(case.id)
        elif case.to in (PROCESSED, FAILED_JOB):
            job = aws.job(case.expected_job_id)
            if not job or job["status"] not in TERMINAL or job.get("callbackStatus") == "PENDING":
                waiting.append(case.id)
    waiting += _running(aws, run)
    if not _queue_idle(aws):
        waiting.append("export-jobs queue not idle")
    return waiting


def _log_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    lines = []
    for line in service.logs().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                lines.append(json.loads(line))
    return lines


def _logged(service: ServiceProcess, event: str, **match: str) -> list[dict[str, Any]]:
    return [
        line
        for line in _log_lines(service)
        if line.get("event") == event and all(line.get(k) == v for k, v in match.items())
    ]


# ---- the corpus itself ---------------------------------------------------------------


def test_the_corpus_covers_every_category() -> None:
    assert len(MESSAGES) >= 30 and len(API_ANSWERS) >= 10
    assert {c.to for c in MESSAGES} == {DLQ, PROCESSED, FAILED_JOB, REFUSED}
    assert len({c.id for c in MESSAGES} | {a.id for a in API_ANSWERS}) == len(MESSAGES) + len(
        API_ANSWERS
    )
    for case in MESSAGES:
        assert (case.to == DLQ) == bool(case.reason), case.id


def test_everything_settled_in_time(run: Run) -> None:
    assert run.settled, f"still waiting after {run.seconds:.0f}s for {run.unsettled}"


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in MESSAGES])
def test_message_ends_where_expected(
    case: Case, run: Run, aws: Aws, service: ServiceProcess
) -> None:
    if case.to == REFUSED:
        assert run.refused.get(case.id) in ("InvalidParameterValue", "MissingParameter"), (
            f"SQS took {case.id}: it would reach the service"
        )
        return
    if case.sqs_may_refuse and case.id in run.refused:
        assert run.refused[case.id] in ("InvalidParameterValue", "MissingParameter")
        return
    assert case.id not in run.refused, f"SQS refused it: {run.refused.get(case.id)}"
    sent = run.sent[case.id]
    assert len(sent) == case.copies
    rejected = run.rejected(case)

    if case.to == DLQ:
        assert len(rejected) == len(sent), f"{case.id} is not in the DLQ"
        for message_id, dead in zip(sent, rejected, strict=True):
            assert dead["Body"] == (case.body or "<empty>")
            reason = dead.get("MessageAttributes", {}).get("rejectReason", {}).get("StringValue")
            assert reason is not None, "in the DLQ without a rejectReason"
            assert reason.startswith("invalid export-job message: ")
            assert case.reason in reason
            logged = _logged(service, "invalid export-job message", message_id=message_id)
            assert [line["reason"] for line in logged] == [reason]
        return

    assert rejected == [], f"{case.id} was rejected: {rejected}"
    job = aws.job(case.expected_job_id)
    assert job is not None, f"no job for {case.id}"
    sent_fields = json.loads(case.body)
    if not case.later:
        assert job["exportId"] == sent_fields["exportId"]  # exactly as sent
        assert job["userId"] == sent_fields["userId"]
        assert job.get("metadata", {}) == sent_fields.get("metadata", {})
    assert job["jobId"] == case.expected_job_id
    assert job["status"] in case.status
    assert job.get("callbackStatus") == case.callback
    if case.callback == "FAILED":
        assert job["callbackError"] in ("InvalidToken", "TaskDoesNotExist", "TaskTimedOut")
    if case.id == "taskToken-unknown-to-step-functions":
        refused = "heartbeat refused; no more heartbeats for this token, the job goes on"
        assert _logged(service, refused, job_id=case.expected_job_id)
    if case.to == FAILED_JOB:
        assert job["error"]["code"] == case.error_code
    else:
        assert "error" not in job or not job["error"]
        assert aws.keys(f"exports/{case.expected_job_id}/") == [
            f"exports/{case.expected_job_id}/0_file-0.bin"
        ]
    if case.callback == "NOT_REQUIRED":
        assert "taskToken" not in job
    created = _logged(service, "export job created", job_id=case.expected_job_id)
    assert len(created) == 1
    if case.copies > 1 or case.later:
        ignored = _logged(service, "duplicate export job ignored", job_id=case.expected_job_id)
        conflicts = _logged(
            service,
            "jobId conflict: the job exists for another export; message not attached",
            job_id=case.expected_job_id,
        )
        assert len(ignored) + len(conflicts) >= 1


def test_a_conflicting_duplicate_leaves_the_first_job_as_it_was(run: Run, aws: Aws) -> None:
    job = aws.job(CONFLICT_ID)
    assert job is not None
    assert (job["userId"], job["exportId"]) == ("first", _export())
    assert len([j for j in _all_job_ids(aws) if j == CONFLICT_ID]) == 1


def test_the_dlq_holds_exactly_the_rejected_messages(run: Run) -> None:
    expected = {m for c in MESSAGES if c.to == DLQ for m in run.sent.get(c.id, [])}
    assert set(run.dlq) == expected


def test_only_valid_messages_and_executions_created_jobs(run: Run, aws: Aws) -> None:
    expected = {c.expected_job_id for c in MESSAGES if c.to in (PROCESSED, FAILED_JOB)}
    expected |= {job_id for job_id, _ in run.executions.values()}
    assert set(_all_job_ids(aws)) == expected
    assert UPPER_ID in expected and UPPER_ID.lower() not in set(_all_job_ids(aws))


def _all_job_ids(aws: Aws) -> list[str]:
    ids: list[str] = []
    kwargs: dict[str, Any] = {
        "TableName": aws.env["DYNAMODB_TABLE_NAME"],
        "ProjectionExpression": "jobId",
    }
    while True:
        page = aws.ddb.scan(**kwargs)
        ids += [item["jobId"]["S"] for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return ids
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# ---- malformed Export API answers ----------------------------------------------------


@pytest.mark.parametrize("api", [pytest.param(a, id=a.id) for a in API_ANSWERS])
def test_export_api_answer_ends_the_workflow_as_expected(
    api: ApiCase, run: Run, aws: Aws, service: ServiceProcess
) -> None:
    job_id, arn = run.executions[api.id]
    execution = aws.sfn.describe_execution(executionArn=arn)
    assert (execution["status"], execution.get("error")) == api.execution
    job = aws.job(job_id)
    assert job is not None
    assert (job["status"], (job.get("error") or {}).get("code")) == api.job
    assert job["failedTasks"] == api.failed_tasks
    assert job["callbackStatus"] == "DELIVERED"
    reasons = [line.get("reason", "") for line in _logged(service, api.log_event, job_id=job_id)]
    assert reasons, f"no '{api.log_event}' log line for {job_id}"
    assert any(api.log_reason in r for r in reasons), reasons
    if api.job == ("FAILED", "POLLING_TIMEOUT"):
        assert job["error"]["message"].startswith("Export did not complete after")
    if api.id == "fileName-path-traversal":
        assert aws.keys(f"exports/{job_id}/") == [
            f"exports/{job_id}/0_passwd",
            f"exports/{job_id}/1_file-1.bin",
        ]
    if api.id == "http-404":
        assert job["error"]["message"] == "Export API: HTTP 404"


# ---- and the service is still fine ---------------------------------------------------


def test_no_task_token_or_presigned_signature_in_the_logs(
    run: Run, aws: Aws, service: ServiceProcess
) -> None:
    tokens = {job["taskToken"] for job_id, _ in run.executions.values() if (job := aws.job(job_id))}
    tokens |= {
        token
        for case in MESSAGES
        if case.body.startswith("{")
        and isinstance(token := _maybe_json(case.body).get("taskToken"), str)
        and len(token) > 12
    }
    assert len(tokens) >= len(API_ANSWERS) + 4
    logs = service.logs()
    for token in tokens:
        assert token not in logs
    assert "X-Amz-Signature=" not in logs


def _maybe_json(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def test_the_service_is_alive_and_takes_a_valid_message_after_the_corpus(
    run: Run, aws: Aws, service: ServiceProcess
) -> None:
    assert service.proc is not None and service.proc.poll() is None
    job_id = _job_id()
    aws.send_job({"jobId": job_id, "exportId": _export("files-1"), "userId": "after"})
    job = aws.wait_job(job_id, TERMINAL, timeout=30)
    assert (job["status"], job["completedTasks"]) == ("COMPLETED", 1)
    assert service.proc.poll() is None
    stopped = [
        e.get("event") for e in _log_lines(service) if str(e.get("event")).endswith("stopped")
    ]
    assert stopped == [], "a consumer or worker stopped while the service was running"
