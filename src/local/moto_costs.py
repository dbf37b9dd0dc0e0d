"""Four of moto's costs that grow with the load, cut (same results).

* Query and Scan orders. moto sorts every item of the table on each Query over a secondary
  index (``Table.all_items``), then sorts the matching ones by the index keys
  (``Table.sorted_items``), both with ``DynamoType`` comparisons that cast both values on
  every comparison. With 2,000 jobs in the table one Query on the heartbeat or due index
  took 90-170 ms of the emulator's single GIL, and the periodic rounds of 2,000 jobs in
  flight ask for several a second: the emulator fell behind and its own slowness timed
  workflows out (bench/inflight.py). Here the same two sorts use key functions over the
  values those comparisons compare (``cast_value``): the same order (Python's sort is
  stable and only compares), each value cast once per item.
* The backend of a request. For every request whose host is not a moto module's name
  (all of them, behind one lock) moto lists its package directory and stats each of its
  ~170 entries (``backends.list_of_moto_modules``), 1-2 ms a request on a busy machine.
  The list does not change while the process runs: it is made once.
* SQS's clock. moto's SQS asks every message of a queue whether it is visible or delayed
  on each SendMessage (its ``ContentBasedDeduplication`` look-up computes every queue
  attribute) and each ReceiveMessage, each answer reading the time through two datetime
  conversions and an import. Its ``unix_time`` and ``unix_time_millis`` read ``time.time()``
  instead (the same epoch seconds), so a backlog of a thousand messages costs a tenth.
* A boto3 client per execution. moto's Step Functions interpreter builds a new boto3 SQS
  client (about 10 ms of the emulator's GIL) for every ``sqs:sendMessage`` task it runs,
  i.e. for every execution of the export-job state machine. The client depends only on
  the region and the emulator's port (the credentials are moto's fixed ones), and boto3
  clients are thread-safe: one per region and port is kept.

Not fidelity fixes: the same answers, less cost. Only the patched (embedded) emulator
applies them; plain moto stays as released."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any


def _item_key(item: Any) -> Any:
    """What moto's ``all_items`` sorts by, as the cast values its comparisons compare."""
    if item.range_key:
        return (item.hash_key.cast_value, item.range_key.cast_value)
    return item.hash_key.cast_value


def apply() -> None:
    from moto import backends
    from moto.dynamodb.models.table import Table
    from moto.sqs import models as sqs_models
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_sqs as sfn_sqs,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client

    def all_items(self: Any) -> list[Any]:
        items: list[Any] = []
        for hash_set in self.items.values():
            if self.range_key_attr:
                items.extend(hash_set.values())
            else:
                items.append(hash_set)
        return sorted(items, key=_item_key)

    def sorted_items(
        self: Any, hash_key_attrs: list[str], range_key_attrs: list[str | None], items: list[Any]
    ) -> list[Any]:
        attrs = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
        items.sort(key=lambda item: tuple(item.attrs[name].cast_value for name in attrs))
        return items

    Table.all_items = all_items  # type: ignore[method-assign]
    Table.sorted_items = sorted_items  # type: ignore[method-assign]
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules

    unix_time: Any = sqs_models.unix_time  # type: ignore[attr-defined]

    def now_or(dt: datetime | None = None) -> float:
        return time.time() if dt is None else float(unix_time(dt))

    def now_or_millis(dt: datetime | None = None) -> float:
        return now_or(dt) * 1000.0

    sqs_models.unix_time = now_or  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = now_or_millis  # type: ignore[attr-defined]

    build_client: Any = boto_client.boto_client_for
    clients: dict[tuple[str, str, str], Any] = {}
    clients_lock = threading.Lock()

    def client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (region, service, os.environ.get("MOTO_PORT", ""))
        with clients_lock:
            if key not in clients:
                clients[key] = build_client(region, service, state_credentials)
            return clients[key]

    sfn_sqs.boto_client_for = client_for  # type: ignore[attr-defined]
