"""Domain errors: rules of the model that a caller broke."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule violation in the domain."""


class IllegalTransition(DomainError):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"illegal job transition {current} -> {target}")
        self.current = current
        self.target = target


class InvalidCounters(DomainError):
    """completed + failed may never exceed total."""


class JobErrorCode:
    """The original service's error codes, stored on the job item as error.code."""

    EXPORT_API_FAILED = "EXPORT_API_FAILED"
    EXPORT_EXPIRED = "EXPORT_EXPIRED"
    POLLING_TIMEOUT = "POLLING_TIMEOUT"
    PROCESSING_ERROR = "PROCESSING_ERROR"
    CANCELLED = "CANCELLED"


class CallbackError:
    """Error names sent to the workflow with SendTaskFailure."""

    COMPLETED_WITH_FAILURES = "JobCompletedWithFailures"
    EXPORT_FAILED = "ExportFailed"
    EXPORT_EXPIRED = "ExportExpired"
    EXPORT_TIMED_OUT = "ExportTimedOut"
    JOB_CANCELLED = "JobCancelled"
    PROCESSING_ERROR = "ProcessingError"
    JOB_ID_CONFLICT = "JobIdConflict"  # same jobId, another exportId/userId
    TOO_MANY_WAITING = "TooManyWaitingWorkflows"  # the job's waiting list is full


# Which workflow error answers which job error.
CALLBACK_ERROR_FOR_CODE: dict[str, str] = {
    JobErrorCode.EXPORT_API_FAILED: CallbackError.EXPORT_FAILED,
    JobErrorCode.EXPORT_EXPIRED: CallbackError.EXPORT_EXPIRED,
    JobErrorCode.POLLING_TIMEOUT: CallbackError.EXPORT_TIMED_OUT,
    JobErrorCode.PROCESSING_ERROR: CallbackError.PROCESSING_ERROR,
    JobErrorCode.CANCELLED: CallbackError.JOB_CANCELLED,
}
