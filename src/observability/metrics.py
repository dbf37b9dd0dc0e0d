"""Every Prometheus metric the service exports (default registry), in one place, so the
README's list and its alert rules can be checked against it. Both driven adapters
(infrastructure) and driving loops (processing) record here; this module depends on
prometheus-client only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Answers to workflows (SendTaskSuccess / SendTaskFailure) and heartbeats
CALLBACKS = Counter(
    "export_callbacks_total",
    "Calls to SendTaskSuccess/Failure/Heartbeat by kind, outcome (delivered, rejected, "
    "unavailable) and AWS error code",
    ["kind", "outcome", "code"],
)
ANSWER_LATENCY = Histogram(
    "export_answer_latency_seconds",
    "From a job's end to its answer being acknowledged by Step Functions",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
# Jobs
JOBS_STARTED = Counter(
    "export_jobs_started_total", "Jobs created, with or without a waiting workflow", ["token"]
)
JOBS_ENDED = Counter(
    "export_jobs_ended_total", "Jobs finished by status and error code", ["status", "error"]
)
# Files
DOWNLOADS = Counter("export_downloads_total", "Files copied into S3 by outcome", ["outcome"])
DOWNLOAD_BYTES = Counter("export_download_bytes_total", "Bytes copied into S3")
DOWNLOAD_SECONDS = Histogram(
    "export_download_duration_seconds",
    "One file's copy (HTTP to S3), by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
# Queues
MESSAGES = Counter(
    "export_messages_total",
    "Queue messages by queue and what happened: received, deleted, rejected (to the DLQ "
    "with a reason), retried, handler_error",
    ["queue", "event"],
)
IN_FLIGHT = Gauge(
    "export_messages_in_flight",
    "Messages being worked on by this replica (download-tasks: downloads in flight; "
    "export-jobs: jobs being started)",
    ["queue"],
)
# Dependencies
EXPORT_API = Counter(
    "export_api_requests_total",
    "Export API status requests by outcome (ok, unavailable, rejected, malformed)",
    ["outcome"],
)
AWS_CALLS = Counter(
    "export_aws_calls_total",
    "AWS API calls made by this replica (retries not counted), by service and operation",
    ["service", "operation"],
)
