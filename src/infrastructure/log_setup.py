"""structlog, configured once: JSON lines, context per message, secrets masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from src.domain.task_token import TaskToken, mask_token
from src.infrastructure.redaction import redact_text

_TOKEN_KEYS = frozenset({"task_token", "taskToken", "token"})


def _mask(value: Any) -> Any:
    if isinstance(value, TaskToken):
        return value.masked
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _mask_field(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def _mask_field(key: str, value: Any) -> Any:
    if key in _TOKEN_KEYS and isinstance(value, str) and value:
        return mask_token(value)
    return _mask(value)


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Task tokens become `AAAAKgAA...********...AAAA`; URL query strings are dropped."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask_field(key, value)
    return event_dict


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            structlog.processors.JSONRenderer(default=str),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries log request details (URLs with query strings) at DEBUG: keep them quiet.
    for noisy in ("botocore", "aiobotocore", "aiohttp", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
