"""The sha256 of an upload, resumable where libcrypto allows it."""

from __future__ import annotations

import hashlib

from src.infrastructure.http.resumable_hash import ResumableSha256


class PartHasher:
    """ResumableSha256 when it is available (its state can be checkpointed), else
    hashlib: the copy still works, it just cannot be resumed after a crash."""

    def __init__(self, state: str | None = None) -> None:
        self.resumable = ResumableSha256.available()
        if state is not None and not self.resumable:
            raise ValueError("a checkpointed hash cannot be resumed without libcrypto")
        self._hash: ResumableSha256 | hashlib._Hash
        if self.resumable:
            self._hash = ResumableSha256.from_state(state) if state else ResumableSha256()
        else:
            self._hash = hashlib.sha256()

    @staticmethod
    def can_resume() -> bool:
        return ResumableSha256.available()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def state(self) -> str:
        if not isinstance(self._hash, ResumableSha256):
            raise RuntimeError("this hash cannot be checkpointed")
        return self._hash.state()
