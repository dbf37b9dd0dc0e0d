"""A small client for the admin API over real HTTP (urllib): status, JSON body, headers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    text: str


class AdminApi:
    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key

    def as_key(self, key: str | None) -> AdminApi:
        return AdminApi(self.base_url, key)

    def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Reply:
        sent = {"Accept": "application/json", **(headers or {})}
        if self.key is not None and "Authorization" not in sent:
            sent["X-API-Key"] = self.key
        data = None
        if body is not None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=sent
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw, got = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            status, raw, got = err.code, err.read(), dict(err.headers)
        text = raw.decode(errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(status, parsed, got, text)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.call("POST", path, body, **kwargs)
