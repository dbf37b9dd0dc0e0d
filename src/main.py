"""The `export-service` command line."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from importlib.metadata import version as package_version
from typing import Any

import structlog
import typer

from src import operator_cli
from src.container import Container
from src.infrastructure.config.settings import (
    REQUIRED_TO_SERVE,
    Settings,
    SettingsError,
    load_settings,
)
from src.infrastructure.log_setup import configure_logging
from src.processing.api.app import create_app
from src.processing.service import Service

app = typer.Typer(add_completion=False, help="Export service for AWS Step Functions workflows.")
operator_cli.register(app)
log = structlog.get_logger("main")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"export-service {package_version('export-service')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Export service for AWS Step Functions workflows."""


@app.command()
def serve(
    embedded: bool = typer.Option(
        False, help="Start the in-process AWS emulator and sandbox Export API first (local use)."
    ),
    demo: bool = typer.Option(False, help="With --embedded: start the demo executions."),
) -> None:
    """Run the consumers and the admin API until SIGTERM/SIGINT."""
    if demo and not embedded:
        raise typer.BadParameter("--demo needs --embedded")
    # The embedded stack writes its own settings; otherwise they must be complete before
    # anything starts (one line naming what is wrong, exit 2, no traceback).
    _settings_or_exit(() if embedded else REQUIRED_TO_SERVE)
    asyncio.run(_run(embedded=embedded, demo=demo, exit_after_demo=False))


def _settings_or_exit(required: Any = ()) -> Settings:
    try:
        return load_settings(required)
    except SettingsError as err:
        typer.echo(f"export-service: {err}", err=True)
        raise typer.Exit(2) from None


@app.command("api")
def api_command() -> None:
    """Run the admin API alone (no consumers, poller or heartbeats) until SIGTERM/SIGINT:
    e.g. an operators' endpoint apart from the workers."""
    _settings_or_exit(REQUIRED_TO_SERVE)
    asyncio.run(_run(embedded=False, demo=False, exit_after_demo=False, api_only=True))


@app.command("demo")
def demo_command() -> None:
    """Embedded stack + service + demo executions; exit 0 only if all ended as expected."""
    code = asyncio.run(_run(embedded=True, demo=True, exit_after_demo=True))
    raise typer.Exit(code)


async def _run(*, embedded: bool, demo: bool, exit_after_demo: bool, api_only: bool = False) -> int:
    settings = _settings_or_exit()
    configure_logging(settings.log_level, fmt=settings.log_format)
    stack = None
    if embedded:
        from src.local.stack import EmbeddedStack  # only here: production never loads it

        log.warning(
            "EMBEDDED MODE: in-process AWS emulator and sandbox Export API, not for production"
        )
        stack = EmbeddedStack().start()
        stack.apply_env()
        _admin_key_for_local_use()
    elif not os.environ.get("AWS_ENDPOINT"):
        log.info("no AWS_ENDPOINT: using AWS through the standard credential chain")
    container = Container()
    await container.init_resources()  # type: ignore[misc]
    outcome = {"code": 0}
    try:
        settings = container.settings()
        workers = [] if api_only else await _workers(container, settings)
        context = await container.admin_context()  # type: ignore[misc]
        if not context.keys.configured and not context.keys.disabled:
            log.warning(
                "ADMIN_API_KEYS is not set: the admin API refuses every request but /health"
            )
        service = Service(
            workers,
            api=lambda ready: create_app(context, ready),
            host=settings.admin_host,
            port=settings.port,
            grace_seconds=settings.shutdown_grace_seconds,
        )
        demo_task = None
        if demo:
            demo_task = asyncio.create_task(_demo(service, outcome, exit_after_demo))
        await service.run()
        if demo_task is not None and not demo_task.done():
            demo_task.cancel()
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
        if stack is not None:
            stack.stop()
    return outcome["code"]


async def _workers(container: Container, settings: Settings) -> list[Any]:
    workers = [
        await container.export_job_consumer(),  # type: ignore[misc]
        await container.download_task_consumer(),  # type: ignore[misc]
        await container.poller(),  # type: ignore[misc]
    ]
    if settings.heartbeat_interval_seconds > 0:
        workers.append(await container.heartbeater())  # type: ignore[misc]
    if settings.reaper_interval_seconds > 0:
        workers.append(await container.reaper())  # type: ignore[misc]
    if settings.dispatch_resume_interval_seconds > 0:
        workers.append(await container.dispatcher())  # type: ignore[misc]
    return workers


def _admin_key_for_local_use() -> None:
    """The embedded default: a fresh admin key for this run, printed once (not logged)."""
    if os.environ.get("ADMIN_API_KEYS") or os.environ.get("ADMIN_AUTH_DISABLED"):
        return
    key = secrets.token_urlsafe(24)
    os.environ["ADMIN_API_KEYS"] = key
    port = os.environ.get("PORT", "3000")
    print(
        f"\nAdmin API key for this run (printed once, not logged): {key}\n"
        f"  console: http://127.0.0.1:{port}/console  "
        f"API: curl -H 'X-API-Key: {key}' http://127.0.0.1:{port}/jobs\n",
        file=sys.stderr,
        flush=True,
    )


async def _demo(service: Service, outcome: dict[str, int], exit_after: bool) -> None:
    from src.local.demo import run_demo

    results = await asyncio.to_thread(run_demo, dict(os.environ))
    print("\n=== demo executions ===", file=sys.stderr)
    for result in results:
        print(result.line(), file=sys.stderr)
    outcome["code"] = 0 if all(r.as_expected for r in results) else 1
    print(
        f"=== {'all as expected' if outcome['code'] == 0 else 'NOT as expected'} ===\n",
        file=sys.stderr,
    )
    if exit_after:
        service.request_stop("demo finished")


if __name__ == "__main__":
    app()
