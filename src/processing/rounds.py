"""The periodic rounds the service runs, as plain callables for `Periodic`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from src.application.commands import (
    PollDueJobsCommand,
    ReapCommand,
    ResumeDispatchCommand,
    SendHeartbeatsCommand,
)
from src.application.use_cases.dispatch_download_tasks import DispatchDownloadTasks
from src.application.use_cases.poll_export_status import PollExportStatus
from src.application.use_cases.reap_stuck_jobs import ReapStuckJobs
from src.application.use_cases.send_heartbeats import SendHeartbeats


def polling_round(poll: PollExportStatus, owner: str, batch: int) -> Callable[[], Awaitable[int]]:
    command = PollDueJobsCommand(owner=owner, limit=batch)

    async def round_() -> int:
        return (await poll.execute(command)).claimed

    return round_


def dispatch_round(
    dispatch: DispatchDownloadTasks, owner: str, batch: int
) -> Callable[[], Awaitable[int]]:
    command = ResumeDispatchCommand(owner=owner, limit=batch)

    async def round_() -> int:
        return await dispatch.resume(command)

    return round_


def heartbeat_round(heartbeats: SendHeartbeats, batch: int) -> Callable[[], Awaitable[int]]:
    command = SendHeartbeatsCommand(limit=batch)

    async def round_() -> int:
        return (await heartbeats.execute(command)).sent

    return round_


def reaper_round(reaper: ReapStuckJobs, owner: str) -> Callable[[], Awaitable[int]]:
    command = ReapCommand(owner=owner)

    async def round_() -> int:
        report = await reaper.execute(command)
        return report.callbacks_retried + report.jobs_redispatched + report.jobs_finished

    return round_
