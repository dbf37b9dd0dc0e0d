"""The composition root: the only module that knows every concrete class."""

from __future__ import annotations

from dependency_injector import containers, providers

from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.run_export import ExportSettings, RunExport
from src.application.use_cases.start_export_job import StartExportJob
from src.infrastructure.aws.clients import new_session, open_client
from src.infrastructure.clock import SystemClock
from src.infrastructure.config.settings import Settings
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.infrastructure.events.logging_publisher import LoggingEventPublisher
from src.infrastructure.http.export_api_client import AiohttpExportApi
from src.infrastructure.http.file_transfer import AiohttpFileTransfer, TransferLimits
from src.infrastructure.http.session import open_http_session
from src.infrastructure.sqs.message_queue import SqsMessageQueue
from src.infrastructure.stepfunctions.callbacks import StepFunctionsCallbacks
from src.processing.consumers.export_jobs import ExportJobHandler
from src.processing.consumers.loop import ConsumerSettings, SqsConsumer

_MIB = 1024 * 1024


def _transfer_limits(settings: Settings) -> TransferLimits:
    return TransferLimits(
        max_bytes=settings.max_file_size_mb * _MIB,
        timeout_seconds=settings.download_timeout_seconds,
        max_attempts=settings.download_max_attempts,
        part_size=settings.s3_part_size_mb * _MIB,
        multipart_threshold=settings.s3_multipart_threshold_mb * _MIB,
    )


def _export_settings(settings: Settings) -> ExportSettings:
    return ExportSettings(
        s3_prefix=settings.s3_prefix,
        poll_interval_seconds=settings.polling_interval_seconds,
        max_poll_attempts=settings.max_polling_attempts,
        max_parallel_files=settings.download_concurrency,
    )


def _consumer_settings(settings: Settings) -> ConsumerSettings:
    return ConsumerSettings(
        max_messages=settings.sqs_max_messages,
        wait_seconds=settings.sqs_wait_time_seconds,
        visibility_timeout=settings.sqs_visibility_timeout,
        concurrency=settings.max_concurrent_jobs,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Singleton(Settings)

    aws_session = providers.Singleton(new_session, settings)
    dynamodb = providers.Resource(open_client, aws_session, "dynamodb", settings)
    sqs = providers.Resource(open_client, aws_session, "sqs", settings)
    s3 = providers.Resource(open_client, aws_session, "s3", settings)
    sfn = providers.Resource(open_client, aws_session, "stepfunctions", settings)
    http = providers.Resource(open_http_session)

    clock = providers.Singleton(SystemClock)
    events = providers.Singleton(LoggingEventPublisher)
    jobs = providers.Singleton(
        DynamoDbJobRepository, client=dynamodb, table_name=settings.provided.dynamodb_table_name
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

    start_export_job = providers.Factory(StartExportJob, jobs=jobs, events=events, clock=clock)
    complete_job = providers.Factory(
        CompleteJob, jobs=jobs, callbacks=callbacks, events=events, clock=clock
    )
    run_export = providers.Factory(
        RunExport,
        jobs=jobs,
        export_api=export_api,
        transfer=file_transfer,
        complete_job=complete_job,
        clock=clock,
        settings=providers.Callable(_export_settings, settings),
    )

    export_job_consumer = providers.Factory(
        SqsConsumer,
        name="export-jobs",
        queue=export_jobs_queue,
        handler=providers.Factory(
            ExportJobHandler, start_job=start_export_job, run_export=run_export
        ),
        settings=providers.Callable(_consumer_settings, settings),
    )
