"""Plain moto (no Step Functions patches) in a child process: `python -m src.local.emulator
--plain`. The patches are process-global, and the test process holds the patched session
emulator, so plain moto can only run in another process."""

from __future__ import annotations

import collections
import queue
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType

from src.local.emulator import READY_PREFIX
from tests.support.service_process import ROOT


class PlainEmulator:
    """A plain-moto emulator child; `endpoint_url` once started. A context manager.

    The child's stdout and stderr are one pipe, drained for the child's whole life (a full
    pipe would block it); the last lines are kept for error messages (`output_tail`).
    """

    def __init__(self, start_timeout: float = 30.0, stop_timeout: float = 10.0) -> None:
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._endpoint_url: str | None = None

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("PlainEmulator is not started")
        return self._endpoint_url

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("PlainEmulator is not started")
        return self._proc.pid

    def output_tail(self) -> str:
        return "".join(self._tail)

    def start(self) -> PlainEmulator:
        if self._proc is not None:
            return self
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "src.local.emulator", "--plain", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(
            target=self._drain, name=f"plain-emulator-{self._proc.pid}", daemon=True
        )
        self._reader.start()
        try:
            self._endpoint_url = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._tail.append(line)
            self._lines.put(line)
        self._lines.put(None)  # end of output: the child exited

    def _wait_ready(self) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"plain emulator not ready in {self._start_timeout:.0f}s; its output:\n"
                    f"{self.output_tail()}"
                )
            try:
                line = self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self._proc.wait(timeout=5)
                raise RuntimeError(
                    f"plain emulator exited with {code} before it was ready; its output:\n"
                    f"{self.output_tail()}"
                )
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after `stop_timeout`; the exit code (None if never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> PlainEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
