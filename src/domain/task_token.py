"""The workflow's task token: a secret that must never be printed whole."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

_VISIBLE_HEAD = 8
_VISIBLE_TAIL = 4


def mask_token(raw: str) -> str:
    """`AAAAKgAA...********...AAAA`: enough to correlate, never enough to use."""
    if len(raw) <= _VISIBLE_HEAD + _VISIBLE_TAIL:
        return "********"
    return f"{raw[:_VISIBLE_HEAD]}...********...{raw[-_VISIBLE_TAIL:]}"


@dataclass(frozen=True, slots=True)
class TaskToken:
    """A Step Functions task token. `str` and `repr` are masked; `reveal()` is explicit."""

    _value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self._value:
            raise ValueError("a task token cannot be empty")

    def reveal(self) -> str:
        return self._value

    def digest(self) -> str:
        """A short, stable name for the token (sha256 prefix): safe to store and log as a
        record of *which* workflow was answered, useless for answering it."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:24]

    @property
    def masked(self) -> str:
        return mask_token(self._value)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"TaskToken({self.masked})"
