"""The raw intake baseline, as its own child process (like the service):

    python -m bench.intake_baseline --queue-url URL --table T --jobs N [--export-id ID]

Sends N export-job messages (SendMessageBatch of 10), then receives them in batches of 10
with long polling; for each, one conditional PutItem (attribute_not_exists(jobId)) of a
job-like item into the jobs table, the batch's puts at once, then one DeleteMessageBatch.
The service's clients (aioboto3); no validation, no polling, no bookkeeping. Timed from
the first send to the last delete. Prints one JSON line: jobs, seconds, jobs/s, CPU seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aioboto3

from bench.common import baseline_client_kwargs


def _item(body: dict[str, str]) -> dict[str, Any]:
    """The attributes the service writes for a new job, as plain values."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    strings = {**body, "status": "PROCESSING", "createdAt": now, "updatedAt": now}
    strings |= {"callbackStatus": "NOT_REQUIRED", "nextPollAt": now, "pollDeadline": now}
    strings |= {"dueKind": "POLL", "dueAt": now}
    numbers = ("totalTasks", "completedTasks", "failedTasks", "callbackAttempts", "pollAttempts")
    return {
        **{k: {"S": v} for k, v in strings.items()},
        **{k: {"N": "0"} for k in (*numbers, "version")},
        "ttl": {"N": str(int(time.time()) + 30 * 86400)},
        "metadata": {"M": {}},
    }


async def _run(
    queue_url: str, table: str, jobs: int, export_id: str, wait_seconds: int
) -> dict[str, Any]:
    kwargs = baseline_client_kwargs()
    session = aioboto3.Session()
    async with session.client("sqs", **kwargs) as sqs, session.client("dynamodb", **kwargs) as ddb:

        async def put(body: dict[str, str]) -> None:
            await ddb.put_item(
                TableName=table,
                Item=_item(body),
                ConditionExpression="attribute_not_exists(jobId)",
            )

        cpu, started = time.process_time(), time.perf_counter()
        for start in range(0, jobs, 10):
            bodies = [
                {"jobId": str(uuid.uuid4()), "exportId": export_id, "userId": "bench"}
                for _ in range(min(10, jobs - start))
            ]
            entries = [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies)]
            await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent = time.perf_counter()
        done = 0
        while done < jobs:
            received = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
            )
            messages = received.get("Messages", [])
            if not messages:
                continue
            await asyncio.gather(*(put(json.loads(m["Body"])) for m in messages))
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            done += len(messages)
        seconds = time.perf_counter() - started
        return {
            "jobs": done,
            "seconds": seconds,
            "send_seconds": sent - started,
            "jobs_per_s": done / seconds,
            "cpu_seconds": time.process_time() - cpu,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--export-id", default="baseline-files-0")
    parser.add_argument("--wait-seconds", type=int, default=20)
    args = parser.parse_args(argv)
    result = asyncio.run(
        _run(args.queue_url, args.table, args.jobs, args.export_id, args.wait_seconds)
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
