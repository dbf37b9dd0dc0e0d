"""A work item carries its task as dispatched (a redelivery reads the record first)."""

from __future__ import annotations

import json
from datetime import timedelta

from src.application.ports.work_queue import TaskRef
from src.domain.download_task import DownloadTask
from src.infrastructure.sqs.work_queue import SqsWorkQueue
from src.processing.consumers.download_tasks import DownloadTaskMessage
from tests.fakes import T0

TASK = DownloadTask(
    job_id="j",
    task_id="00003",
    index=3,
    url="https://files.example/3?X-Amz-Signature=s",
    file_name="part-3.csv",
    output_key="exports/j/3_part-3.csv",
    created_at=T0,
    expected_size=65_536,
    expected_sha256="ab" * 32,
    url_expires_at=T0 + timedelta(hours=1),
)


def body(ref: TaskRef) -> str:
    return SqsWorkQueue._body(ref)


def test_the_dispatched_task_travels_in_the_work_item_and_comes_back_equal():
    message = DownloadTaskMessage.model_validate_json(body(TaskRef("j", "00003", 3, TASK)))
    assert message.dispatched() == TASK


def test_a_work_item_without_the_task_reads_the_record():
    plain = body(TaskRef("j", "00003", 3))  # the reaper's, or an older service's
    assert json.loads(plain) == {"jobId": "j", "taskId": "00003", "index": 3}
    assert DownloadTaskMessage.model_validate_json(plain).dispatched() is None
