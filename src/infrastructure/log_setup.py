"""structlog, configured once: context per message, secrets masked, JSON lines or a
human-readable console format (LOG_FORMAT=json|console; default: console on a terminal,
JSON otherwise). The standard library's records (uvicorn, the AWS SDK, aiohttp) go
through the same chain, so no library line can print a task token or a URL query."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from src.domain.task_token import TaskToken, mask_token
from src.infrastructure.redaction import redact_log_text, redact_text

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


def mask_library_text(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A library's message is free text (botocore prints request parameters as dicts)."""
    for key in ("event", "exception"):
        if isinstance(event_dict.get(key), str):
            event_dict[key] = redact_log_text(event_dict[key])
    return event_dict


LOG_FORMATS = ("json", "console")
_HANDLER_NAME = "export-service"


def log_format(stream: TextIO, requested: str | None = None) -> str:
    """LOG_FORMAT, or console on a terminal and JSON otherwise."""
    chosen = (requested or os.environ.get("LOG_FORMAT") or "").strip().lower()
    if chosen:
        if chosen not in LOG_FORMATS:
            raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {chosen!r}")
        return chosen
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure_logging(
    level: str = "info", stream: TextIO | None = None, fmt: str | None = None
) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    stream = stream or sys.stdout
    renderer: Any
    if log_format(stream, fmt) == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        isatty = getattr(stream, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_secrets,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Every standard-library record (uvicorn, botocore, aiohttp, ...) through the same
    # processors, masking included, to the same stream.
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, mask_library_text],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    detach_logging()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        library = logging.getLogger(name)
        library.handlers.clear()  # uvicorn's own handlers would print around the masking
        library.propagate = True
    # Libraries log request details at DEBUG. The AWS SDK's debug lines dump whole request
    # bodies, where a task token can sit under an update expression's placeholder
    # (":a13") that no filter can recognise: they are never logged, at any level.
    quiet = max(numeric, logging.WARNING)
    for sdk in ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(sdk).setLevel(quiet if numeric > logging.DEBUG else logging.INFO)
    for noisy in ("aiohttp", "werkzeug"):
        logging.getLogger(noisy).setLevel(quiet if numeric > logging.DEBUG else numeric)


def detach_logging() -> None:
    """Remove the standard-library handler configure_logging added (tests)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        root.setLevel(logging.WARNING)
