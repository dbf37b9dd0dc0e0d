from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from src.domain.task_token import TaskToken
from src.processing.messages import ExportJobMessage, describe_validation_error
from tests.unit.builders import JOB_ID, RAW_TOKEN

MINIMAL: dict[str, Any] = {"jobId": JOB_ID, "exportId": "exp-1", "userId": "user-1"}


def parse(body: dict[str, Any]) -> ExportJobMessage:
    """As the consumer does: straight from the SQS body text."""
    return ExportJobMessage.model_validate_json(json.dumps(body))


def with_(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in MINIMAL.items() if k != field}


def reason_for(body: dict[str, Any] | str) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(ValidationError) as caught:
        ExportJobMessage.model_validate_json(text)
    return describe_validation_error(caught.value)


# --- valid messages -------------------------------------------------------------------


def test_minimal_message_becomes_a_command_without_token():
    command = parse(MINIMAL).to_command()
    assert (command.job_id, command.export_id, command.user_id) == (JOB_ID, "exp-1", "user-1")
    assert command.metadata == {}
    assert command.task_token is None


def test_full_message_keeps_metadata_and_token():
    metadata = {"requestedBy": "nightly", "format": "csv", "nested": {"a": [1, 2]}}
    command = parse(with_(metadata=metadata, taskToken=RAW_TOKEN)).to_command()
    assert command.metadata == metadata
    assert command.task_token == TaskToken(RAW_TOKEN)


@pytest.mark.parametrize(
    "job_id",
    [
        "123E4567-E89B-12D3-A456-426614174000",
        "123e4567-E89B-12d3-a456-426614174000",
        "00000000-0000-0000-0000-000000000000",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",  # version 1
    ],
)
def test_job_id_any_case_any_version_is_stored_exactly_as_sent(job_id: str):
    assert parse(with_(jobId=job_id)).to_command().job_id == job_id


def test_metadata_absent_is_an_empty_object():
    assert parse(MINIMAL).metadata == {}


@pytest.mark.parametrize("token", ["", None])
def test_empty_or_null_token_means_no_token(token: str | None):
    assert parse(with_(taskToken=token)).to_command().task_token is None


def test_callback_url_and_unknown_fields_are_ignored():
    message = parse(with_(callbackUrl="https://example.com/cb", priority="high", extra={"x": 1}))
    assert message.to_command() == parse(MINIMAL).to_command()


@pytest.mark.parametrize("url", [None, "mailto:ops@example.com", "s3://bucket/key", "urn:x:y"])
def test_callback_url_of_any_scheme_is_accepted_and_ignored(url: str | None):
    assert parse(with_(callbackUrl=url)).to_command() == parse(MINIMAL).to_command()


@pytest.mark.parametrize("url", [42, "", "not a url", "example.com/cb", "https://a b", {}])
def test_callback_url_that_does_not_parse_as_a_url_is_invalid(url: Any):
    assert "callbackUrl" in reason_for(with_(callbackUrl=url))


# --- invalid messages -----------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, [], ["a"], "csv", 3])
def test_metadata_that_is_not_an_object_is_invalid(metadata: Any):
    assert "metadata" in reason_for(with_(metadata=metadata))


@pytest.mark.parametrize("field", ["jobId", "exportId", "userId"])
def test_missing_required_field_is_invalid(field: str):
    assert field in reason_for(without(field))


@pytest.mark.parametrize("field", ["exportId", "userId"])
@pytest.mark.parametrize("value", ["", None, 123, ["x"], {"id": "x"}, True])
def test_empty_or_non_string_ids_are_invalid(field: str, value: Any):
    assert field in reason_for(with_(**{field: value}))


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "not-a-uuid",
        "123e4567e89b12d3a456426614174000",  # no hyphens
        "{123e4567-e89b-12d3-a456-426614174000}",
        "123e4567-e89b-12d3-a456-42661417400",  # one digit short
        "123e4567-e89b-12d3-a456-4266141740000",
        "g23e4567-e89b-12d3-a456-426614174000",
        " 123e4567-e89b-12d3-a456-426614174000",
        123,
        None,
    ],
)
def test_job_id_that_is_not_a_hyphenated_uuid_is_invalid(job_id: Any):
    assert "jobId" in reason_for(with_(jobId=job_id))


@pytest.mark.parametrize("field", ["exportId", "userId"])
@pytest.mark.parametrize("value", ["exp\x00ort", "exp\tort", "exp\nort", "\x1b[31mred", "end\x7f"])
def test_control_characters_in_ids_are_invalid(field: str, value: str):
    assert field in reason_for(with_(**{field: value}))


@pytest.mark.parametrize("field", ["exportId", "userId"])
def test_trailing_newline_in_ids_is_invalid(field: str):
    assert field in reason_for(with_(**{field: "exp-1\n"}))


@pytest.mark.parametrize("field", ["exportId", "userId"])
@pytest.mark.parametrize("value", ["exp\x85ort", "\x9b31mred"])  # C1 controls: NEL, CSI
def test_c1_control_characters_in_ids_are_invalid(field: str, value: str):
    assert field in reason_for(with_(**{field: value}))


