"""DynamoDB write volume as AWS bills it, per caller: the embedded emulator's accounting.

For each PutItem, UpdateItem, DeleteItem, BatchWriteItem and TransactWriteItems request,
the items it names are looked up in moto's DynamoDB backend (this process) before the
request and after it, and each write is billed by AWS's rules (developer guide, "Item
sizes and formats" and "Read/write capacity"):

* item size: per attribute, the UTF-8 bytes of its name plus its value: a string's UTF-8
  bytes; a number about 1 byte per two significant digits plus 1; a binary's raw bytes;
  a boolean or null 1; a list or map 3 bytes plus 1 per element plus the elements (and a
  map's key bytes); a set the sum of its elements.
* PutItem and UpdateItem: the larger of the item before and after; DeleteItem: the item
  before. A write costs ceil(size / 1 KiB) write units, at least 1; inside a
  TransactWriteItems twice that. A ConditionCheck is not a write: not counted here.
* A write whose condition fails is billed as well, at the existing item's size (at least
  1 unit): counted, and in `failed`. A cancelled transaction: each of its Put, Update and
  Delete items likewise (twice, as transactional writes).
* Secondary indexes (global and local): an index is written when the item has its key
  attributes before or after the write: a put of the new entry, a delete of the old, both
  when an index key changed, one write when only projected attributes changed, nothing
  otherwise; each ceil(projected size / 1 KiB) units, at least 1 (not doubled in a
  transaction: an assumption), counted under ``"<table>/<index>"``.

The figures per caller and table (or ``table/index``): ``items`` (writes billed),
``bytes`` (the sizes they were billed at), ``write_units``, ``failed``. The caller
(the middleware) runs each DynamoDB request alone (its DynamoDB lock), so "before" and
"after" are this request's. A request that cannot be looked up (unknown table, malformed)
is passed through uncounted, and counted in ``unaccounted``."""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger(__name__)

WRITE_OPERATIONS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)
UNIT_BYTES = 1024
_BILLED_FAILURES = ("ConditionalCheckFailedException", "TransactionCanceledException")
_REGION = re.compile(r"Credential=[^/,\s]+/[^/]+/([^/]+)/")

StartResponse = Callable[..., Any]


