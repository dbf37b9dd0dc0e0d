"""What the images must be, checked without building them (no Docker engine here):
pinned bases, multi-stage, a numeric non-root user, exec-form HEALTHCHECK and CMD, the
files the service reads at run time, and a build context without .venv or .git.
hadolint (`make lint`) checks the rest of the Dockerfiles' practice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.containers.container_files import ROOT, in_build_context, instructions, stages
from tests.support.service_process import free_port

DOCKERFILES = ("Dockerfile", "Dockerfile.dev")
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}$")


def _base_images(dockerfile: str) -> list[str]:
    return [i.arguments.split()[0] for i in instructions(dockerfile) if i.keyword == "FROM"]


def _exec_form(arguments: str) -> list[str]:
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_base_is_pinned_by_a_precise_tag_and_a_digest(dockerfile: str) -> None:
    bases = _base_images(dockerfile)
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(PINNED.match(base) for base in bases), bases


def test_both_dockerfiles_use_one_base_and_the_makefiles_uv() -> None:
    bases = {base for dockerfile in DOCKERFILES for base in _base_images(dockerfile)}
    assert len(bases) == 1, bases
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv is not None
    for dockerfile in DOCKERFILES:
        args = [i.arguments for i in instructions(dockerfile) if i.keyword == "ARG"]
        assert f"UV_VERSION={makefile_uv.group(1)}" in args, dockerfile


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_runtime_stage_runs_as_a_numeric_non_root_user_in_exec_form(dockerfile: str) -> None:
    runtime = stages(dockerfile)[-1]
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) >= 10000 and int(gid) >= 10000
    commands = [i.arguments for i in runtime if i.keyword in ("CMD", "ENTRYPOINT")]
    assert commands and all(_exec_form(command) for command in commands)
    assert not [i for i in runtime if i.keyword == "RUN" and "pip install" in i.arguments], (
        "tools are installed in the build stage only"
    )


def _healthcheck(dockerfile: str) -> str:
    [check] = [i.arguments for i in stages(dockerfile)[-1] if i.keyword == "HEALTHCHECK"]
    return check


def test_the_service_image_healthcheck_is_exec_form_on_port_and_health_live() -> None:
    check = _healthcheck("Dockerfile")
    options, _, command = check.partition(" CMD ")
    assert all(option.startswith("--") for option in options.split())
    argv = _exec_form(command)
    assert argv[0] == "python" and "/health/live" in argv[-1] and "PORT" in argv[-1]
    assert _healthcheck("Dockerfile.dev") == "NONE"  # compose checks each of its services


@pytest.fixture
def health_server() -> Iterator[int]:
    """A stand-in admin API on 127.0.0.1 answering /health/live with 200, anything else 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health/live" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_healthcheck_command_passes_on_a_live_api_and_fails_without_one(
    health_server: int,
) -> None:
    argv = _exec_form(_healthcheck("Dockerfile").partition(" CMD ")[2])

    def run(port: int) -> int:
        command = [sys.executable, *argv[1:]]
        env = {"PORT": str(port), "PATH": ""}
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    assert run(health_server) == 0
    assert run(free_port()) != 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_what_the_images_copy_is_in_the_build_context(dockerfile: str) -> None:
    sources = [
        source
        for i in instructions(dockerfile)
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
        for source in i.arguments.split()[:-1]
    ]
    # the service reads the state machines and the template's table definitions at run time
    assert {"src", "state-machines", "infra", "pyproject.toml", "uv.lock"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert in_build_context(source), f"{source} is excluded by .dockerignore"
        if (ROOT / source).is_dir():
            files = [p for p in (ROOT / source).rglob("*") if p.is_file()]
            sent = [p for p in files if in_build_context(str(p.relative_to(ROOT)))]
            assert sent, source


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/bin/uv",
        ".pytest_tmp/x/service.log",
        ".pytest_cache/v/cache",
        "src/__pycache__/main.cpython-311.pyc",
        "src/domain/__pycache__/export_job.cpython-311.pyc",
        "tests/unit/test_export_job.py",
        "bench/results/small_files.json",
        "docs/console.png",
        ".env",
        "docker-compose.yml",
    ],
)
def test_the_build_context_leaves_out_what_the_images_do_not_need(path: str) -> None:
    assert not in_build_context(path)


def test_the_build_context_keeps_the_sources() -> None:
    for path in ("src/main.py", "src/domain/export_job.py", "infra/template.yaml"):
        assert in_build_context(path), path
    assert in_build_context("state-machines/export-job.asl.json")
