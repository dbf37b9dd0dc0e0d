"""Secrets out of text: presigned query strings and task tokens."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?[^\s\"'<>]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """scheme://host/path, without the query string (where presigned URLs keep secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    suffix = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}{suffix}"


def redact_text(text: str) -> str:
    return _URL_QUERY.sub(r"\1?<redacted>", text)


_TOKEN_FIELD = re.compile(r'("taskToken"\s*:\s*")([^"]*)(")')
# Also as Python reprs and keyword lists print them (the AWS SDK's debug lines):
# 'taskToken': '...', taskToken=..., "task_token": "...", and JSON inside JSON strings
# (\\"taskToken\\": \\"...\\")
_Q = r"""(?:\\*["'])"""  # a quote, maybe escaped (JSON inside a JSON string)
_TOKEN_ANY = re.compile(
    rf"""((?:taskToken|task_token|TaskToken){_Q}?\s*[:=]\s*"""
    rf"""(?:\{{\s*{_Q}S{_Q}\s*:\s*)?{_Q}?)"""  # DynamoDB's {"S": "..."} too
    r"""([^"'\\\s,{}&)]+)"""
)


def mask_message_body(body: str) -> str:
    """A queue message as an operator may see it: task tokens masked, URL queries gone.
    Works on bodies that are not valid JSON too (those are what lands in a DLQ)."""
    from src.domain.task_token import mask_token

    masked = _TOKEN_FIELD.sub(lambda m: m.group(1) + mask_token(m.group(2)) + m.group(3), body)
    return redact_text(masked)


def redact_log_text(text: str) -> str:
    """Free text from a library's log record: task tokens in any quoting masked, URL
    query strings dropped."""
    from src.domain.task_token import mask_token

    if "oken" in text:
        text = _TOKEN_ANY.sub(lambda m: m.group(1) + mask_token(m.group(2)), text)
    return redact_text(text)
