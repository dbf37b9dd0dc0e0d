"""How far a big file's copy got: the parts already stored, so another replica resumes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredPart:
    """One uploaded part of a multipart upload: bytes [start, end) of the source."""

    number: int
    etag: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class UploadCheckpoint:
    """A multipart upload in progress. `parts` are contiguous from byte 0; `hash_state` is
    the sha256 state after the last of them; `validator` is the source's ETag or
    Last-Modified, sent as If-Range so a changed source is never stitched to old parts."""

    upload_id: str
    validator: str
    parts: tuple[StoredPart, ...]
    hash_state: str
    content_type: str | None = None
    content_encoding: str | None = None

    @property
    def next_offset(self) -> int:
        return self.parts[-1].end if self.parts else 0

    @property
    def next_part_number(self) -> int:
        return self.parts[-1].number + 1 if self.parts else 1

    def __post_init__(self) -> None:
        expected = 0
        for number, part in enumerate(self.parts, start=1):
            if part.number != number or part.start != expected or part.end <= part.start:
                raise ValueError("checkpoint parts must be contiguous from byte 0, numbered from 1")
            expected = part.end
