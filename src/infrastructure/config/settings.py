"""Settings, under the original service's environment variable names."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_instance_id() -> str:
    """Lease owner name: unique per process, readable in the table."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_NEST_LEVELS = {"log": "info", "warn": "warning", "verbose": "debug", "fatal": "critical"}
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Settings(BaseSettings):
    """Every field maps to the environment variable of the same name in upper case."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # AWS
    aws_region: str = "us-east-1"
    aws_endpoint: str | None = None  # LocalStack or the embedded emulator; unset = real AWS
    sqs_export_jobs_url: str = ""
    sqs_download_tasks_url: str = ""
    sqs_max_messages: int = Field(10, ge=1, le=10)
    sqs_wait_time_seconds: int = Field(20, ge=0, le=20)
    # The lease on every piece of work (a message, a file): set on receive and renewed
    # every third of it while the work is alive, so a dead replica's work is visible
    # again after about this long. (The original's default was 900.)
    sqs_visibility_timeout: int = Field(60, ge=3, le=43_200)
    sqs_retry_backoff_seconds: float = Field(2, ge=0, description="first retry after a failure")
    sqs_retry_max_backoff_seconds: int = Field(60, ge=1, le=43_200)
    dynamodb_table_name: str = "export-job-state"
    dynamodb_tasks_table_name: str = "export-job-tasks"
    s3_bucket_name: str = ""
    s3_prefix: str = "exports/"

    # Export API
    export_api_base_url: str = "http://localhost:8081"
    export_api_timeout: int = Field(30_000, ge=1, description="milliseconds")
    export_api_max_retries: int = Field(3, ge=0)

    # Processing
    max_concurrent_jobs: int = Field(10, ge=1)
    max_file_size_mb: int = Field(1024, ge=1)
    polling_interval_ms: int = Field(5_000, ge=1, description="first interval")
    polling_max_interval_ms: int = Field(60_000, ge=1, description="backoff cap")
    polling_timeout_ms: int = Field(3_600_000, ge=1, description="overall deadline")
    max_polling_attempts: int = Field(120, ge=1)
    poll_lease_seconds: int = Field(60, ge=1)
    poller_tick_ms: int = Field(1_000, ge=10)
    poller_idle_tick_ms: int = Field(
        5_000, ge=10, description="the tick grows to this while nothing is due"
    )
    poller_batch_size: int = Field(25, ge=1)
    poller_parallel_rounds: int = Field(4, ge=1, description="rounds that may overlap")
    dispatch_batch_size: int = Field(10, ge=1, le=10)
    # A ready export is dispatched in chunks of this many files, each after one write of
    # the job's dispatch cursor (written ahead); a dispatcher that dies between the two
    # leaves at most one chunk unsent, which the reaper sends (never one sent twice).
    dispatch_chunk_size: int = Field(100, ge=1, le=1_000)
    dispatch_lease_seconds: float = Field(30, ge=1, description="renewed every third")
    dispatch_max_attempts: int = Field(5, ge=1, description="claims without progress")
    dispatch_resume_interval_seconds: float = Field(
        10, ge=0, description="how often unfinished dispatches are looked for; 0 disables"
    )
    # An export listing more files fails (ExportFailed) before anything of it is written.
    max_files_per_job: int = Field(10_000, ge=1)
    download_concurrency: int = Field(32, ge=1)
    download_timeout_ms: int = Field(300_000, ge=1)
    download_max_attempts: int = Field(3, ge=1)
    download_read_timeout_seconds: float = Field(30, gt=0, description="no byte this long: stalled")
    # A URL expiring within this margin is replaced by a fresh one before it is used.
    url_refresh_margin_seconds: float = Field(60, ge=0)
    max_waiting_workflows: int = Field(10, ge=0, le=50, description="per job, besides the first")
    # Comma-separated hosts and CIDR networks a download may reach although they are
    # private or loopback (the embedded sandbox sets 127.0.0.1/32).
    download_allowed_networks: str = ""
    download_max_redirects: int = Field(5, ge=0, le=5)
    s3_multipart_threshold_mb: int = Field(8, ge=5)
    s3_part_size_mb: int = Field(8, ge=5)
    s3_parts_in_flight: int = Field(2, ge=1)
    heartbeat_interval_seconds: float = Field(
        60, ge=0, description="below the state machine's HeartbeatSeconds; 0 disables"
    )
    shutdown_grace_seconds: float = Field(30, ge=0)
    reaper_interval_seconds: float = Field(30, ge=0, description="0 disables the reaper")
    callback_lease_seconds: float = Field(
        300, ge=1, description="who answers a workflow owns it this long (covers retries)"
    )
    callback_max_attempts: int = Field(10, ge=1)
    download_stall_seconds: float = Field(600, ge=1)
    job_timeout_seconds: float = Field(86_400, ge=1)
    instance_id: str = Field(default_factory=_default_instance_id)

    # Admin API and logging
    port: int = Field(3000, ge=1, le=65535)
    # 127.0.0.1 by default: the container image sets 0.0.0.0 (its port is published).
    admin_host: str = "127.0.0.1"
    # Comma-separated keys: full access, and read-only. Kept only as digests in memory.
    admin_api_keys: str = ""
    admin_readonly_keys: str = ""
    # No key needed at all: for local use only, never where the port is reachable.
    admin_auth_disabled: bool = False
    metrics_public: bool = False  # /metrics without a key (a scraper on a private network)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] | None = None  # unset: console on a terminal

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        # the original (NestJS) service's level names, so its deployments start as they are
        return _NEST_LEVELS.get(value, value)

    @model_validator(mode="after")
    def _auth_only_disabled_locally(self) -> Settings:
        if self.admin_auth_disabled and self.admin_host not in _LOOPBACK:
            raise ValueError(
                "ADMIN_AUTH_DISABLED=true needs ADMIN_HOST on loopback (127.0.0.1, ::1 or "
                f"localhost), not {self.admin_host!r}: without keys the API is open to all"
            )
        return self

    @property
    def export_api_timeout_seconds(self) -> float:
        return self.export_api_timeout / 1000

    @property
    def polling_interval_seconds(self) -> float:
        return self.polling_interval_ms / 1000

    @property
    def download_timeout_seconds(self) -> float:
        return self.download_timeout_ms / 1000

    @property
    def work_lease_seconds(self) -> float:
        return float(self.sqs_visibility_timeout)


class SettingsError(Exception):
    """Settings that cannot work: the message names the environment variables."""


# What `serve` cannot run without, and what each is (the message an operator sees).
REQUIRED_TO_SERVE = {
    "sqs_export_jobs_url": "the URL of the export-job queue the state machine sends to",
    "sqs_download_tasks_url": "the URL of the service's own download-task queue",
    "s3_bucket_name": "the bucket the exported files are copied into",
}
_URL_SETTINGS = ("sqs_export_jobs_url", "sqs_download_tasks_url", "export_api_base_url")
# Never echoed back in an error (their values are secrets).
_SECRET_SETTINGS = frozenset({"aws_secret_access_key", "aws_session_token"})


def load_settings(required: Iterable[str] = ()) -> Settings:
    """Settings from the environment, or SettingsError with one line naming each
    variable that is missing or invalid."""
    try:
        settings = Settings()  # type: ignore[call-arg]  # every field comes from the environment
    except ValidationError as err:
        problems = []
        for error in err.errors():
            if not error["loc"]:  # a rule over several settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            shown = "" if field in _SECRET_SETTINGS else f" (got {error.get('input')!r})"
            problems.append(f"{field.upper()}: {error['msg']}{shown}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    problems = [
        f"{name.upper()} is not set ({REQUIRED_TO_SERVE.get(name, 'required')})"
        for name in required
        if not str(getattr(settings, name) or "").strip()
    ]
    problems += [
        f"{name.upper()} must be an http(s) URL (got {getattr(settings, name)!r})"
        for name in _URL_SETTINGS
        if getattr(settings, name)
        and not str(getattr(settings, name)).startswith(("http://", "https://"))
    ]
    if problems:
        raise SettingsError("; ".join(problems))
    return settings
