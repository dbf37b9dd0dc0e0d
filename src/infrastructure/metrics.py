"""Prometheus counters for what operators need to alert on (default registry)."""

from __future__ import annotations

from prometheus_client import Counter

CALLBACKS = Counter(
    "export_callbacks_total",
    "Calls to SendTaskSuccess/Failure/Heartbeat by outcome",
    ["kind", "outcome", "code"],
)
DOWNLOADS = Counter("export_downloads_total", "Files copied into S3 by outcome", ["outcome"])
DOWNLOAD_BYTES = Counter("export_download_bytes_total", "Bytes copied into S3")
AWS_CALLS = Counter(
    "export_aws_calls_total",
    "AWS API calls made by this replica (retries not counted), by service and operation",
    ["service", "operation"],
)
