"""Reading the container files without a Docker engine: Dockerfile instructions, the build
context a .dockerignore leaves, and docker-compose.yml with its environment resolved."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # continuation lines joined, comments dropped
    line: int


def instructions(dockerfile: str) -> list[Instruction]:
    """The Dockerfile's instructions, in order (line continuations joined)."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate((ROOT / dockerfile).read_text().splitlines(), start=1):
        text = raw.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if pending and text.startswith("#"):
            continue  # a comment inside a continued instruction
        start = start if pending else number
        continued = text.endswith("\\")
        pending.append(text.removesuffix("\\").strip())
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    return found


def stages(dockerfile: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each starts with its FROM)."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions(dockerfile):
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


# ---- .dockerignore, as Docker reads it: last matching pattern wins, a pattern matching a
# parent directory matches everything below it, `**` spans directories ---------------------


def _pattern(text: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(text):
        if text.startswith("**/", index):
            out, index = out + "(.*/)?", index + 3
        elif text.startswith("**", index):
            out, index = out + ".*", index + 2
        elif text[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif text[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(text[index]), index + 1
    return re.compile(out + r"\Z")


@cache
def _ignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        include = text.startswith("!")
        cleaned = text.removeprefix("!").strip().strip("/")
        rules.append((include, _pattern(cleaned)))
    return tuple(rules)


def in_build_context(path: str) -> bool:
    """Whether `path` (relative to the repository) is sent to the Docker build."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    kept = True
    for include, pattern in _ignore_rules():
        if any(pattern.match(prefix) for prefix in prefixes):
            kept = include
    return kept


# ---- docker-compose.yml -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    """docker-compose.yml as YAML reads it (anchors and merge keys resolved)."""
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


_DEFAULTED = re.compile(r"\$\{(\w+):?-([^}]*)\}")


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, `${NAME:-default}` read as its default."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): _DEFAULTED.sub(r"\2", "" if v is None else str(v)) for k, v in raw.items()}


def seconds(duration: str | int | float) -> float:
    """A compose duration (`1m30s`, `45s`, `500ms`) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)