# --- item size, by AWS's rules, over moto's DynamoType values ---------------------------


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def _binary(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    try:  # moto keeps a binary as the base64 text the request carried
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return _utf8(str(value))


def number_size(text: str) -> int:
    """About 1 byte per two significant digits, plus 1 (leading and trailing zeros and
    the exponent do not count)."""
    mantissa = re.split("[eE]", text.strip().lstrip("+-"), maxsplit=1)[0]
    digits = mantissa.replace(".", "").lstrip("0").rstrip("0")
    return (max(len(digits), 1) + 1) // 2 + 1


def value_size(value: Any) -> int:
    """The size of one moto ``DynamoType`` value."""
    kind, raw = value.type, value.value
    if kind == "S":
        return _utf8(raw)
    if kind == "N":
        return number_size(str(raw))
    if kind == "B":
        return _binary(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(v) for v in raw)
    if kind == "NS":
        return sum(number_size(str(v)) for v in raw)
    if kind == "BS":
        return sum(_binary(v) for v in raw)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + _utf8(k) + value_size(v) for k, v in raw.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def attrs_size(attrs: dict[str, Any]) -> int:
    """The size of an item given as ``{name: DynamoType}`` (moto's ``Item.attrs``)."""
    return sum(_utf8(name) + value_size(value) for name, value in attrs.items())


def units(size: int) -> int:
    return max(1, -(-size // UNIT_BYTES))


# --- the writes a request names ---------------------------------------------------------


@dataclass
class _Write:
    table: Any  # moto Table
    hash_key: Any  # DynamoType
    range_key: Any  # DynamoType | None
    kind: str  # "put" | "update" | "delete"
    transactional: bool
    before: dict[str, Any] | None = None  # a copy of the item's attrs before the request

    def current(self) -> dict[str, Any] | None:
        item = self.table.get_item(self.hash_key, self.range_key)
        return None if item is None else item.attrs


def _backend(environ: dict[str, Any], caller: str) -> Any:
    """The moto backend this request reaches, found the way moto's responses find it."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.iam.models import get_account_id_from

    account = (
        os.environ.get("MOTO_ACCOUNT_ID")
        or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
        or get_account_id_from(caller or "AKIAEXAMPLE")
    )
    found = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
    region = found.group(1) if found else "us-east-1"
    return dynamodb_backends[account][region]


def _write(backend: Any, kind: str, spec: dict[str, Any], transactional: bool) -> _Write:
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = backend.get_table(spec["TableName"])
    attrs = spec["Item"] if kind == "put" else spec["Key"]
    range_key = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    return _Write(table, DynamoType(attrs[table.hash_key_attr]), range_key, kind, transactional)


def _writes_of(backend: Any, operation: str, body: dict[str, Any]) -> list[_Write]:
    if operation == "PutItem":
        return [_write(backend, "put", body, False)]
    if operation == "UpdateItem":
        return [_write(backend, "update", body, False)]
    if operation == "DeleteItem":
        return [_write(backend, "delete", body, False)]
    writes = []
    if operation == "BatchWriteItem":
        for table_name, requests in body["RequestItems"].items():
            for request in requests:
                if "PutRequest" in request:
                    spec = {"TableName": table_name, **request["PutRequest"]}
                    writes.append(_write(backend, "put", spec, False))
                else:
                    spec = {"TableName": table_name, **request["DeleteRequest"]}
                    writes.append(_write(backend, "delete", spec, False))
        return writes
    for entry in body["TransactItems"]:  # TransactWriteItems
        ((action, spec),) = entry.items()
        if action != "ConditionCheck":  # a read, not a write
            writes.append(_write(backend, action.lower(), spec, True))
    return writes


# --- billing ----------------------------------------------------------------------------


def _projected(index: Any, table: Any, attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The item's entry in a secondary index, None when it has not the index's keys."""
    if attrs is None or any(name not in attrs for name in index.schema_key_attrs):
        return None
    projection = index.projection or {}
    kind = projection.get("ProjectionType", "ALL")
    if kind == "ALL":
        return dict(attrs)
    keys = [table.hash_key_attr, table.range_key_attr, *index.schema_key_attrs]
    if kind == "INCLUDE":
        keys += projection.get("NonKeyAttributes", [])
    return {name: attrs[name] for name in keys if name and name in attrs}


def _index_writes(write: _Write, after: dict[str, Any] | None) -> list[tuple[str, int]]:
    """(index name, entry size) per index write the item's change makes."""
    billed = []
    for index in [*write.table.indexes, *write.table.global_indexes]:
        old = _projected(index, write.table, write.before)
        new = _projected(index, write.table, after)
        if old is None or new is None:
            entry = old if new is None else new
            if entry is not None:  # in the index before or after, not both
                billed.append((index.name, attrs_size(entry)))
        elif any(old[k] != new[k] for k in index.schema_key_attrs):
            billed += [(index.name, attrs_size(old)), (index.name, attrs_size(new))]
        elif old != new:
            billed.append((index.name, max(attrs_size(old), attrs_size(new))))
    return billed


class WriteLedger:
    """Write volume per caller (access key) and table; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_caller: dict[tuple[str, str], Counter[str]] = {}  # (caller, table)
        self._unaccounted = 0

    def run(
        self,
        operation: str,
        environ: dict[str, Any],
        caller: str,
        app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        start_response: StartResponse,
    ) -> list[bytes]:
        """Run the request (alone: the caller holds the DynamoDB lock) and bill its writes."""
        writes: list[_Write] | None = None
        try:
            body = _peek_body(environ)
            writes = _writes_of(_backend(environ, caller), operation, json.loads(body))
            for write in writes:
                before = write.current()
                write.before = None if before is None else copy.deepcopy(dict(before))
        except Exception:  # never in the way of the request: it is only not counted
            _log.debug("DynamoDB write not accounted", exc_info=True)
            writes = None
        statuses: list[str] = []

        def capture(status: str, *args: Any) -> Any:
            statuses.append(status)
            return start_response(status, *args)

        response = list(app(environ, capture))
        if writes is None:
            with self._lock:
                self._unaccounted += 1
            return response
        ok = bool(statuses) and statuses[-1].startswith("2")
        if ok or _billed_failure(response):
            self._bill(caller, writes, failed=not ok)
        return response

    def _bill(self, caller: str, writes: list[_Write], failed: bool) -> None:
        billed: list[tuple[str, int, int, bool]] = []  # (name, size, units, failed)
        for write in writes:
            factor = 2 if write.transactional else 1
            before = attrs_size(write.before) if write.before is not None else 0
            if failed:
                billed.append((write.table.name, before, factor * units(before), True))
                continue
            after_attrs = write.current()
            after = attrs_size(after_attrs) if after_attrs is not None else 0
            size = before if write.kind == "delete" else max(before, after)
            billed.append((write.table.name, size, factor * units(size), False))
            for index, entry in _index_writes(write, after_attrs):
                billed.append((f"{write.table.name}/{index}", entry, units(entry), False))
        with self._lock:
            for name, size, write_units, was_failed in billed:
                counter = self._by_caller.setdefault((caller, name), Counter())
                counter["items"] += 1
                counter["bytes"] += size
                counter["write_units"] += write_units
                counter["failed"] += int(was_failed)

    def by(self, caller: str) -> dict[str, dict[str, int]]:
        """``{table or "table/index": {"items", "bytes", "write_units", "failed"}}``."""
        keys = ("items", "bytes", "write_units", "failed")
        with self._lock:
            return {
                name: {key: counter[key] for key in keys}
                for (who, name), counter in sorted(self._by_caller.items())
                if who == caller
            }

    @property
    def unaccounted(self) -> int:
        with self._lock:
            return self._unaccounted

    def reset(self) -> None:
        with self._lock:
            self._by_caller.clear()
            self._unaccounted = 0


def _peek_body(environ: dict[str, Any]) -> bytes:
    """The request body, put back for the app."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


def _billed_failure(response: list[bytes]) -> bool:
    """A failed condition (or a cancelled transaction): billed although nothing changed."""
    try:
        error = str(json.loads(b"".join(response)).get("__type", ""))
    except (ValueError, AttributeError):
        return False
    return error.endswith(_BILLED_FAILURES)
