"""The state machines' renderer and validator (src/local/asl.py), and the timing inequality
between the export-job's limits and the service's deadlines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from src.infrastructure.config.settings import Settings
from src.local import asl
from src.local.provision import DLQ_MAX_RECEIVE_COUNT

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/export-jobs"
TOPIC = "arn:aws:sns:us-east-1:123456789012:export-notifications"
CHILD = "arn:aws:states:us-east-1:123456789012:stateMachine:export-job"
VALUES: dict[str, dict[str, object]] = {
    "export-job": {
        "ExportJobsQueueUrl": QUEUE,
        "TaskTimeoutSeconds": asl.DEFAULT_TASK_TIMEOUT_SECONDS,
        "HeartbeatSeconds": asl.DEFAULT_HEARTBEAT_SECONDS,
        "NotificationTopicArn": TOPIC,
    },
    "batch-export": {
        "ExportJobStateMachineArn": CHILD,
        "NotificationTopicArn": TOPIC,
        "MaxConcurrency": asl.DEFAULT_MAX_CONCURRENCY,
        "TaskTimeoutSeconds": asl.DEFAULT_TASK_TIMEOUT_SECONDS,
    },
}
MACHINES = sorted(VALUES)


def rendered(machine: str) -> dict[str, Any]:
    return json.loads(asl.render(machine, VALUES[machine]))


# --- Templates and rendering ----------------------------------------------------------------


@pytest.mark.parametrize("machine", MACHINES)
def test_each_template_is_json_with_its_placeholders_inside_strings(machine: str) -> None:
    text = asl.TEMPLATES[machine].text()
    json.loads(text)  # valid JSON before rendering
    names = {p.name for p in asl.TEMPLATES[machine].placeholders}
    assert set(asl.placeholders_in(text)) == names == set(VALUES[machine])


@pytest.mark.parametrize("machine", MACHINES)
def test_each_definition_renders_and_validates(machine: str) -> None:
    definition = rendered(machine)
    assert asl.validate(json.dumps(definition)) == definition
    assert "${" not in json.dumps(definition)


def test_numbers_become_numbers_through_string_to_json() -> None:
    definition = rendered("export-job")
    limits = definition["States"]["MergeDefaults"]["Parameters"]["limits"]
    assert limits == {
        "timeoutSeconds.$": f"States.StringToJson('{asl.DEFAULT_TASK_TIMEOUT_SECONDS}')",
        "heartbeatSeconds.$": f"States.StringToJson('{asl.DEFAULT_HEARTBEAT_SECONDS}')",
    }
    task = definition["States"]["RunExport"]
    assert task["TimeoutSecondsPath"] == "$.limits.timeoutSeconds"
    assert task["HeartbeatSecondsPath"] == "$.limits.heartbeatSeconds"
    assert task["Parameters"]["QueueUrl"] == QUEUE
    batch = rendered("batch-export")
    assert batch["States"]["ExportEach"]["MaxConcurrencyPath"] == "$.limits.maxConcurrency"


def test_the_send_is_retried_only_on_sqs_errors() -> None:
    task = rendered("export-job")["States"]["RunExport"]
    retried = {error for rule in task["Retry"] for error in rule["ErrorEquals"]}
    assert retried == {"SQS.AmazonSQSException", "SQS.SdkClientException"}
    assert task["Catch"][-1]["ErrorEquals"] == ["States.ALL"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TaskTimeoutSeconds": "soon"}, "TaskTimeoutSeconds: a whole number"),
        ({"TaskTimeoutSeconds": 0}, "TaskTimeoutSeconds: at least 1"),
        ({"TaskTimeoutSeconds": True}, "TaskTimeoutSeconds: a whole number"),
        ({"HeartbeatSeconds": 93_600}, "HeartbeatSeconds must be less than TaskTimeoutSeconds"),
        ({"ExportJobsQueueUrl": "export-jobs"}, "ExportJobsQueueUrl: an http(s) URL"),
        ({"ExportJobsQueueUrl": QUEUE + '"'}, "would need escaping"),
        ({"NotificationTopicArn": "topic"}, "NotificationTopicArn: an ARN"),
        ({"Extra": "x"}, "Extra is not a placeholder of export-job"),
    ],
)
def test_values_are_checked_against_their_types(change: dict[str, object], message: str) -> None:
    with pytest.raises(asl.TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        asl.render("export-job", {**VALUES["export-job"], **change})


def test_a_missing_value_is_refused() -> None:
    values = dict(VALUES["export-job"])
    del values["HeartbeatSeconds"]
    with pytest.raises(asl.TemplateError, match=r"no value for \$\{HeartbeatSeconds\}"):
        asl.render("export-job", values)


def test_an_undeclared_placeholder_in_a_template_is_refused() -> None:
    text = asl.EXPORT_JOB.text().replace("${NotificationTopicArn}", "${TopicArn}")
    with pytest.raises(asl.TemplateError, match=r"\$\{TopicArn\} is not a declared placeholder"):
        asl.EXPORT_JOB.render(VALUES["export-job"], text)


def test_segments_join_back_into_the_rendered_definition() -> None:
    text = asl.EXPORT_JOB.text()
    parts = asl.segments(text)
    assert [p.name for p in parts if isinstance(p, asl.Ref)] == asl.placeholders_in(text)
    assert all(p.value for p in parts if isinstance(p, asl.Text))
    values = {k: str(v) for k, v in VALUES["export-job"].items()}
    joined = "".join(p.value if isinstance(p, asl.Text) else values[p.name] for p in parts)
    assert joined == asl.render("export-job", VALUES["export-job"])
    assert asl.segments("a${X}${Y}b") == [asl.Text("a"), asl.Ref("X"), asl.Ref("Y"), asl.Text("b")]


# --- Validation: a broken copy of each is rejected -------------------------------------------

Breakage = Callable[[dict[str, Any]], None]


def _first_pass(machine: dict[str, Any]) -> str:
    return next(n for n, s in machine["States"].items() if s["Type"] == "Pass")


def _first_task(machine: dict[str, Any]) -> str:
    return next(n for n, s in machine["States"].items() if s["Type"] == "Task")


def _missing_target(m: dict[str, Any]) -> None:
    m["States"][_first_pass(m)]["Next"] = "Nowhere"


def _unreachable(m: dict[str, Any]) -> None:
    m["States"]["Orphan"] = {"Type": "Succeed"}


def _task_without_timeout(m: dict[str, Any]) -> None:
    task = m["States"][_first_task(m)]
    task.pop("TimeoutSeconds", None)
    task.pop("TimeoutSecondsPath", None)


def _placeholder_left(m: dict[str, Any]) -> None:
    m["States"][_first_task(m)]["Comment"] = "${ForgottenValue}"


def _schema_violation(m: dict[str, Any]) -> None:
    m["States"][_first_pass(m)]["Nxt"] = "typo"


def _no_way_on(m: dict[str, Any]) -> None:
    del m["States"][_first_pass(m)]["Next"]


BREAKAGES: dict[str, tuple[Breakage, str]] = {
    "missing target": (_missing_target, "'Nowhere': no such state"),
    "unreachable state": (_unreachable, "Orphan: unreachable"),
    "task without timeout": (_task_without_timeout, "a Task without TimeoutSeconds"),
    "unsubstituted placeholder": (_placeholder_left, "${ForgottenValue} left unsubstituted"),
    "schema violation": (_schema_violation, "ASL grammar"),
    "no Next nor End": (_no_way_on, "needs exactly one of Next and End"),
}


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_is_rejected_with_a_clear_message(machine: str, breakage: str) -> None:
    definition = rendered(machine)
    breaks, message = BREAKAGES[breakage]
    breaks(definition)

    with pytest.raises(asl.InvalidDefinition) as raised:
        asl.validate(json.dumps(definition), machine)

    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_the_map_iteration_is_validated_as_a_graph_of_its_own() -> None:
    definition = rendered("batch-export")
    processor = definition["States"]["ExportEach"]["ItemProcessor"]
    processor["States"]["RunExportJob"]["Next"] = "Collect"  # a state of the outer graph

    with pytest.raises(asl.InvalidDefinition, match=r"ExportEach: RunExportJob\.Next"):
        asl.validate(json.dumps(definition))


# --- Timing: the workflow waits longer than the service can take to answer -------------------


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


class _CloudFormationLoader(yaml.SafeLoader):
    pass


_CloudFormationLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _template_defaults() -> dict[str, int]:
    template = yaml.load(  # a SafeLoader that ignores CloudFormation's tags
        (ROOT / "infra" / "template.yaml").read_text(), Loader=_CloudFormationLoader
    )
    parameters = template["Parameters"]
    return {
        name: int(parameters[name]["Default"])
        for name in ("TaskTimeoutSeconds", "HeartbeatSeconds")
    }


def _intake_seconds() -> float:
    """A failing export-job message is retried after 2, 4, 8, 16 s until the DLQ takes it,
    plus one long poll: the longest until the job exists (and is heartbeaten)."""
    backoff = _default("sqs_retry_backoff_seconds")
    cap = _default("sqs_retry_max_backoff_seconds")
    retries = sum(min(backoff * 2**i, cap) for i in range(DLQ_MAX_RECEIVE_COUNT - 1))
    return float(retries + _default("sqs_wait_time_seconds"))


def _longest_answer_seconds() -> float:
    """The latest a workflow's answer can come: the job's deadline (the polling deadline or
    JOB_TIMEOUT_SECONDS, whichever is later), noticed by the reaper within one round, then
    every callback attempt, each under a lease of its own."""
    ends = max(_default("polling_timeout_ms") / 1000, _default("job_timeout_seconds"))
    reaper = _default("reaper_interval_seconds")
    answering = _default("callback_max_attempts") * (_default("callback_lease_seconds") + reaper)
    return _intake_seconds() + ends + reaper + answering


def _answer_retry_seconds() -> float:
    """Heartbeats stop when the job ends; if the replica that won the answer dies before
    sending it, the reaper sends it once that replica's callback lease runs out, within a
    round: the longest a workflow goes without a heartbeat or its answer."""
    return (
        _default("heartbeat_interval_seconds")
        + _default("callback_lease_seconds")
        + _default("reaper_interval_seconds")
    )


def test_the_templates_default_limits_keep_the_timing_inequality() -> None:
    # (asl's defaults, used by the embedded stack, are read from the same template.)
    limits = _template_defaults()
    # TaskTimeoutSeconds > intake + max(polling deadline, job deadline) + reaper round
    #                      + callback attempts x (callback lease + reaper round)
    assert limits["TaskTimeoutSeconds"] > _longest_answer_seconds()
    # HeartbeatSeconds > intake + HEARTBEAT_INTERVAL_SECONDS (the first heartbeat), and
    #                  > HEARTBEAT_INTERVAL_SECONDS + CALLBACK_LEASE + reaper round (an
    #                    answer retried after its replica died), and < TaskTimeoutSeconds
    heartbeat = limits["HeartbeatSeconds"]
    assert _intake_seconds() + _default("heartbeat_interval_seconds") < heartbeat
    assert _answer_retry_seconds() < heartbeat
    assert heartbeat < limits["TaskTimeoutSeconds"]
    # A late export ends as the service's ExportTimedOut, never as the workflow's timeout.
    assert _default("polling_timeout_ms") / 1000 < limits["TaskTimeoutSeconds"]
    assert (
        limits["TaskTimeoutSeconds"],
        limits["HeartbeatSeconds"],
    ) == (asl.DEFAULT_TASK_TIMEOUT_SECONDS, asl.DEFAULT_HEARTBEAT_SECONDS)


def test_the_numbers_in_the_readme_are_these() -> None:
    assert _intake_seconds() == 50
    assert _longest_answer_seconds() == 89_780
    assert _answer_retry_seconds() == 390
