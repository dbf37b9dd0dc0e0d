"""The composition root: the only module that knows every concrete class."""

from __future__ import annotations

from datetime import timedelta

from dependency_injector import containers, providers

from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.dispatch_download_tasks import DispatchDownloadTasks
from src.application.use_cases.poll_export_status import PollExportStatus
from src.application.use_cases.process_file import ProcessFile
from src.application.use_cases.start_export_job import StartExportJob
from src.domain.polling import PollPolicy
from src.infrastructure.aws.clients import new_session, open_client
from src.infrastructure.clock import SystemClock
from src.infrastructure.config.settings import Settings
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.infrastructure.dynamodb.task_repository import DynamoDbTaskRepository
from src.infrastructure.events.logging_publisher import LoggingEventPublisher
from src.infrastructure.http.export_api_client import AiohttpExportApi
from src.infrastructure.http.file_transfer import AiohttpFileTransfer, TransferLimits
from src.infrastructure.http.session import open_http_session
from src.infrastructure.sqs.message_queue import SqsMessageQueue
from src.infrastructure.sqs.work_queue import SqsWorkQueue
from src.infrastructure.stepfunctions.callbacks import StepFunctionsCallbacks
from src.processing.consumers.download_tasks import DownloadTaskHandler
from src.processing.consumers.export_jobs import ExportJobHandler
from src.processing.consumers.loop import ConsumerSettings, SqsConsumer
from src.processing.poller import Poller

_MIB = 1024 * 1024


def _transfer_limits(s: Settings) -> TransferLimits:
    return TransferLimits(
        max_bytes=s.max_file_size_mb * _MIB,
        timeout_seconds=s.download_timeout_seconds,
        max_attempts=s.download_max_attempts,
        part_size=s.s3_part_size_mb * _MIB,
        multipart_threshold=s.s3_multipart_threshold_mb * _MIB,
        parts_in_flight=s.s3_parts_in_flight,
    )


def _poll_policy(s: Settings) -> PollPolicy:
    return PollPolicy(
        first_interval=timedelta(milliseconds=s.polling_interval_ms),
        max_interval=timedelta(milliseconds=max(s.polling_max_interval_ms, s.polling_interval_ms)),
        max_attempts=s.max_polling_attempts,
        deadline=timedelta(milliseconds=s.polling_timeout_ms),
    )


def _consumer_settings(s: Settings, concurrency: int) -> ConsumerSettings:
    return ConsumerSettings(
        max_messages=s.sqs_max_messages,
        wait_seconds=s.sqs_wait_time_seconds,
        visibility_timeout=s.sqs_visibility_timeout,
        concurrency=concurrency,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings)
    owner = providers.Callable(lambda s: s.instance_id, settings)

    aws_session = providers.Singleton(new_session, settings)
    dynamodb = providers.Resource(open_client, aws_session, "dynamodb", settings)
    sqs = providers.Resource(open_client, aws_session, "sqs", settings)
    s3 = providers.Resource(open_client, aws_session, "s3", settings)
    sfn = providers.Resource(open_client, aws_session, "stepfunctions", settings)
    http = providers.Resource(open_http_session)

    # Driven adapters
    clock = providers.Singleton(SystemClock)
    events = providers.Singleton(LoggingEventPublisher)
    jobs = providers.Singleton(
        DynamoDbJobRepository, client=dynamodb, table_name=settings.provided.dynamodb_table_name
    )
    tasks = providers.Singleton(
        DynamoDbTaskRepository,
        client=dynamodb,
        tasks_table=settings.provided.dynamodb_tasks_table_name,
        jobs_table=settings.provided.dynamodb_table_name,
    )
    callbacks = providers.Singleton(StepFunctionsCallbacks, client=sfn)
    export_api = providers.Singleton(
        AiohttpExportApi,
        session=http,
        base_url=settings.provided.export_api_base_url,
        timeout_seconds=settings.provided.export_api_timeout_seconds,
        max_retries=settings.provided.export_api_max_retries,
    )
    file_transfer = providers.Singleton(
        AiohttpFileTransfer,
        session=http,
        s3=s3,
        bucket=settings.provided.s3_bucket_name,
        limits=providers.Callable(_transfer_limits, settings),
    )
    export_jobs_queue = providers.Singleton(
        SqsMessageQueue, client=sqs, queue_url=settings.provided.sqs_export_jobs_url
    )
    download_tasks_queue = providers.Singleton(
        SqsMessageQueue, client=sqs, queue_url=settings.provided.sqs_download_tasks_url
    )
    work_queue = providers.Singleton(
        SqsWorkQueue,
        client=sqs,
        queue_url=settings.provided.sqs_download_tasks_url,
        batch_size=settings.provided.dispatch_batch_size,
    )

    # Use cases
    poll_policy = providers.Callable(_poll_policy, settings)
    start_export_job = providers.Factory(
        StartExportJob, jobs=jobs, events=events, clock=clock, policy=poll_policy
    )
    complete_job = providers.Factory(
        CompleteJob, jobs=jobs, callbacks=callbacks, events=events, clock=clock
    )
    dispatch = providers.Factory(
        DispatchDownloadTasks,
        jobs=jobs,
        tasks=tasks,
        queue=work_queue,
        complete_job=complete_job,
        clock=clock,
        s3_prefix=settings.provided.s3_prefix,
    )
    poll_export_status = providers.Factory(
        PollExportStatus,
        jobs=jobs,
        export_api=export_api,
        dispatch=dispatch,
        complete_job=complete_job,
        clock=clock,
        policy=poll_policy,
        lease=providers.Callable(lambda s: timedelta(seconds=s.poll_lease_seconds), settings),
    )
    process_file = providers.Factory(
        ProcessFile,
        jobs=jobs,
        tasks=tasks,
        transfer=file_transfer,
        complete_job=complete_job,
        events=events,
        clock=clock,
        lease=providers.Callable(lambda s: timedelta(seconds=s.download_lease_seconds), settings),
    )

    # Driving side
    export_job_consumer = providers.Factory(
        SqsConsumer,
        name="export-jobs",
        queue=export_jobs_queue,
        handler=providers.Factory(ExportJobHandler, start_job=start_export_job),
        settings=providers.Callable(
            _consumer_settings, settings, settings.provided.max_concurrent_jobs
        ),
    )
    download_task_consumer = providers.Factory(
        SqsConsumer,
        name="download-tasks",
        queue=download_tasks_queue,
        handler=providers.Factory(DownloadTaskHandler, process_file=process_file, owner=owner),
        settings=providers.Callable(
            _consumer_settings, settings, settings.provided.download_concurrency
        ),
    )
    poller = providers.Factory(
        Poller,
        poll=poll_export_status,
        owner=owner,
        tick_seconds=providers.Callable(lambda s: s.poller_tick_ms / 1000, settings),
        batch=settings.provided.poller_batch_size,
    )
