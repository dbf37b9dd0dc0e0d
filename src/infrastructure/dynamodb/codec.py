"""Plain Python values <-> DynamoDB attribute values."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        # An integral value of 38+ digits as an int could not be written back (DynamoDB
        # keeps 38 significant digits): keep those as floats.
        integral = value == value.to_integral_value() and value.adjusted() < 38
        return int(value) if integral else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_attr(value: Any) -> dict[str, Any]:
    # Floats are not accepted by DynamoDB's serializer: go through Decimal.
    serialized: dict[str, Any] = _serializer.serialize(
        json.loads(json.dumps(value), parse_float=Decimal)
    )
    return serialized


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}
