"""What arrives on the export-jobs queue, validated at the edge (the external contract)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from src.application.commands import StartExportJobCommand
from src.domain.task_token import TaskToken

# Hyphenated UUID, any case, any version; stored exactly as sent (it is the table key).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# No control characters at all: C0, DEL and C1 (e.g. \x85 next line, \x9b CSI).
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f-\x9f]+")
# scheme ":" then something; no whitespace or control characters (WHATWG would reject them).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[\x21-\x7e\u00a0-\U0010ffff]+")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no whitespace
MAX_ID_CHARS = 256
MAX_ARN_CHARS = 2048  # Step Functions' limit for an execution ARN
_ARN = re.compile(r"arn:[A-Za-z0-9-]+:states:[A-Za-z0-9-]*:[0-9]*:(express|execution):[\x21-\x7e]+")
MAX_TOKEN_CHARS = 2048  # Step Functions' TaskToken limit (botocore model)
# metadata is stored on the job item (DynamoDB: 400 KB per item, numbers of at most 38
# digits between 1e-130 and 1e126, 32 levels of nesting): refuse what it cannot hold.
MAX_METADATA_BYTES = 192 * 1024  # leaves room for the rest of the item
MAX_METADATA_DEPTH = 16
_NUMBER_LIMIT = 10**38


class ExportJobMessage(BaseModel):
    """`{jobId, exportId, userId, metadata?, taskToken?, callbackUrl?}`; unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")  # only the contract's camelCase names

    job_id: StrictStr = Field(alias="jobId")
    export_id: StrictStr = Field(alias="exportId", min_length=1, max_length=MAX_ID_CHARS)
    user_id: StrictStr = Field(alias="userId", min_length=1, max_length=MAX_ID_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    task_token: StrictStr | None = Field(None, alias="taskToken", max_length=MAX_TOKEN_CHARS)
    # The sending Step Functions execution (`$$.Execution.Id`), for tracing: on every log
    # line of the job, in the API and in metrics exemplars. The original ignores it; a
    # value that is not an ARN is dropped, never a reason to refuse the job.
    execution_arn: Any = Field(None, alias="executionArn")
    # Accepted and ignored, but it must parse as a URL (any scheme), as the original's
    # validation required: a producer sending garbage there hears about it.
    callback_url: Any = Field(None, alias="callbackUrl")

    @field_validator("job_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if not _UUID.fullmatch(value):  # fullmatch: `$` would let a trailing newline in
            raise ValueError("jobId must be a hyphenated UUID")
        return value

    @field_validator("callback_url")
    @classmethod
    def _url(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or not _URL.fullmatch(value):
            raise ValueError("callbackUrl must be a URL (scheme:rest, no spaces)")
        return value

    @field_validator("execution_arn")
    @classmethod
    def _arn(cls, value: Any) -> str | None:
        if isinstance(value, str) and len(value) <= MAX_ARN_CHARS and _ARN.fullmatch(value):
            return value
        return None

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
        except ValueError:
            raise ValueError("metadata must not contain NaN or Infinity") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes, over the {MAX_METADATA_BYTES} limit")
        _check_storable(value, depth=1)
        return value

    @field_validator("export_id", "user_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not _PRINTABLE.fullmatch(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("task_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None  # an empty string means "no token"
        if not _TOKEN.fullmatch(value):
            raise ValueError("taskToken must be visible ASCII without whitespace")
        return value

    def to_command(self) -> StartExportJobCommand:
        return StartExportJobCommand(
            job_id=self.job_id,
            export_id=self.export_id,
            user_id=self.user_id,
            metadata=self.metadata,
            task_token=TaskToken(self.task_token) if self.task_token else None,
            execution_arn=self.execution_arn,
        )


def _check_storable(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= _NUMBER_LIMIT:
            raise ValueError("metadata numbers must have at most 38 digits")
    elif isinstance(value, float) and value != 0 and not 1e-129 < abs(value) < 1e125:
        raise ValueError("metadata number out of range")


def describe_validation_error(err: ValidationError) -> str:
    """Field and problem only: never the input values, which may hold a task token."""
    parts = []
    for e in err.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)
