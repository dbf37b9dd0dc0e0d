"""What the use cases are asked to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from src.domain.download_task import DownloadTask
from src.domain.export_job import ExportJob, JobError
from src.domain.task_token import TaskToken


@dataclass(frozen=True, slots=True)
class StartExportJobCommand:
    job_id: str
    export_id: str
    user_id: str
    metadata: Mapping[str, object] = field(default_factory=dict)
    task_token: TaskToken | None = None
    execution_arn: str | None = None  # the sending execution, for tracing


@dataclass(frozen=True, slots=True)
class CompleteJobCommand:
    """Finish the job: COMPLETED when `failure` is None and every file is counted,
    FAILED with `failure` otherwise; then answer the workflow."""

    job_id: str
    failure: JobError | None = None
    # The final (completed, failed), from whoever counted the last file: not read again.
    final_counts: tuple[int, int] | None = None
    # The job as the caller holds it (e.g. just claimed): the first try writes from it
    # without a read; if it is stale, the conditional write fails and the job is read.
    held: ExportJob | None = None


@dataclass(frozen=True, slots=True)
class PollDueJobsCommand:
    """Claim up to `limit` due jobs for `owner` and poll each once."""

    owner: str
    limit: int = 25


@dataclass(frozen=True, slots=True)
class ResumeDispatchCommand:
    """Claim up to `limit` dispatches whose dispatcher is gone and carry each on."""

    owner: str
    limit: int = 5


@dataclass(frozen=True, slots=True)
class ProcessFileCommand:
    job_id: str
    task_id: str
    owner: str
    # The task as dispatched, carried by the work item: on its first delivery no read is
    # needed to rediscover it. None (an older work item): read the record.
    dispatched: DownloadTask | None = None
    # Seen before: a worker may have stored a lease or a checkpoint, so the record (if
    # any) is read first.
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class CancelJobCommand:
    """Stop a job. `notify_workflow`: answer the workflow with JobCancelled (an operator
    cancel); False when the workflow itself gave up and its token is dead."""

    job_id: str
    message: str
    notify_workflow: bool = True
    gone_code: str | None = None  # why the workflow is gone, recorded on the callback
    # The workflows known to be gone (token digests): the job is cancelled only if no
    # other workflow still waits on it, judged on the job as read now.
    closed_tokens: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SendHeartbeatsCommand:
    limit: int = 100


@dataclass(frozen=True, slots=True)
class ReapCommand:
    owner: str
    limit: int = 100
