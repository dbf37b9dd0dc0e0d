"""What one export may list before anything of it is written: bounds the tables, the
queue and the object store can carry, checked once when the export is ready."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from src.domain.file_names import object_key

S3_MAX_KEY_BYTES = 1024
S3_MAX_OBJECT_BYTES = 5 * 1024**4  # 5 TiB: no larger object exists in S3
MAX_URL_CHARS = 8192  # a presigned URL is a few KB; a work item and a record carry it
MAX_FILE_NAME_CHARS = 1024  # as given (the key keeps a sanitised 200); work items carry it


class ListedFile(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def file_name(self) -> str: ...

    @property
    def size(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ExportLimits:
    """MAX_FILES_PER_JOB and the per-field bounds. An export beyond them fails with the
    reason (ExportFailed) instead of being written and retried forever."""

    max_files: int = 10_000

    def violation(self, prefix: str, job_id: str, files: Sequence[ListedFile]) -> str | None:
        """The first bound the listing breaks, said plainly; None when it fits."""
        if len(files) > self.max_files:
            return (
                f"Export lists {len(files)} files; at most {self.max_files} are allowed "
                "per job (MAX_FILES_PER_JOB)"
            )
        for index, file in enumerate(files):
            problem = self._file_problem(prefix, job_id, index, file)
            if problem:
                return f"Export file {index}: {problem}"
        return None

    @staticmethod
    def _file_problem(prefix: str, job_id: str, index: int, file: ListedFile) -> str | None:
        if len(file.url) > MAX_URL_CHARS:
            return f"url is {len(file.url)} characters long (at most {MAX_URL_CHARS})"
        if len(file.file_name) > MAX_FILE_NAME_CHARS:
            return (
                f"fileName is {len(file.file_name)} characters long (at most {MAX_FILE_NAME_CHARS})"
            )
        key = object_key(prefix, job_id, index, file.file_name)
        if len(key.encode()) > S3_MAX_KEY_BYTES:
            return f"its object key would be {len(key.encode())} bytes (S3 allows 1024)"
        if file.size is not None and file.size > S3_MAX_OBJECT_BYTES:
            return f"fileSize {file.size} is larger than S3's 5 TiB object limit"
        return None
