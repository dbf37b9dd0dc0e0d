"""moto's TransactWriteItems without a deep copy of every table it touches.

moto keeps a deep copy of each table a transaction writes to, to roll back on failure: the
whole table, per transaction. The service records every file with a transaction on the
tasks table, so the emulator's work per file grew with every file ever recorded (a
10,000-file job copied tens of millions of items). Here only the items the transaction
names are kept, and put back if it fails. Results are the same as moto's: the embedded
stack serialises DynamoDB requests, so nothing else changes those items meanwhile.
Only the patched (embedded) emulator applies it; plain moto stays as released."""

from __future__ import annotations

import copy
import functools
import threading
import types
from collections.abc import Callable
from typing import Any

_copying_tables = threading.local()


def apply() -> None:
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    def deepcopy(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table) and getattr(_copying_tables, "skip", False):
            return value  # the touched items are kept aside instead (see below)
        return copy.deepcopy(value, memo)

    # The module's own name for `copy`: only DynamoDB code uses it, and the embedded stack
    # runs one DynamoDB request at a time.
    models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[attr-defined,assignment]

    original: Callable[..., Any] = DynamoDBBackend.transact_write_items

    def keys_of(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        touched = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = backend.get_table(op["TableName"])
            attrs = op.get("Key") or op["Item"]
            hash_value = DynamoType(attrs[table.hash_key_attr])
            range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
            current = table.get_item(hash_value, range_value)
            touched.append((table, hash_value, range_value, copy.deepcopy(current)))
        return touched

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        try:
            touched = keys_of(self, transact_items)
        except Exception:  # anything unusual (a missing table, a bad key): moto's own way
            return original(self, transact_items)  # type: ignore[no-any-return]
        _copying_tables.skip = True
        try:
            return original(self, transact_items)  # type: ignore[no-any-return]
        except Exception:
            for table, hash_value, range_value, before in touched:
                _put_back(table, hash_value, range_value, before)
            raise
        finally:
            _copying_tables.skip = False

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _put_back(table: Any, hash_value: Any, range_value: Any, before: Any) -> None:
    if range_value is not None:
        if before is None:
            table.items.get(hash_value, {}).pop(range_value, None)
        else:
            table.items[hash_value][range_value] = before
    elif before is None:
        table.items.pop(hash_value, None)
    else:
        table.items[hash_value] = before
