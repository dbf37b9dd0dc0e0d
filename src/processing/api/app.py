"""The admin HTTP API (FastAPI): health, metrics, jobs (list, show, start, cancel, retry,
resend the answer), statistics and dead-letter queues. Errors are JSON `{code, message}`;
everything but /health/* needs an API key (see auth.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import structlog
from fastapi import Depends, FastAPI, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.application.commands import CancelJobCommand
from src.application.ports.job_queries import BadCursor, JobQueries
from src.application.ports.job_repository import JobRepository
from src.application.use_cases.cancel_job import CancelJob
from src.application.use_cases.complete_job import JobNotFound
from src.application.use_cases.job_stats import JobStats
from src.application.use_cases.operator_actions import (
    ActionRefused,
    ResendAnswer,
    RetryFailedFiles,
)
from src.application.use_cases.start_export_job import StartExportJob
from src.domain.job_status import JobStatus
from src.processing.api import schemas
from src.processing.api.auth import Access, ApiKeys, Require
from src.processing.messages import ExportJobMessage

log = structlog.get_logger(__name__)

JOB_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
JOB_PATH = PathParam(pattern=JOB_ID, description="the job's id (a UUID)")
QUEUE = Query(description="export-jobs or download-tasks", pattern="^[a-z-]{1,64}$")


class Check(Protocol):
    name: str
    ok: bool
    detail: str


class ReadinessProbe(Protocol):
    async def checks(self) -> list[Check]: ...


class ApiError(Exception):
    def __init__(self, status_code: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message, self.extra = status_code, code, message, extra


@dataclass
class AdminContext:
    """What the API works with: the keys, the probes, the queries and the use cases."""

    keys: ApiKeys
    queries: JobQueries
    jobs: JobRepository
    start_job: StartExportJob
    cancel_job: CancelJob
    retry: RetryFailedFiles
    resend: ResendAnswer
    stats: JobStats
    # queue name -> its dead letters (peek, redrive_all)
    dead_letters: Mapping[str, Any] = field(default_factory=dict)
    probe: ReadinessProbe | None = None
    metrics_public: bool = False


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorBody, "description": "no valid API key"},
    403: {"model": schemas.ErrorBody, "description": "a read-only key on a write route"},
    422: {"model": schemas.ErrorBody, "description": "invalid request"},
}
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 422: "validation_error"}  # fmt: skip


def _error(status_code: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    body = {"code": code, "message": message, **extra}
    return JSONResponse(body, status_code=status_code, headers=headers)


def create_app(context: AdminContext, is_ready: Callable[[], bool] = lambda: True) -> FastAPI:
    app = FastAPI(
        title="Export service admin API",
        version="0.1.0",
        description="Operate the export service: jobs, their files and answers, statistics, "
        "dead letters. Send an API key as `X-API-Key` or `Authorization: Bearer`.",
    )
    read = Depends(Require(context.keys, Access.READ))
    write = Depends(Require(context.keys, Access.WRITE))

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status_code, err.code, err.message, **err.extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(err.status_code, "error")
        return _error(err.status_code, code, str(err.detail))

    @app.exception_handler(ActionRefused)
    async def refused(_request: Request, err: ActionRefused) -> JSONResponse:
        return _error(409, "conflict", str(err))

    @app.exception_handler(JobNotFound)
    async def not_found(_request: Request, err: JobNotFound) -> JSONResponse:
        return _error(404, "not_found", f"no job {err}")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        log.error("admin API request failed", error=type(err).__name__, exc_info=err)
        return _error(500, "internal_error", "the request failed; see the service's log")

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        # Field and problem only: never the input, which may hold a task token.
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in err.errors()
        ]
        message = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in details)
        return _error(422, "validation_error", message[:1000], details=details[:20])

    # ---- health and metrics ----------------------------------------------------------

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process is up (no dependency is checked)."""
        return {"status": "ok"}

    @app.get(
        "/health/ready",
        tags=["health"],
        responses={503: {"description": "starting, or a dependency failed (named)"}},
    )
    async def ready(response: Response) -> dict[str, Any]:
        """Ready to work: started, and the tables, queues and bucket answer (each checked
        with a short timeout, cached a few seconds)."""
        checks: list[Check] = await context.probe.checks() if context.probe else []
        failed = [c.name for c in checks if not c.ok]
        started = is_ready()
        if started and not failed:
            body: dict[str, Any] = {"status": "ready"}
        else:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            body = {"status": "starting" if not started else "unavailable", "failed": failed}
        body["checks"] = {c.name: c.detail for c in checks}
        return body

    metrics_guard = [] if context.metrics_public else [read]

    @app.get(
        "/metrics",
        tags=["health"],
        dependencies=metrics_guard,
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}},
                              "application/openmetrics-text": {"schema": {"type": "string"}}},
                  "description": "Prometheus text format, or OpenMetrics when asked"},
            **_ERROR_RESPONSES,
        },
    )  # fmt: skip
    async def metrics(request: Request) -> Response:
        """Prometheus text format, or OpenMetrics (with exemplars naming the execution of
        a job's answer) when asked for; the README lists every metric and sample alerts."""
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            page = openmetrics.generate_latest(REGISTRY)  # type: ignore[no-untyped-call]
            return Response(page, media_type=openmetrics.CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    console_page = (Path(__file__).parent / "static" / "console.html").read_text()

    @app.get("/console", tags=["console"], response_class=HTMLResponse, include_in_schema=False)
    async def console() -> HTMLResponse:
        """The web console: a static page; everything it shows comes from the API, with
        the key the operator types in (kept in the tab's sessionStorage)."""
        return HTMLResponse(
            console_page,
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                "style-src 'unsafe-inline'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            },
        )

    # ---- jobs ------------------------------------------------------------------------

    async def the_job(job_id: str) -> Any:
        job = await context.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id}")
        return job

    @app.get(
        "/jobs",
        tags=["jobs"],
        dependencies=[read],
        response_model=schemas.JobList,
        responses={400: {"model": schemas.ErrorBody}, **_ERROR_RESPONSES},
    )
    async def list_jobs(
        job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
        user_id: Annotated[str | None, Query(alias="userId", min_length=1, max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> dict[str, Any]:
        """Jobs newest first, by status and/or userId (through the indexes, never a scan)."""
        try:
            page = await context.queries.list_jobs(
                status=job_status, user_id=user_id, limit=limit, cursor=cursor
            )
        except BadCursor as err:
            raise ApiError(400, "bad_cursor", str(err)) from None
        return {"items": [schemas.job_out(j) for j in page.jobs], "cursor": page.cursor}

    @app.get(
        "/jobs/{job_id}",
        tags=["jobs"],
        dependencies=[read],
        response_model=schemas.JobDetail,
        responses={404: {"model": schemas.ErrorBody}, 400: {"model": schemas.ErrorBody},
                   **_ERROR_RESPONSES},
    )  # fmt: skip
    async def show_job(
        job_id: Annotated[str, JOB_PATH],
        files_limit: Annotated[int, Query(alias="filesLimit", ge=1, le=1000)] = 100,
        files_cursor: Annotated[str | None, Query(alias="filesCursor", max_length=4096)] = None,
    ) -> dict[str, Any]:
        """A job: counters, timings, its answer (tokens masked), the workflows waiting on
        it, and its files a page at a time."""
        job = await the_job(job_id)
        try:
            page = await context.queries.list_tasks(job_id, limit=files_limit, cursor=files_cursor)
        except BadCursor as err:
            raise ApiError(400, "bad_cursor", str(err)) from None
        return schemas.job_detail(job, page.tasks, page.cursor, first_page=files_cursor is None)

    @app.post(
        "/jobs",
        tags=["jobs"],
        dependencies=[write],
        status_code=202,
        response_model=schemas.JobCreated,
        responses={409: {"model": schemas.ErrorBody}, **_ERROR_RESPONSES},
    )
    async def start_job(body: ExportJobMessage, response: Response) -> dict[str, Any]:
        """Start an export job, as an export-job message would (same validation); with a
        taskToken, that workflow is answered when it ends."""
        location = f"/jobs/{body.job_id}"
        if await context.jobs.get(body.job_id, counted=False) is not None:
            raise ApiError(409, "conflict", f"job {body.job_id} exists", location=location)
        result = await context.start_job.execute(body.to_command())
        if not result.created:
            raise ApiError(409, "conflict", f"job {body.job_id} exists", location=location)
        response.headers["Location"] = location
        return {"jobId": result.job.job_id, "status": result.job.status.value, "location": location}

    @app.post(
        "/jobs/{job_id}/cancel",
        tags=["jobs"],
        dependencies=[write],
        response_model=schemas.JobOut,
        responses={404: {"model": schemas.ErrorBody}, 409: {"model": schemas.ErrorBody},
                   **_ERROR_RESPONSES},
    )  # fmt: skip
    async def cancel(job_id: Annotated[str, JOB_PATH]) -> dict[str, Any]:
        """Cancel an unfinished job; its workflow is answered `JobCancelled`."""
        job = await the_job(job_id)
        if job.is_terminal:
            raise ApiError(409, "conflict", f"job {job_id} has ended ({job.status.value})")
        result = await context.cancel_job.execute(
            CancelJobCommand(job_id, "Cancelled by an operator")
        )
        if not result.cancelled:
            raise ApiError(409, "conflict", f"job {job_id} ended before it could be cancelled")
        return schemas.job_out(await the_job(job_id))

    @app.post(
        "/jobs/{job_id}/retry",
        tags=["jobs"],
        dependencies=[write],
        status_code=202,
        response_model=schemas.RetryOut,
        responses={404: {"model": schemas.ErrorBody}, 409: {"model": schemas.ErrorBody},
                   **_ERROR_RESPONSES},
    )  # fmt: skip
    async def retry(job_id: Annotated[str, JOB_PATH]) -> dict[str, Any]:
        """Copy the failed files of a finished job again, if its answer has not been
        delivered (409 says why not): the job is DOWNLOADING again and answers when it
        ends."""
        before = await the_job(job_id)
        reopened = await context.retry.execute(job_id)
        retried = before.failed_tasks - reopened.failed_tasks
        return {"jobId": job_id, "status": reopened.status.value, "retriedFiles": retried}

    @app.post(
        "/jobs/{job_id}/callback",
        tags=["jobs"],
        dependencies=[write],
        response_model=schemas.JobOut,
        responses={404: {"model": schemas.ErrorBody}, 409: {"model": schemas.ErrorBody},
                   **_ERROR_RESPONSES},
    )  # fmt: skip
    async def resend(job_id: Annotated[str, JOB_PATH]) -> dict[str, Any]:
        """Send an undelivered answer again (after throttling or an outage); 409 when it
        was delivered, no workflow waits, or the workflow refused it for good."""
        return schemas.job_out(await context.resend.execute(job_id))

    @app.get(
        "/stats",
        tags=["stats"],
        dependencies=[read],
        response_model=schemas.StatsOut,
        responses=_ERROR_RESPONSES,
    )
    async def stats() -> dict[str, Any]:
        """Jobs by status, files by status, answers by outcome and error code, the share
        of jobs with a workflow, p50/p95 job duration and answer latency: from the newest
        jobs of each status (bounded reads; `complete` says whether that was all)."""
        found = await context.stats.execute()
        return {
            "jobsByStatus": found.jobs_by_status,
            "complete": found.complete,
            "perStatusLimit": found.per_status_limit,
            "jobsRead": found.jobs_read,
            "filesByStatus": found.files_by_status,
            "answers": found.answers,
            "tokenShare": found.token_share,
            "durationMs": {"p50": found.duration_ms_p50, "p95": found.duration_ms_p95},
            "answerLatencyMs": {
                "p50": found.answer_latency_ms_p50,
                "p95": found.answer_latency_ms_p95,
            },
        }

    queue_names = sorted(context.dead_letters)

    def letters_of(queue: str) -> Any:
        found = context.dead_letters.get(queue)
        if found is None:
            raise ApiError(404, "not_found", f"no queue {queue!r}: one of {', '.join(queue_names)}")
        return found

    @app.get(
        "/dlq",
        tags=["dead letters"],
        dependencies=[read],
        response_model=schemas.DeadLetters,
        responses={404: {"model": schemas.ErrorBody}, **_ERROR_RESPONSES},
    )
    async def dead_letters(
        queue: Annotated[str, QUEUE] = "export-jobs",
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """What could not be processed, with the reason it was rejected (tokens masked;
        the messages stay in the DLQ)."""
        try:
            found = await letters_of(queue).peek(limit)
        except LookupError as err:
            raise ApiError(404, "not_found", str(err)) from None
        return {
            "queue": queue,
            "messages": [
                {"messageId": d.message_id, "body": d.body, "receiveCount": d.receive_count,
                 "reason": d.reason}
                for d in found
            ],
        }  # fmt: skip

    @app.post(
        "/dlq/redrive",
        tags=["dead letters"],
        dependencies=[write],
        response_model=schemas.RedriveOut,
        responses={404: {"model": schemas.ErrorBody}, **_ERROR_RESPONSES},
    )
    async def redrive(queue: Annotated[str, QUEUE] = "export-jobs") -> dict[str, Any]:
        """Send the DLQ's messages back to their queue (SQS's message-move task where the
        endpoint has it; else copied one by one, up to 1,000)."""
        try:
            done = await letters_of(queue).redrive_all()
        except LookupError as err:
            raise ApiError(404, "not_found", str(err)) from None
        return {"queue": queue, "method": done.method, "moved": done.moved,
                "taskHandle": done.task_handle, "note": done.note}  # fmt: skip

    return app
