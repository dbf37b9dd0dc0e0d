"""API keys for the admin API: full-access and read-only keys from the settings, kept
only as SHA-256 digests and compared in constant time. A key is sent as `X-API-Key` or
`Authorization: Bearer <key>`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from enum import IntEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer


class Access(IntEnum):
    READ = 1
    WRITE = 2


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def split_keys(csv: str) -> list[str]:
    return [key.strip() for key in csv.split(",") if key.strip()]


class ApiKeys:
    """Who may do what. `disabled`: no key needed (explicitly, for local use only)."""

    def __init__(
        self, full: Iterable[str] = (), read_only: Iterable[str] = (), *, disabled: bool = False
    ) -> None:
        self._keys = [(_digest(k), Access.WRITE) for k in full]
        self._keys += [(_digest(k), Access.READ) for k in read_only]
        self.disabled = disabled

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def access_of(self, presented: str | None) -> Access | None:
        if self.disabled:
            return Access.WRITE
        if not presented:
            return None
        digest = _digest(presented)
        found: Access | None = None
        for stored, access in self._keys:  # every key compared: the time says nothing
            if hmac.compare_digest(stored, digest) and (found is None or access > found):
                found = access
        return found


_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An admin API key")
_bearer = HTTPBearer(auto_error=False, description="An admin API key as a bearer token")


def presented_key(
    header: Annotated[str | None, Security(_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str | None:
    return header or (bearer.credentials if bearer else None)


class Require:
    """A route dependency: 401 without a valid key, 403 with a read-only key on a write."""

    def __init__(self, keys: ApiKeys, access: Access) -> None:
        self.keys = keys
        self.access = access

    def __call__(self, key: Annotated[str | None, Depends(presented_key)]) -> Access:
        granted = self.keys.access_of(key)
        if granted is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "an API key is required: X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if granted < self.access:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this key is read-only")
        return granted
