"""The composition root: the only module that knows every concrete class."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from dependency_injector import containers, providers

from src.application.services.recent_jobs import RecentJobs
from src.application.services.workflow_answers import WorkflowAnswers
from src.application.use_cases.cancel_job import CancelJob
from src.application.use_cases.complete_job import CompleteJob
from src.application.use_cases.dispatch_download_tasks import (
    DispatchDownloadTasks,
    DispatchPolicy,
)
from src.application.use_cases.job_stats import JobStats
from src.application.use_cases.operator_actions import ResendAnswer, RetryFailedFiles
from src.application.use_cases.poll_export_status import PollExportStatus
from src.application.use_cases.process_file import ProcessFile
from src.application.use_cases.reap_stuck_jobs import ReaperPolicy, ReapStuckJobs
from src.application.use_cases.send_heartbeats import SendHeartbeats
from src.application.use_cases.start_export_job import StartExportJob
from src.domain.export_limits import ExportLimits
from src.domain.polling import PollPolicy
from src.infrastructure.aws.clients import new_session, open_client
from src.infrastructure.aws.readiness import DependencyProbe
from src.infrastructure.clock import SystemClock
from src.infrastructure.config.settings import Settings
from src.infrastructure.dynamodb.job_queries import DynamoDbJobQueries
from src.infrastructure.dynamodb.job_repository import DynamoDbJobRepository
from src.infrastructure.dynamodb.leases import DynamoDbLeases
from src.infrastructure.dynamodb.task_repository import DynamoDbTaskRepository
from src.infrastructure.events.logging_publisher import LoggingEventPublisher
from src.infrastructure.events.metrics_publisher import MetricsEventPublisher
from src.infrastructure.http.export_api_client import AiohttpExportApi
from src.infrastructure.http.file_transfer import TransferLimits, open_file_transfer
from src.infrastructure.http.session import open_http_session
from src.infrastructure.sqs.dead_letters import SqsDeadLetters
from src.infrastructure.sqs.message_queue import SqsMessageQueue
from src.infrastructure.sqs.work_queue import SqsWorkQueue
from src.infrastructure.stepfunctions.callbacks import StepFunctionsCallbacks
from src.processing.api.app import AdminContext
from src.processing.api.auth import ApiKeys, split_keys
from src.processing.consumers.download_tasks import DownloadTaskHandler
from src.processing.consumers.export_jobs import ExportJobHandler
from src.processing.consumers.loop import ConsumerSettings, SqsConsumer
from src.processing.periodic import Periodic
from src.processing.rounds import dispatch_round, heartbeat_round, polling_round, reaper_round

_MIB = 1024 * 1024


def _transfer_limits(s: Settings) -> TransferLimits:
    return TransferLimits(
        max_bytes=s.max_file_size_mb * _MIB,
        timeout_seconds=s.download_timeout_seconds,
        max_attempts=s.download_max_attempts,
        part_size=s.s3_part_size_mb * _MIB,
        multipart_threshold=s.s3_multipart_threshold_mb * _MIB,
        parts_in_flight=s.s3_parts_in_flight,
        max_redirects=s.download_max_redirects,
        read_timeout_seconds=s.download_read_timeout_seconds,
    )


def _poll_policy(s: Settings) -> PollPolicy:
    return PollPolicy(
        first_interval=timedelta(milliseconds=s.polling_interval_ms),
        max_interval=timedelta(milliseconds=max(s.polling_max_interval_ms, s.polling_interval_ms)),
        max_attempts=s.max_polling_attempts,
        deadline=timedelta(milliseconds=s.polling_timeout_ms),
    )


def _reaper_policy(s: Settings) -> ReaperPolicy:
    return ReaperPolicy(
        # A dead reaper's lease runs out after three rounds; overlap is harmless anyway.
        lease=timedelta(seconds=max(5.0, 3 * s.reaper_interval_seconds)),
        callback_lease=timedelta(seconds=s.callback_lease_seconds),
        max_callback_attempts=s.callback_max_attempts,
        stall_after=timedelta(seconds=s.download_stall_seconds),
        job_deadline=timedelta(seconds=s.job_timeout_seconds),
    )


def _dispatch_policy(s: Settings) -> DispatchPolicy:
    return DispatchPolicy(
        chunk=s.dispatch_chunk_size,
        lease=timedelta(seconds=s.dispatch_lease_seconds),
        max_attempts=s.dispatch_max_attempts,
        # a failed chunk is tried again after a third of a lease
        retry_after=timedelta(seconds=s.dispatch_lease_seconds / 3),
    )


def _heartbeats_if_enabled(settings: Settings, heartbeats: SendHeartbeats) -> SendHeartbeats | None:
    """HEARTBEAT_INTERVAL_SECONDS=0 disables heartbeats, the poller's ones too."""
    return heartbeats if settings.heartbeat_interval_seconds > 0 else None


