"""State machine definitions: placeholders (temporary: the renderer and validator replace this)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class Placeholder:
    name: str


def segments(text: str) -> list[str | Placeholder]:
    """The text split into literal strings and placeholders, in order."""
    parts: list[str | Placeholder] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[position : match.start()])
        parts.append(Placeholder(match.group(1)))
        position = match.end()
    parts.append(text[position:])
    return [part for part in parts if part != ""]
