"""Reading DynamoDB's errors, in one place for every DynamoDB adapter."""

from __future__ import annotations

from botocore.exceptions import ClientError

CONDITION_FAILED = "ConditionalCheckFailedException"


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def is_condition_failure(err: ClientError) -> bool:
    """A conditional write lost: someone else changed the item first."""
    return error_code(err) == CONDITION_FAILED
