"""DownloadTask <-> its item in the tasks table (hash jobId, range taskId)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.time import iso_ms, parse_iso
from src.domain.upload_checkpoint import StoredPart, UploadCheckpoint

RETENTION = timedelta(days=7)


def to_item(task: DownloadTask) -> dict[str, Any]:
    """Plain values; None means 'attribute absent'."""
    return {
        "jobId": task.job_id,
        "taskId": task.task_id,
        "index": task.index,
        "url": task.url,
        "fileName": task.file_name,
        "outputKey": task.output_key,
        "expectedSize": task.expected_size,
        "expectedSha256": task.expected_sha256,
        "status": task.status.value,
        "attempts": task.attempts,
        "bytes": task.bytes,
        "sha256": task.sha256,
        "error": task.error,
        "leaseOwner": task.lease_owner,
        "leaseExpiresAt": iso_ms(task.lease_expires_at) if task.lease_expires_at else None,
        "createdAt": iso_ms(task.created_at),
        "finishedAt": iso_ms(task.finished_at) if task.finished_at else None,
        "ttl": int((task.created_at + RETENTION).timestamp()),
        "urlExpiresAt": iso_ms(task.url_expires_at) if task.url_expires_at else None,
        "upload": checkpoint_to_item(task.upload) if task.upload else None,
    }


def checkpoint_to_item(upload: UploadCheckpoint) -> dict[str, Any]:
    """Compact: a 1 GiB file in 8 MiB parts is 128 entries of [number, etag, start, end]."""
    item: dict[str, Any] = {
        "uploadId": upload.upload_id,
        "validator": upload.validator,
        "hashState": upload.hash_state,
        "parts": [[p.number, p.etag, p.start, p.end] for p in upload.parts],
    }
    if upload.content_type:
        item["contentType"] = upload.content_type
    if upload.content_encoding:
        item["contentEncoding"] = upload.content_encoding
    return item


def checkpoint_from_item(item: dict[str, Any] | None) -> UploadCheckpoint | None:
    if not item:
        return None
    return UploadCheckpoint(
        upload_id=item["uploadId"],
        validator=item["validator"],
        hash_state=item["hashState"],
        parts=tuple(
            StoredPart(int(n), str(etag), int(start), int(end))
            for n, etag, start, end in item.get("parts", [])
        ),
        content_type=item.get("contentType"),
        content_encoding=item.get("contentEncoding"),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def from_item(item: dict[str, Any]) -> DownloadTask:
    lease = item.get("leaseExpiresAt")
    finished = item.get("finishedAt")
    return DownloadTask(
        job_id=item["jobId"],
        task_id=item["taskId"],
        index=int(item["index"]),
        url=item["url"],
        file_name=item["fileName"],
        output_key=item["outputKey"],
        created_at=parse_iso(item["createdAt"]),
        expected_size=_optional_int(item.get("expectedSize")),
        expected_sha256=item.get("expectedSha256"),
        status=TaskStatus(item["status"]),
        attempts=int(item.get("attempts", 0)),
        bytes=_optional_int(item.get("bytes")),
        sha256=item.get("sha256"),
        error=item.get("error"),
        lease_owner=item.get("leaseOwner"),
        lease_expires_at=parse_iso(lease) if lease else None,
        finished_at=parse_iso(finished) if finished else None,
        url_expires_at=parse_iso(item["urlExpiresAt"]) if item.get("urlExpiresAt") else None,
        upload=checkpoint_from_item(item.get("upload")),
    )