def _poll_lease(s: Settings) -> timedelta:
    """Renewed every third while the Export API answers (retries included): a poll never
    outlives it, and at the default backoff cap (60 s) a claim's lease ends exactly when
    the next poll is due, so a poll that finds the export not ready writes nothing more."""
    return timedelta(seconds=s.poll_lease_seconds)


def _consumer_settings(s: Settings, concurrency: int) -> ConsumerSettings:
    return ConsumerSettings(
        max_messages=s.sqs_max_messages,
        wait_seconds=s.sqs_wait_time_seconds,
        visibility_timeout=s.sqs_visibility_timeout,
        concurrency=concurrency,
        retry_backoff_seconds=s.sqs_retry_backoff_seconds,
        retry_backoff_max_seconds=s.sqs_retry_max_backoff_seconds,
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
    events = providers.Singleton(
        MetricsEventPublisher, inner=providers.Singleton(LoggingEventPublisher)
    )
    jobs = providers.Singleton(
        DynamoDbJobRepository,
        client=dynamodb,
        table_name=settings.provided.dynamodb_table_name,
        tasks_table=settings.provided.dynamodb_tasks_table_name,
    )
    tasks = providers.Singleton(
        DynamoDbTaskRepository,
        client=dynamodb,
        tasks_table=settings.provided.dynamodb_tasks_table_name,
        jobs_table=settings.provided.dynamodb_table_name,
    )
    leases = providers.Singleton(
        DynamoDbLeases, client=dynamodb, table_name=settings.provided.dynamodb_tasks_table_name
    )
    callbacks = providers.Singleton(StepFunctionsCallbacks, client=sfn)
    export_api = providers.Singleton(
        AiohttpExportApi,
        session=http,
        base_url=settings.provided.export_api_base_url,
        timeout_seconds=settings.provided.export_api_timeout_seconds,
        max_retries=settings.provided.export_api_max_retries,
    )
    file_transfer = providers.Resource(
        open_file_transfer,
        s3=s3,
        bucket=settings.provided.s3_bucket_name,
        limits=providers.Callable(_transfer_limits, settings),
        allowed_networks=settings.provided.download_allowed_networks,
    )
    export_jobs_queue = providers.Singleton(
        SqsMessageQueue, client=sqs, queue_url=settings.provided.sqs_export_jobs_url
    )
    download_tasks_queue = providers.Singleton(
        SqsMessageQueue, client=sqs, queue_url=settings.provided.sqs_download_tasks_url
    )
    export_jobs_dead_letters = providers.Singleton(
        SqsDeadLetters, client=sqs, queue_url=settings.provided.sqs_export_jobs_url
    )
    download_tasks_dead_letters = providers.Singleton(
        SqsDeadLetters, client=sqs, queue_url=settings.provided.sqs_download_tasks_url
    )
    work_queue = providers.Singleton(
        SqsWorkQueue,
        client=sqs,
        queue_url=settings.provided.sqs_download_tasks_url,
        batch_size=settings.provided.dispatch_batch_size,
    )

    # Use cases
    poll_policy = providers.Callable(_poll_policy, settings)
    workflow_answers = providers.Factory(
        WorkflowAnswers, jobs=jobs, callbacks=callbacks, clock=clock, events=events
    )
    start_export_job = providers.Factory(
        StartExportJob,
        jobs=jobs,
        events=events,
        clock=clock,
        answers=workflow_answers,
        policy=poll_policy,
        max_waiting=settings.provided.max_waiting_workflows,
    )
    complete_job = providers.Factory(
        CompleteJob,
        jobs=jobs,
        callbacks=callbacks,
        events=events,
        clock=clock,
        callback_lease=providers.Callable(
            lambda s: timedelta(seconds=s.callback_lease_seconds), settings
        ),
    )
    dispatch = providers.Factory(
        DispatchDownloadTasks,
        jobs=jobs,
        tasks=tasks,
        queue=work_queue,
        complete_job=complete_job,
        clock=clock,
        s3_prefix=settings.provided.s3_prefix,
        export_api=export_api,
        policy=providers.Callable(_dispatch_policy, settings),
        limits=providers.Factory(ExportLimits, max_files=settings.provided.max_files_per_job),
    )
    cancel_job = providers.Factory(
        CancelJob, jobs=jobs, complete_job=complete_job, events=events, clock=clock
    )
    send_heartbeats = providers.Factory(
        SendHeartbeats,
        jobs=jobs,
        callbacks=callbacks,
        cancel_job=cancel_job,
        clock=clock,
        interval=providers.Callable(
            lambda s: timedelta(seconds=s.heartbeat_interval_seconds), settings
        ),
    )
    poll_export_status = providers.Factory(
        PollExportStatus,
        jobs=jobs,
        export_api=export_api,
        dispatch=dispatch,
        complete_job=complete_job,
        clock=clock,
        policy=poll_policy,
        lease=providers.Callable(_poll_lease, settings),
        heartbeats=providers.Callable(_heartbeats_if_enabled, settings, send_heartbeats),
    )
    # one per replica: its workers share what they read of each job
    recent_jobs = providers.Singleton(RecentJobs, jobs=jobs, clock=clock)
    process_file = providers.Factory(
        ProcessFile,
        recent=recent_jobs,
        tasks=tasks,
        transfer=file_transfer,
        complete_job=complete_job,
        events=events,
        clock=clock,
        lease=providers.Callable(lambda s: timedelta(seconds=s.work_lease_seconds), settings),
        export_api=export_api,
        url_margin=providers.Callable(
            lambda s: timedelta(seconds=s.url_refresh_margin_seconds), settings
        ),
        # below the multipart threshold a file is one PUT: nothing to resume, no lease
        unleased_below=providers.Callable(lambda s: s.s3_multipart_threshold_mb * _MIB, settings),
    )

    # Driving side
    jobs_started = providers.Singleton(asyncio.Event)  # intake → this replica's poller
    export_job_consumer = providers.Factory(
        SqsConsumer,
        name="export-jobs",
        queue=export_jobs_queue,
        handler=providers.Factory(
            ExportJobHandler, start_job=start_export_job, started=jobs_started
        ),
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

    reap_stuck_jobs = providers.Factory(
        ReapStuckJobs,
        jobs=jobs,
        tasks=tasks,
        queue=work_queue,
        complete_job=complete_job,
        leases=leases,
        clock=clock,
        policy=providers.Callable(_reaper_policy, settings),
    )

    # Driving side: periodic rounds
    poller = providers.Factory(
        Periodic,
        name="poller",
        round_=providers.Callable(
            polling_round, poll_export_status, owner, settings.provided.poller_batch_size
        ),
        tick_seconds=providers.Callable(lambda s: s.poller_tick_ms / 1000, settings),
        batch=settings.provided.poller_batch_size,
        parallel_rounds=settings.provided.poller_parallel_rounds,
        # never longer than the first poll interval: a poll is at most that late
        # never longer than the first poll interval: a due poll is at most that late
        idle_tick_seconds=providers.Callable(
            lambda s: min(s.poller_idle_tick_ms, s.polling_interval_ms) / 1000, settings
        ),
        wake=jobs_started,
    )
    dispatcher = providers.Factory(
        Periodic,
        name="dispatch",
        round_=providers.Callable(dispatch_round, dispatch, owner, 5),
        tick_seconds=settings.provided.dispatch_resume_interval_seconds,
        batch=5,
        parallel_rounds=2,
        idle_tick_seconds=providers.Callable(
            lambda s: 3 * s.dispatch_resume_interval_seconds, settings
        ),
    )
    heartbeater = providers.Factory(
        Periodic,
        name="heartbeats",
        round_=providers.Callable(heartbeat_round, send_heartbeats, 100),
        # Check often; each job's own heartbeat is due only every interval.
        tick_seconds=providers.Callable(
            lambda s: max(0.2, min(5.0, s.heartbeat_interval_seconds / 4)), settings
        ),
        # idle, a new job's first heartbeat comes at most a quarter interval late
        idle_tick_seconds=providers.Callable(
            lambda s: max(0.2, s.heartbeat_interval_seconds / 4), settings
        ),
        batch=100,
    )
    reaper = providers.Factory(
        Periodic,
        name="reaper",
        round_=providers.Callable(reaper_round, reap_stuck_jobs, owner),
        tick_seconds=settings.provided.reaper_interval_seconds,
        batch=1_000_000,  # never loop at once: one round per tick
    )

    # The admin API
    job_queries = providers.Singleton(
        DynamoDbJobQueries,
        client=dynamodb,
        table_name=settings.provided.dynamodb_table_name,
        tasks_table=settings.provided.dynamodb_tasks_table_name,
    )
    probe = providers.Singleton(
        DependencyProbe,
        dynamodb=dynamodb,
        sqs=sqs,
        s3=s3,
        jobs_table=settings.provided.dynamodb_table_name,
        tasks_table=settings.provided.dynamodb_tasks_table_name,
        queues=providers.Callable(
            lambda s: {
                "export-jobs": s.sqs_export_jobs_url,
                "download-tasks": s.sqs_download_tasks_url,
            },
            settings,
        ),
        bucket=settings.provided.s3_bucket_name,
        prefix=settings.provided.s3_prefix,
    )
    api_keys = providers.Singleton(
        lambda s: ApiKeys(
            split_keys(s.admin_api_keys),
            split_keys(s.admin_readonly_keys),
            disabled=s.admin_auth_disabled,
        ),
        settings,
    )
    retry_failed_files = providers.Factory(
        RetryFailedFiles,
        jobs=jobs,
        tasks=tasks,
        queue=work_queue,
        clock=clock,
        job_deadline=providers.Callable(
            lambda s: timedelta(seconds=s.job_timeout_seconds), settings
        ),
    )
    resend_answer = providers.Factory(
        ResendAnswer,
        jobs=jobs,
        complete_job=complete_job,
        clock=clock,
        lease=providers.Callable(lambda s: timedelta(seconds=s.callback_lease_seconds), settings),
    )
    job_stats = providers.Factory(JobStats, queries=job_queries)
    admin_context = providers.Factory(
        AdminContext,
        keys=api_keys,
        queries=job_queries,
        jobs=jobs,
        start_job=start_export_job,
        cancel_job=cancel_job,
        retry=retry_failed_files,
        resend=resend_answer,
        stats=job_stats,
        dead_letters=providers.Dict(
            {"export-jobs": export_jobs_dead_letters, "download-tasks": download_tasks_dead_letters}
        ),
        probe=probe,
        metrics_public=settings.provided.metrics_public,
    )