def test_trailing_newline_after_a_uuid_job_id_is_invalid():
    assert "jobId" in reason_for(with_(jobId=JOB_ID + "\n"))


@pytest.mark.parametrize(
    "token", ["has space", "tab\there", " leading", "trailing ", "line\nbreak", "é-not-ascii"]
)
def test_token_with_whitespace_or_non_ascii_is_invalid(token: str):
    assert "taskToken" in reason_for(with_(taskToken=token))


def test_token_with_trailing_newline_is_invalid():
    assert "taskToken" in reason_for(with_(taskToken=RAW_TOKEN + "\n"))


def test_non_string_token_is_invalid():
    assert "taskToken" in reason_for(with_(taskToken=12345))


def test_token_over_2048_characters_is_invalid():  # Step Functions allows 2048
    assert "taskToken" in reason_for(with_(taskToken="A" * 2049))


@pytest.mark.parametrize("body", ["not json", "[]", '"a string"', "", '{"jobId": '])
def test_body_that_is_not_a_json_object_is_invalid(body: str):
    assert reason_for(body)


# --- the reason given to the operator -------------------------------------------------


def test_reason_never_contains_the_token():
    secret = "AAAAKgAA secret-token-value AAAA"  # invalid: it has spaces
    reason = reason_for(with_(taskToken=secret, jobId="nope"))
    assert "secret-token-value" not in reason
    assert secret not in reason
    assert "taskToken" in reason
    assert "jobId" in reason


def test_reason_never_contains_a_valid_token_sent_with_other_mistakes():
    reason = reason_for({"taskToken": RAW_TOKEN, "jobId": "bad-id", "metadata": []})
    assert RAW_TOKEN not in reason
    assert RAW_TOKEN[:20] not in reason


@pytest.mark.parametrize(
    "body",
    [
        with_(exportId="exp\x00SENSITIVE-VALUE"),
        with_(userId=["SENSITIVE-VALUE"]),
        with_(jobId="SENSITIVE-VALUE"),
        with_(metadata="SENSITIVE-VALUE"),
        with_(taskToken="A" * 2049 + "SENSITIVE-VALUE"),
    ],
)
def test_reason_never_contains_the_input_values(body: dict[str, Any]):
    assert "SENSITIVE-VALUE" not in reason_for(body)


def test_reason_for_broken_json_does_not_echo_the_body():
    assert "SENSITIVE-VALUE" not in reason_for('{"taskToken": "SENSITIVE-VALUE", ')


def test_reason_names_the_field_and_the_problem():
    assert reason_for(without("userId")) == "userId: Field required"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ('{"n": NaN}', "NaN or Infinity"),
        ('{"n": 1e400}', "NaN or Infinity"),
        ('{"n": ' + "1" * 45 + "}", "38 digits"),
        ('{"n": 1e200}', "out of range"),
        ('{"b": "' + "x" * 200_000 + '"}', "over the"),
        ('{"a": ' * 20 + "1" + "}" * 20, "nested deeper"),
    ],
)
def test_metadata_the_job_table_cannot_store_is_invalid_with_a_reason(metadata, reason):
    body = (
        '{"jobId": "123e4567-e89b-12d3-a456-426614174000", "exportId": "e", "userId": "u",'
        f' "metadata": {metadata}}}'
    )
    with pytest.raises(ValidationError) as err:
        ExportJobMessage.model_validate_json(body)
    assert reason in describe_validation_error(err.value)


def test_ordinary_metadata_with_floats_and_nesting_is_valid():
    body = (
        '{"jobId": "123e4567-e89b-12d3-a456-426614174000", "exportId": "e", "userId": "u",'
        ' "metadata": {"ratio": 0.25, "big": 12345678901234567890, "l": [1, {"a": null}]}}'
    )
    assert ExportJobMessage.model_validate_json(body).metadata["ratio"] == 0.25


def test_a_2048_character_token_is_valid():
    assert ExportJobMessage.model_validate_json(json.dumps(with_(taskToken="A" * 2048))).task_token


def test_snake_case_field_names_are_not_the_contract():
    body = json.dumps(
        {
            "job_id": "123e4567-e89b-12d3-a456-426614174000",
            "export_id": "e",
            "user_id": "u",
        }
    )
    assert "jobId" in reason_for(body)


ARN = "arn:aws:states:eu-west-1:123456789012:execution:export-job:6b5e3408-835a-41fe-b233"


def test_the_execution_arn_is_kept_for_tracing():
    assert parse(with_(executionArn=ARN)).to_command().execution_arn == ARN
    express = ARN.replace(":execution:", ":express:")
    assert parse(with_(executionArn=express)).to_command().execution_arn == express


@pytest.mark.parametrize(
    "arn", ["not an arn", 42, "", "arn:aws:s3:::bucket", ARN + " x", "a" * 3000]
)
def test_a_bad_execution_arn_is_dropped_never_a_reason_to_refuse_the_job(arn: object):
    command = parse(with_(executionArn=arn)).to_command()
    assert command.execution_arn is None and command.job_id == JOB_ID
