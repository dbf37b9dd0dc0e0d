from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from src.domain.task_token import TaskToken
from src.infrastructure.log_setup import configure_logging, detach_logging, mask_secrets
from src.infrastructure.redaction import redact_text, redact_url
from tests.unit.builders import RAW_TOKEN

MASKED = "AAAAKgAA...********...AAAA"
PRESIGNED = (
    "https://bucket.s3.amazonaws.com/exports/file.csv"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240501"
    "&X-Amz-Signature=deadbeefcafe0123456789"
)


def masked(**event: Any) -> dict[str, Any]:
    return dict(mask_secrets(None, "info", dict(event)))


def test_task_token_value_is_masked_under_any_key():
    assert masked(whatever=TaskToken(RAW_TOKEN))["whatever"] == MASKED


@pytest.mark.parametrize("key", ["task_token", "taskToken", "token"])
def test_token_string_fields_are_masked(key: str):
    assert masked(**{key: RAW_TOKEN})[key] == MASKED


def test_presigned_url_loses_its_query_string():
    out = masked(url=PRESIGNED)["url"]
    assert out == "https://bucket.s3.amazonaws.com/exports/file.csv?<redacted>"
    assert "X-Amz-Signature" not in out
    assert "deadbeef" not in out


def test_one_event_with_every_kind_of_secret_comes_out_clean():
    out = masked(
        event=f"download failed for {PRESIGNED}",
        token_value=TaskToken(RAW_TOKEN),
        task_token=RAW_TOKEN,
        url=PRESIGNED,
    )
    text = json.dumps(out)
    assert RAW_TOKEN not in text
    assert "X-Amz-Signature" not in text
    assert "deadbeef" not in text
    assert out["token_value"] == out["task_token"] == MASKED
    assert (
        out["event"]
        == "download failed for https://bucket.s3.amazonaws.com/exports/file.csv?<redacted>"
    )


def test_nested_values_are_masked():
    out = masked(detail={"taskToken": RAW_TOKEN, "urls": [PRESIGNED], "t": (TaskToken(RAW_TOKEN),)})
    assert out["detail"]["taskToken"] == MASKED
    assert out["detail"]["urls"] == ["https://bucket.s3.amazonaws.com/exports/file.csv?<redacted>"]
    assert out["detail"]["t"] == [MASKED]


def test_other_fields_are_untouched():
    assert masked(count=3, name="job", ok=True, none=None, token="") == {
        "count": 3,
        "name": "job",
        "ok": True,
        "none": None,
        "token": "",
    }


def test_redact_text_keeps_urls_without_query_and_the_text_around():
    text = f"GET {PRESIGNED} -> 403; see https://docs.example/x for help"
    assert redact_text(text) == (
        "GET https://bucket.s3.amazonaws.com/exports/file.csv?<redacted> -> 403;"
        " see https://docs.example/x for help"
    )


def test_redact_text_handles_quoted_urls_and_upper_case_schemes():
    assert (
        redact_text(f'"{PRESIGNED}"')
        == '"https://bucket.s3.amazonaws.com/exports/file.csv?<redacted>"'
    )
    assert redact_text("HTTPS://H/p?sig=1") == "HTTPS://H/p?<redacted>"


def test_redact_url_drops_query_and_credentials():
    assert redact_url(PRESIGNED) == "https://bucket.s3.amazonaws.com/exports/file.csv?<redacted>"
    assert redact_url("https://user:pw@host.example/p") == "https://host.example/p"
    assert redact_url("https://host.example/p") == "https://host.example/p"


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    structlog.configure(cache_logger_on_first_use=False)
    yield buffer
    structlog.reset_defaults()
    detach_logging()


def test_configured_logging_writes_masked_json_lines(log_buffer: io.StringIO):
    structlog.get_logger("test").info(
        "callback sent", task_token=TaskToken(RAW_TOKEN), taskToken=RAW_TOKEN, url=PRESIGNED
    )
    [line] = [json.loads(text) for text in log_buffer.getvalue().splitlines()]
    assert line["task_token"] == line["taskToken"] == MASKED
    assert line["url"].endswith("?<redacted>")
    assert line["level"] == "info"
    assert RAW_TOKEN not in log_buffer.getvalue()
    assert "X-Amz-Signature" not in log_buffer.getvalue()


def test_context_variables_are_masked_too(log_buffer: io.StringIO):
    with structlog.contextvars.bound_contextvars(task_token=RAW_TOKEN):
        structlog.get_logger("test").info("working")
    assert RAW_TOKEN not in log_buffer.getvalue()
    assert MASKED in log_buffer.getvalue()


def test_library_records_go_through_the_same_masking_as_json(log_buffer: io.StringIO):
    import logging

    logging.getLogger("botocore.endpoint").warning(
        "Making request with params: %s", {"body": {"taskToken": RAW_TOKEN}, "url": PRESIGNED}
    )
    logging.getLogger("uvicorn.error").warning("GET %s", PRESIGNED)
    logging.getLogger("aiohttp.client").warning('body {"taskToken": "%s"}', RAW_TOKEN)

    lines = [json.loads(text) for text in log_buffer.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == [
        "botocore.endpoint",
        "uvicorn.error",
        "aiohttp.client",
    ]
    assert all(line["level"] == "warning" and "timestamp" in line for line in lines)
    text = log_buffer.getvalue()
    assert RAW_TOKEN not in text
    assert "X-Amz-Signature" not in text
    assert text.count(MASKED) == 2


def test_log_format_console_is_human_readable_and_masked():
    buffer = io.StringIO()
    configure_logging("info", stream=buffer, fmt="console")
    structlog.configure(cache_logger_on_first_use=False)
    try:
        structlog.get_logger("t").info("callback sent", task_token=TaskToken(RAW_TOKEN))
        import logging

        logging.getLogger("uvicorn.error").warning("GET %s", PRESIGNED)
    finally:
        structlog.reset_defaults()
        detach_logging()
    text = buffer.getvalue()
    first, second = text.splitlines()[:2]
    assert "callback sent" in first and MASKED in first and not first.startswith("{")
    assert "GET https://bucket.s3.amazonaws.com/exports/file.csv?<redacted>" in second
    assert RAW_TOKEN not in text


def test_log_format_defaults_to_console_on_a_terminal_and_json_otherwise(monkeypatch):
    from src.infrastructure.log_setup import log_format

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert log_format(Terminal()) == "console"
    assert log_format(io.StringIO()) == "json"
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert log_format(Terminal()) == "json"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        log_format(io.StringIO(), "xml")


@pytest.mark.parametrize(
    "text",
    [
        "params {'taskToken': '%s'}",
        'body {"taskToken": "%s"}',
        'body "{\\\\"taskToken\\\\": \\\\"%s\\\\"}"',  # JSON inside a JSON string
        '"taskToken": {"S": "%s"}',  # DynamoDB's typed form
        "Action=SendTaskSuccess&taskToken=%s&output=x",
    ],
)
def test_tokens_in_library_text_are_masked_in_every_quoting(text: str):
    from src.infrastructure.redaction import redact_log_text

    masked_text = redact_log_text(text % RAW_TOKEN)
    assert RAW_TOKEN not in masked_text and MASKED in masked_text
