"""The operator's commands: jobs, statistics, dead letters and a settings check, on the
same use cases as the admin API. Readable tables (rich) by default, `--json` for
scripts. Exit codes: 0 done, 1 refused or not found (the reason is printed), 2 settings."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Annotated, Any, TypeVar

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from src.application.ports.job_queries import BadCursor
from src.application.use_cases.complete_job import JobNotFound
from src.application.use_cases.operator_actions import ActionRefused
from src.container import Container
from src.domain.job_status import JobStatus
from src.infrastructure.config.settings import SettingsError, load_settings
from src.infrastructure.log_setup import configure_logging
from src.processing.api import schemas

T = TypeVar("T")
QUEUES = ("export-jobs", "download-tasks")
TABLES_AND_QUEUES = ("sqs_export_jobs_url", "sqs_download_tasks_url")
# On a terminal, its width; piped, wide enough that ids are never wrapped.
out = Console(width=None if sys.stdout.isatty() else 200)

jobs_app = typer.Typer(help="Jobs: list, show, cancel, retry failed files, resend an answer.")
dlq_app = typer.Typer(help="Dead-letter queues: see what could not be processed, send it back.")


class Refused(Exception):
    pass


def _settings_or_exit(required: Iterable[str]) -> Any:
    try:
        return load_settings(required)
    except SettingsError as err:
        typer.echo(f"export-service: {err}", err=True)
        raise typer.Exit(2) from None


def run_with(required: Iterable[str], action: Callable[[Container], Awaitable[T]]) -> T:
    """Settings checked, logs to stderr (warnings only), the container's resources open
    for the action; a refusal prints its reason and exits 1."""
    settings = _settings_or_exit(required)
    configure_logging(os.environ.get("LOG_LEVEL", "warning"), sys.stderr, settings.log_format)

    async def go() -> T:
        container = Container()
        await container.init_resources()  # type: ignore[misc]
        try:
            return await action(container)
        finally:
            await container.shutdown_resources()  # type: ignore[misc]

    try:
        return asyncio.run(go())
    except (Refused, ActionRefused, BadCursor, LookupError) as err:
        typer.echo(f"refused: {err}", err=True)
        raise typer.Exit(1) from None
    except JobNotFound as err:
        typer.echo(f"not found: no job {err}", err=True)
        raise typer.Exit(1) from None
    except ClientError as err:  # AccessDenied, a missing table, ...
        code = err.response.get("Error", {}).get("Code", "error")
        typer.echo(f"AWS refused: {code} ({err.operation_name})", err=True)
        raise typer.Exit(1) from None
    except (BotoCoreError, OSError) as err:  # no credentials, endpoint unreachable
        typer.echo(f"AWS unreachable: {type(err).__name__}", err=True)
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _progress(job: dict[str, Any]) -> str:
    total = job["totalTasks"]
    if not total:
        return "-"
    return f"{job['completedTasks']}/{total}" + (
        f" ({job['failedTasks']} failed)" if job["failedTasks"] else ""
    )


def _jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("job", "status", "files", "user", "created", "answer", header_style="bold")
    table.columns[0].no_wrap = True
    for job in jobs:
        table.add_row(  # Text: data never read as rich markup ("[/]" in a userId)
            *(Text(str(v)) for v in (job["jobId"], job["status"], _progress(job),
              job["userId"], str(job["createdAt"])[:19], job["callback"]["status"]))
        )  # fmt: skip
    return table


JSON = typer.Option(False, "--json", help="JSON instead of a table.")


@jobs_app.command("list")
def jobs_list(
    status: Annotated[JobStatus | None, typer.Option(case_sensitive=False)] = None,
    user: str | None = typer.Option(None, "--user", help="userId"),
    limit: int = typer.Option(20, min=1, max=200),
    cursor: str | None = typer.Option(None, help="from the previous page"),
    as_json: bool = JSON,
) -> None:
    """Jobs newest first, by status and/or user."""

    async def action(c: Container) -> Any:
        queries = await c.job_queries()  # type: ignore[misc]
        return await queries.list_jobs(status=status, user_id=user, limit=limit, cursor=cursor)

    page = run_with((), action)
    jobs = [schemas.job_out(j) for j in page.jobs]
    if as_json:
        _print_json({"items": jobs, "cursor": page.cursor})
        return
    out.print(_jobs_table(jobs))
    if page.cursor:
        out.print(f"more: --cursor {page.cursor}")


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    files: int = typer.Option(100, min=1, max=1000, help="files to list"),
    as_json: bool = JSON,
) -> None:
    """A job: counters, answer, waiting workflows (tokens masked) and its files."""

    async def action(c: Container) -> Any:
        job = await (await c.jobs()).get(job_id)  # type: ignore[misc]
        if job is None:
            raise JobNotFound(job_id)
        page = await (await c.job_queries()).list_tasks(job_id, limit=files)  # type: ignore[misc]
        return schemas.job_detail(job, page.tasks, page.cursor, first_page=True)

    detail = run_with((), action)
    if as_json:
        _print_json(detail)
        return
    out.print(_jobs_table([detail]))
    error = detail["error"]
    if error:
        out.print(f"error: {error['code']}: {error['message']}", markup=False)
    answer = detail["callback"]
    out.print(
        f"answer: {answer['status']} after {answer['attempts']} attempt(s)"
        + (f", last error {answer['lastError']}" if answer["lastError"] else ""),
        markup=False,
    )
    for workflow in detail["waitingWorkflows"]:
        out.print(f"workflow {workflow['token']} answered={workflow['answered']}", markup=False)
    table = Table("#", "file", "status", "bytes", "sha256", "attempts", "error")
    for f in detail["files"]["items"]:
        table.add_row(
            *(Text(v) for v in (str(f["index"]), f["fileName"], f["status"], str(f["size"] or ""),
              (f["sha256"] or "")[:12], str(f["attempts"]), f["error"] or ""))
        )  # fmt: skip
    out.print(table)
    if detail["files"]["unrecorded"]:
        out.print(f"{detail['files']['unrecorded']} file(s) not started yet")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, as_json: bool = JSON) -> None:
    """Cancel an unfinished job; its workflow is answered JobCancelled."""
    from src.application.commands import CancelJobCommand

    async def action(c: Container) -> Any:
        job = await (await c.jobs()).get(job_id)  # type: ignore[misc]
        if job is None:
            raise JobNotFound(job_id)
        if job.is_terminal:
            raise Refused(f"the job has ended ({job.status.value})")
        use_case = await c.cancel_job()  # type: ignore[misc]
        result = await use_case.execute(CancelJobCommand(job_id, "Cancelled by an operator"))
        if not result.cancelled:
            raise Refused("the job ended before it could be cancelled")
        return schemas.job_out(result.job)

    _report(run_with((), action), as_json)


@jobs_app.command("retry")
def jobs_retry(job_id: str, as_json: bool = JSON) -> None:
    """Copy a finished job's failed files again (not once its answer was delivered)."""

    async def action(c: Container) -> Any:
        use_case = await c.retry_failed_files()  # type: ignore[misc]
        return schemas.job_out(await use_case.execute(job_id))

    _report(run_with(TABLES_AND_QUEUES[1:], action), as_json)


