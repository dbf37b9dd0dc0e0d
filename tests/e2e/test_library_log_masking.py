"""At LOG_LEVEL=debug every library logs more (aiohttp, uvicorn, the AWS SDK at INFO: its
debug lines dump whole request bodies, where a task token can sit under an update
expression's placeholder, so they are never logged): all of it goes through the service's
masking, and no line shows a task token or a URL's query string."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from src.local.stack import EmbeddedStack
from tests.support.aws import Aws
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e


def test_no_library_line_shows_a_task_token_or_a_query_string(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    env = {**embedded_stack.env(embedded_stack.provision("dbglog-")),
           "POLLING_INTERVAL_MS": "300", "SQS_WAIT_TIME_SECONDS": "1"}  # fmt: skip
    service = ServiceProcess(env, tmp_path / "service.log", LOG_LEVEL="debug").start()
    aws = Aws(env)
    try:
        job_id = str(uuid.uuid4())
        arn = aws.start_execution({"jobId": job_id, "exportId": "files-2", "userId": "u"})
        assert aws.wait_execution(arn)["status"] == "SUCCEEDED"
        aws.wait_answered(job_id)
        token = aws.job(job_id)["taskToken"]
    finally:
        service.stop()

    text = service.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    loggers = {line.get("logger", "") for line in lines}
    assert any(name.startswith(("botocore", "aiobotocore")) for name in loggers), sorted(loggers)
    assert any(name.startswith("uvicorn") for name in loggers), sorted(loggers)
    assert any(line["level"] == "debug" for line in lines)
    assert not any(line["level"] == "debug" and line.get("logger", "").startswith(("botocore", "aiobotocore"))
                   for line in lines)  # fmt: skip
    assert token not in text
    assert "X-Amz-Signature=" not in text and "X-Amz-Credential=" not in text
