"""EmbeddedStack: emulator + provisioned resources + sandbox Export API, in one process.

Used by `serve --embedded`, `demo`, the tests and the benchmarks. Never by production."""

from __future__ import annotations

import os
from types import TracebackType

from src.local.emulator import EmbeddedAws
from src.local.provision import Resources, provision
from src.local.sandbox import SandboxExportApi

# Settings that make the embedded default quick to watch; explicit env vars still win.
EMBEDDED_DEFAULTS = {
    "POLLING_INTERVAL_MS": "500",
    "SQS_WAIT_TIME_SECONDS": "2",
    "EXPORT_API_TIMEOUT": "5000",
}


class EmbeddedStack:
    def __init__(
        self,
        *,
        name_prefix: str = "",
        task_timeout_seconds: int | None = None,
        heartbeat_seconds: int | None = None,
    ) -> None:
        self.aws = EmbeddedAws()
        self.sandbox = SandboxExportApi()
        self._prefix = name_prefix
        self._task_timeout = task_timeout_seconds
        self._heartbeat = heartbeat_seconds
        self.resources: Resources | None = None

    def start(self) -> EmbeddedStack:
        self.aws.start()
        self.sandbox.start()
        self.resources = provision(
            self.aws.endpoint_url,
            name_prefix=self._prefix,
            task_timeout_seconds=self._task_timeout,
            heartbeat_seconds=self._heartbeat,
        )
        return self

    def stop(self) -> None:
        self.sandbox.stop()
        self.aws.stop()

    def provision(
        self,
        name_prefix: str,
        *,
        task_timeout_seconds: int | None = None,
        heartbeat_seconds: int | None = None,
        max_concurrency: int | None = None,
    ) -> Resources:
        """Another isolated stack of the template (queues, tables, bucket, topic, state
        machines) in the same emulator (tests use one per module so services never share
        queues). Unset values keep the template's defaults."""
        return provision(
            self.aws.endpoint_url,
            name_prefix=name_prefix,
            task_timeout_seconds=task_timeout_seconds,
            heartbeat_seconds=heartbeat_seconds,
            max_concurrency=max_concurrency,
        )

    def env(self, resources: Resources | None = None) -> dict[str, str]:
        """Environment for a service (in this process or a child) using this stack."""
        resources = resources or self.resources
        assert resources is not None, "start() first"
        return {
            **EMBEDDED_DEFAULTS,
            **resources.as_env(),
            "AWS_ENDPOINT": self.aws.endpoint_url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "embedded",
            "AWS_SECRET_ACCESS_KEY": "embedded",
            "EXPORT_API_BASE_URL": self.sandbox.base_url,
            "DOWNLOAD_ALLOWED_NETWORKS": "127.0.0.1/32",  # the sandbox's files, on loopback
        }

    def apply_env(self) -> None:
        """Export env() into this process, keeping values the user set explicitly."""
        for key, value in self.env().items():
            if key in EMBEDDED_DEFAULTS and key in os.environ:
                continue
            os.environ[key] = value

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