@jobs_app.command("resend")
def jobs_resend(job_id: str, as_json: bool = JSON) -> None:
    """Send a finished job's undelivered answer again."""

    async def action(c: Container) -> Any:
        use_case = await c.resend_answer()  # type: ignore[misc]
        return schemas.job_out(await use_case.execute(job_id))

    _report(run_with((), action), as_json)


def _report(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(job)
    else:
        out.print(_jobs_table([job]))


def stats(as_json: bool = JSON) -> None:
    """Jobs and files by status, answers by outcome, p50/p95 duration and answer latency."""

    async def action(c: Container) -> Any:
        return await (await c.job_stats()).execute()  # type: ignore[misc]

    found = run_with((), action)
    figures = {
        "jobsByStatus": found.jobs_by_status,
        "complete": found.complete,
        "filesByStatus": found.files_by_status,
        "answers": found.answers,
        "tokenShare": found.token_share,
        "durationMs": {"p50": found.duration_ms_p50, "p95": found.duration_ms_p95},
        "answerLatencyMs": {"p50": found.answer_latency_ms_p50, "p95": found.answer_latency_ms_p95},
    }
    if as_json:
        _print_json(figures)
        return
    table = Table("figure", "value", header_style="bold")
    for name, value in figures.items():
        table.add_row(name, json.dumps(value) if isinstance(value, dict) else str(value))
    out.print(table)
    if not found.complete:
        out.print(f"(at most {found.per_status_limit} jobs read per status: counts are floors)")


def _queue_option() -> Any:
    return typer.Option("export-jobs", "--queue", help=f"One of {', '.join(QUEUES)}.")


async def _letters(c: Container, queue: str) -> Any:
    if queue not in QUEUES:
        raise Refused(f"--queue must be one of {', '.join(QUEUES)}")
    provider = (
        c.export_jobs_dead_letters if queue == "export-jobs" else c.download_tasks_dead_letters
    )
    return await provider()  # type: ignore[misc]


def _queue_setting(queue: str) -> tuple[str, ...]:
    return ("sqs_export_jobs_url",) if queue == "export-jobs" else ("sqs_download_tasks_url",)


@dlq_app.command("list")
def dlq_list(
    queue: str = _queue_option(),
    limit: int = typer.Option(50, "--max", min=1, help="At most this many messages."),
) -> None:
    """Print the DLQ's messages, one JSON line each (tokens masked, reasons shown)."""

    async def action(c: Container) -> Any:
        return await (await _letters(c, queue)).peek(limit)

    letters = run_with(_queue_setting(queue), action)
    for letter in letters:
        print(json.dumps({"messageId": letter.message_id, "body": letter.body,
                          "receiveCount": letter.receive_count, "reason": letter.reason}))  # fmt: skip
    print(f"{len(letters)} message(s) in the {queue} DLQ", file=sys.stderr)


@dlq_app.command("redrive")
def dlq_redrive(queue: str = _queue_option()) -> None:
    """Send the DLQ's messages back to their queue (SQS's message-move task; copied one
    by one where the endpoint lacks it)."""

    async def action(c: Container) -> Any:
        return await (await _letters(c, queue)).redrive_all()

    done = run_with(_queue_setting(queue), action)
    moved = "in the background" if done.moved is None else f"{done.moved} message(s)"
    print(f"{moved} sent back to {queue} ({done.method}){'; ' + done.note if done.note else ''}",
          file=sys.stderr)  # fmt: skip


def check() -> None:
    """Validate the settings and reach each table, queue, the bucket and the Export API:
    one line each. Exit 0 when everything answers."""
    from src.infrastructure.config.settings import REQUIRED_TO_SERVE

    async def action(c: Container) -> list[tuple[str, bool, str]]:
        probe = await c.probe()  # type: ignore[misc]
        lines = [(check.name, check.ok, check.detail) for check in await probe.checks()]
        lines.append(await _export_api(c))
        return lines

    lines = run_with(REQUIRED_TO_SERVE, action)
    print("ok   settings")
    for name, ok, detail in lines:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
    if not all(ok for _, ok, _ in lines):
        raise typer.Exit(1)


async def _export_api(c: Container) -> tuple[str, bool, str]:
    """Any HTTP answer from the Export API's status route means it is reachable."""
    import aiohttp

    settings = c.settings()
    url = f"{settings.export_api_base_url.rstrip('/')}/exports/export-service-check"
    session = await c.http()  # type: ignore[misc]
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return f"Export API {settings.export_api_base_url}", True, f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as err:
        return f"Export API {settings.export_api_base_url}", False, type(err).__name__


def migrate(
    check_only: Annotated[
        bool, typer.Option("--check", help="Only list what is missing; change nothing.")
    ] = False,
) -> None:
    """Create what this service adds to the original's resources: its tasks table, the job
    table's extra indexes and TTL (as infra/template.yaml defines them), on the tables the
    settings name. Idempotent. Exit 0 when nothing is (or remains) missing, 1 otherwise."""
    from src.infrastructure.aws.template import TemplateError, load_template, table_specs
    from src.infrastructure.dynamodb.migration import INCOMPLETE, MigrationError, TableMigration

    async def action(c: Container) -> list[Any]:
        settings = c.settings()
        try:
            specs = {spec.logical_id: spec for spec in table_specs(load_template())}
        except TemplateError as err:
            raise Refused(str(err)) from None
        named = [
            replace(specs["JobTable"], name=settings.dynamodb_table_name),
            replace(specs["TasksTable"], name=settings.dynamodb_tasks_table_name),
        ]
        migration = TableMigration(await c.dynamodb(), named)
        try:
            return await (migration.check() if check_only else migration.apply())
        except MigrationError as err:
            raise Refused(str(err)) from None

    steps = run_with((), action)
    for step in steps:
        print(step.line())
    missing = [step for step in steps if step.state in INCOMPLETE]
    print(f"{len(missing)} missing" if missing else "nothing missing", file=sys.stderr)
    if missing:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(dlq_app, name="dlq")
    app.command("stats")(stats)
    app.command("check")(check)
    app.command("migrate")(migrate)
