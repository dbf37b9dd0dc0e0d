"""The raw small-file baseline, as its own child process (like the service):

    python -m bench.small_baseline --listing URL --copies N --bucket B --table T
        [--concurrency 10]

Reads the sandbox's export listing once, then for each of N copies of its files does the
plainest work the service does per file, with the same clients (aiohttp, aioboto3): GET
the file, PutObject it, and write one small DynamoDB item. No validation, no hashing, no
retries, no bookkeeping. Prints one JSON line: files, seconds, files/s and CPU seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aioboto3
import aiohttp

from bench.common import baseline_client_kwargs


async def _run(
    listing: str, copies: int, bucket: str, table: str, concurrency: int
) -> dict[str, Any]:
    """Timed from the first copy (clients made, listing read) to the last."""
    kwargs = baseline_client_kwargs()
    session = aioboto3.Session()
    gate = asyncio.Semaphore(concurrency)
    async with (
        aiohttp.ClientSession() as http,
        session.client("s3", **kwargs) as s3,
        session.client("dynamodb", **kwargs) as ddb,
    ):
        async with http.get(listing) as response:
            urls = [entry["url"] for entry in (await response.json())["downloadUrls"]]

        async def copy(n: int, url: str) -> None:
            async with gate:
                async with http.get(url) as got:
                    body = await got.read()
                key = f"baseline/{n}"
                await s3.put_object(Bucket=bucket, Key=key, Body=body)
                await ddb.put_item(
                    TableName=table,
                    Item={
                        "jobId": {"S": f"baseline-{n}"},
                        "taskId": {"S": "0"},
                        "bytes": {"N": str(len(body))},
                    },
                )

        jobs = [copy(n * len(urls) + i, u) for n in range(copies) for i, u in enumerate(urls)]
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*jobs)
        seconds = time.perf_counter() - started
        return {
            "files": len(jobs),
            "seconds": seconds,
            "files_per_s": len(jobs) / seconds,
            "cpu_seconds": time.process_time() - cpu,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listing", required=True)
    parser.add_argument("--copies", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args.listing, args.copies, args.bucket, args.table, args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
