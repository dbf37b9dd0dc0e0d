"""Raw baselines, each run as its own child process (like the service):

    python -m bench.baselines http URL --size BYTES
        plain aiohttp GET, bytes discarded (same 256 KiB read size as the service)
    python -m bench.baselines s3 --size BYTES --bucket B --key K [--part-mib 8]
        boto3 multipart upload of BYTES generated in memory, one part at a time, to
        AWS_ENDPOINT; the object is deleted afterwards (outside the timing)
    python -m bench.baselines pipe URL --size BYTES --bucket B --key K [--part-mib 8]
        the two together, the plainest HTTP -> S3 pipe: aiohttp GET into 8 MiB parts,
        each uploaded with boto3 on a thread while the next is read (one part in flight);
        no hashing, no retries, no bookkeeping. Deleted afterwards too.

Prints one JSON line: bytes, seconds (transfer only, no interpreter start-up), MB/s and the
child's own VmRSS/VmHWM in KiB. Exits non-zero if the byte count is wrong."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from bench.common import MIB, mbps, proc_status

_READ_CHUNK = 256 * 1024  # AiohttpFileTransfer reads 256 KiB at a time


async def _http(url: str) -> tuple[int, float]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(url) as response:
            response.raise_for_status()
            received = 0
            async for chunk in response.content.iter_chunked(_READ_CHUNK):
                received += len(chunk)
        return received, time.perf_counter() - started


def raw_http(url: str, size: int) -> dict[str, Any]:
    received, seconds = asyncio.run(_http(url))
    if received != size:
        raise SystemExit(f"raw HTTP read {received} bytes, expected {size}")
    return {"bytes": received, "seconds": seconds}


def _s3_client() -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def _finish(s3: Any, bucket: str, key: str, size: int, result: dict[str, Any]) -> dict[str, Any]:
    stored = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    s3.delete_object(Bucket=bucket, Key=key)
    if stored != size:
        raise SystemExit(f"object has {stored} bytes, expected {size}")
    return result


def raw_s3(size: int, bucket: str, key: str, part_size: int) -> dict[str, Any]:
    s3 = _s3_client()
    pattern = bytes(range(256))
    part = (pattern * (part_size // len(pattern) + 1))[:part_size]
    started = time.perf_counter()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    sent = 0
    number = 1
    while sent < size:
        body = part[: min(part_size, size - sent)]
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
        sent += len(body)
        number += 1
    parts_done = time.perf_counter()
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    finished = time.perf_counter()
    return _finish(
        s3,
        bucket,
        key,
        size,
        {
            "bytes": sent,
            "seconds": finished - started,
            "parts": len(parts),
            "complete_seconds": finished - parts_done,
        },
    )


async def _pipe(url: str, s3: Any, bucket: str, key: str, part_size: int) -> dict[str, Any]:
    import aiohttp

    def upload(number: int, body: bytes) -> dict[str, Any]:
        response = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        pending: asyncio.Task[dict[str, Any]] | None = None
        buffer = bytearray()
        received = 0
        numbers = iter(range(1, 10_001))

        async def ship(body: bytes) -> None:
            nonlocal pending
            if pending is not None:
                parts.append(await pending)
            pending = asyncio.create_task(asyncio.to_thread(upload, next(numbers), body))

        async with session.get(url) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(_READ_CHUNK):
                received += len(chunk)
                buffer += chunk
                if len(buffer) >= part_size:
                    await ship(bytes(buffer[:part_size]))
                    del buffer[:part_size]
        if buffer:
            await ship(bytes(buffer))
        if pending is not None:
            parts.append(await pending)
        parts_done = time.perf_counter()
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        finished = time.perf_counter()
    return {
        "bytes": received,
        "seconds": finished - started,
        "parts": len(parts),
        "complete_seconds": finished - parts_done,
    }


def raw_pipe(url: str, size: int, bucket: str, key: str, part_size: int) -> dict[str, Any]:
    s3 = _s3_client()
    result = asyncio.run(_pipe(url, s3, bucket, key, part_size))
    if result["bytes"] != size:
        raise SystemExit(f"raw pipe read {result['bytes']} bytes, expected {size}")
    return _finish(s3, bucket, key, size, result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http")
    http.add_argument("url")
    http.add_argument("--size", type=int, required=True)
    s3 = sub.add_parser("s3")
    s3.add_argument("--size", type=int, required=True)
    s3.add_argument("--bucket", required=True)
    s3.add_argument("--key", required=True)
    s3.add_argument("--part-mib", type=int, default=8)
    pipe = sub.add_parser("pipe")
    pipe.add_argument("url")
    pipe.add_argument("--size", type=int, required=True)
    pipe.add_argument("--bucket", required=True)
    pipe.add_argument("--key", required=True)
    pipe.add_argument("--part-mib", type=int, default=8)
    args = parser.parse_args(argv)
    if args.kind == "http":
        result = raw_http(args.url, args.size)
    elif args.kind == "s3":
        result = raw_s3(args.size, args.bucket, args.key, args.part_mib * MIB)
    else:
        result = raw_pipe(args.url, args.size, args.bucket, args.key, args.part_mib * MIB)
    status = proc_status()
    result.update(
        mb_per_s=mbps(result["bytes"], result["seconds"]),
        vm_rss_kib=status["VmRSS"],
        vm_hwm_kib=status["VmHWM"],
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
