"""Reading DynamoDB's errors, in one place for every DynamoDB adapter."""

from __future__ import annotations

from botocore.exceptions import ClientError

CONDITION_FAILED = "ConditionalCheckFailedException"


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def is_condition_failure(err: ClientError) -> bool:
    """A conditional write lost: someone else changed the item first."""
    return error_code(err) == CONDITION_FAILED


def lost_race(err: ClientError) -> bool:
    """Another writer got there first: its condition check failed, or it collided with a
    transaction on the same item. Either way, someone else has (or will next round) it."""
    return is_condition_failure(err) or error_code(err) == "TransactionConflictException"
