"""DynamoDB read volume per caller: the embedded emulator's accounting of Query and Scan.

For each Query and Scan request that succeeds, the response's ``ScannedCount`` (the items
DynamoDB read to answer it, before any FilterExpression: what a read costs) and ``Count``
(the items returned) are recorded per caller (access key) and operation, and per table
or ``table/index``. A bounded periodic round shows as a bounded ``max_items``; a round
that reads a whole index partition shows as a ``max_items`` that grows with the table.

Only these two operations are parsed (their response body, and the request's table and
index names); a body that cannot be read is passed through and counted in ``unaccounted``."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

_log = logging.getLogger(__name__)

READ_OPERATIONS = frozenset({"Query", "Scan"})
_FIGURES = ("calls", "items", "max_items", "returned")

StartResponse = Callable[..., Any]


class ReadLedger:
    """Query / Scan calls and items read, per caller; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_operation: dict[tuple[str, str], Counter[str]] = {}  # (caller, operation)
        self._by_source: dict[tuple[str, str], Counter[str]] = {}  # (caller, "Op table/index")
        self._unaccounted = 0

    def run(
        self,
        operation: str,
        environ: dict[str, Any],
        caller: str,
        app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        start_response: StartResponse,
    ) -> list[bytes]:
        """Run the request and record what it read."""
        source = _source(environ)
        statuses: list[str] = []

        def capture(status: str, *args: Any) -> Any:
            statuses.append(status)
            return start_response(status, *args)

        response = list(app(environ, capture))
        if not statuses or not statuses[-1].startswith("2"):
            return response  # an error reads nothing we could count
        try:
            body = json.loads(b"".join(response))
            scanned, returned = int(body["ScannedCount"]), int(body.get("Count", 0))
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self._unaccounted += 1
            return response
        with self._lock:
            for ledger, key in (
                (self._by_operation, (caller, operation)),
                (self._by_source, (caller, f"{operation} {source}")),
            ):
                counter = ledger.setdefault(key, Counter())
                counter["calls"] += 1
                counter["items"] += scanned
                counter["max_items"] = max(counter["max_items"], scanned)
                counter["returned"] += returned
        return response

    def by(self, caller: str) -> dict[str, dict[str, int]]:
        """``{operation: {"calls", "items" (ScannedCount summed), "max_items" (the largest
        ScannedCount of one call), "returned" (Count summed)}}``."""
        return self._view(self._by_operation, caller)

    def by_source(self, caller: str) -> dict[str, dict[str, int]]:
        """The same figures keyed ``"<operation> <table>[/<index>]"``."""
        return self._view(self._by_source, caller)

    def _view(
        self, ledger: dict[tuple[str, str], Counter[str]], caller: str
    ) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                name: {figure: counter[figure] for figure in _FIGURES}
                for (who, name), counter in sorted(ledger.items())
                if who == caller
            }

    @property
    def unaccounted(self) -> int:
        with self._lock:
            return self._unaccounted

    def reset(self) -> None:
        with self._lock:
            self._by_operation.clear()
            self._by_source.clear()
            self._unaccounted = 0


def _source(environ: dict[str, Any]) -> str:
    """``table`` or ``table/index`` from the request body (put back for the app)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        request = json.loads(body)
        table, index = str(request.get("TableName", "?")), request.get("IndexName")
    except (ValueError, TypeError, AttributeError):
        return "?"
    return f"{table}/{index}" if index else table
