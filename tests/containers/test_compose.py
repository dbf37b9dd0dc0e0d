"""docker-compose.yml checked without a Docker engine: valid against the official
compose-spec schema, and consistent with the code it runs (dependencies, the service's
settings, what provisioning creates, the download guard, the stop timeout). With a docker
CLI that has compose, `docker compose config` too."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from src.infrastructure.aws.template import load_template, resolve_name
from src.infrastructure.config.settings import REQUIRED_TO_SERVE, Settings, load_settings
from src.infrastructure.http.url_guard import UnsafeUrl, UrlPolicy
from src.processing.service import hand_back_seconds
from tests.containers.container_files import ROOT, compose, environment, seconds

SCHEMA = ROOT / "tests" / "containers" / "schema" / "compose-spec.json"
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"
SERVICE, SANDBOX, LOCALSTACK = "export-service", "sandbox-export-api", "localstack"
COMPOSE_NETWORK_ADDRESS = "172.18.0.5"  # what a compose service name resolves to: private


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(compose()["services"])


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_file_is_valid_against_the_compose_spec_schema() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256, "see schema/README"
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = compose()
    broken["services"][SERVICE]["stop_grace_periode"] = "45s"
    schema = json.loads(SCHEMA.read_text())
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_dependencies_exist_and_their_conditions_can_be_met(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is not one-shot"

    def reaches(start: str, seen: tuple[str, ...] = ()) -> None:
        assert start not in seen, f"dependency cycle: {(*seen, start)}"
        for target in services[start].get("depends_on") or {}:
            reaches(target, (*seen, start))

    for name in services:
        reaches(name)


def test_commands_are_exec_form_modules_that_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            continue
        assert isinstance(command, list) and all(isinstance(p, str) for p in command), name
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, f"{name}: {command[2]}"
        test = (service.get("healthcheck") or {}).get("test")
        assert test is None or (isinstance(test, list) and test[0] == "CMD"), name


def test_every_environment_value_is_a_string(services: dict[str, Any]) -> None:
    """YAML reads `off`, `yes`, `30` as booleans and numbers: compose would pass them on
    as `false`, `true`... Quoted, they are what they say."""
    for name, service in services.items():
        raw = service.get("environment") or {}
        for key, value in raw.items():
            assert isinstance(value, str), f"{name}: {key}={value!r} is not a string"


def test_pulled_images_are_pinned_by_tag_and_digest(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert "@sha256:" in image and ":latest" not in image, f"{name}: {image}"


@pytest.fixture
def service_env(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The service's compose environment, and only it, in this process's environment."""
    env = environment(services[SERVICE])
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_the_service_has_every_setting_it_needs_to_serve(
    services: dict[str, Any], service_env: dict[str, str]
) -> None:
    settings = load_settings(REQUIRED_TO_SERVE)  # raises SettingsError naming what is missing
    assert settings.aws_endpoint == f"http://{LOCALSTACK}:4566"
    health = " ".join(services[SERVICE]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.port}/health/live" in health
    assert f"127.0.0.1:{settings.port}:{settings.port}" in services[SERVICE]["ports"]


_NAME_PROPERTIES = ("QueueName", "TableName", "BucketName", "StateMachineName")


def _template_name(logical_id: str) -> str:
    """The name infra/template.yaml gives a resource, with no NamePrefix (as provisioned)."""
    properties = load_template()["Resources"][logical_id]["Properties"]
    (key,) = [key for key in _NAME_PROPERTIES if key in properties]
    return resolve_name(properties[key], {"NamePrefix": ""})


def test_the_service_uses_what_provisioning_creates(
    services: dict[str, Any], service_env: dict[str, str]
) -> None:
    endpoint = _option(services["provision"]["command"], "--endpoint")
    assert service_env["AWS_ENDPOINT"] == endpoint
    assert (
        service_env["SQS_EXPORT_JOBS_URL"]
        == f"{endpoint}/000000000000/{_template_name('ExportJobsQueue')}"
    )
    assert service_env["SQS_DOWNLOAD_TASKS_URL"] == (
        f"{endpoint}/000000000000/{_template_name('DownloadTasksQueue')}"
    )
    assert service_env["DYNAMODB_TABLE_NAME"] == _template_name("JobTable")
    assert service_env["DYNAMODB_TASKS_TABLE_NAME"] == _template_name("TasksTable")
    assert service_env["S3_BUCKET_NAME"] == _template_name("ExportBucket")
    localstack = environment(services[LOCALSTACK])
    assert localstack["SQS_ENDPOINT_STRATEGY"] == "off"  # URLs as above, not per-region hosts
    assert localstack["LOCALSTACK_HOST"] == urlsplit(endpoint).netloc

    demo = services["demo"]["command"]
    assert _option(demo, "--endpoint") == endpoint
    assert _option(demo, "--name") == _template_name("ExportJobStateMachine")
    assert {"exportId", "userId"} <= set(json.loads(_option(demo, "--input")))


def test_the_service_may_fetch_the_sandbox_files_and_nothing_else_private(
    services: dict[str, Any], service_env: dict[str, str]
) -> None:
    sandbox = services[SANDBOX]["command"]
    public = urlsplit(_option(sandbox, "--public-url"))
    assert public.hostname == SANDBOX and public.port == int(_option(sandbox, "--port"))
    assert service_env["EXPORT_API_BASE_URL"] == public.geturl()

    policy = UrlPolicy.from_setting(service_env["DOWNLOAD_ALLOWED_NETWORKS"])
    file_url = f"{public.geturl()}/files/compose-demo-files-3/0/file-0.bin?X-Amz-Signature=x"
    policy.check_url(file_url)
    policy.check_address(COMPOSE_NETWORK_ADDRESS, host=public.hostname)  # allowed: no raise

    # narrowly: not another container, not a private address by itself, never metadata
    for address, host in (
        (COMPOSE_NETWORK_ADDRESS, LOCALSTACK),
        ("10.0.0.1", None),
        ("169.254.169.254", SANDBOX),
    ):
        with pytest.raises(UnsafeUrl):
            policy.check_address(address, host=host)


def test_the_stop_timeout_covers_the_grace_and_the_hand_back(
    services: dict[str, Any], service_env: dict[str, str]
) -> None:
    grace = load_settings().shutdown_grace_seconds
    stop_timeout = seconds(services[SERVICE]["stop_grace_period"])
    assert stop_timeout >= grace + hand_back_seconds(grace), (stop_timeout, grace)


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine: `docker compose config` not run")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if version.returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin: `docker compose config` not run")
    result = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


_SERVICE_OF = {
    "SQS": "sqs",
    "DynamoDB": "dynamodb",
    "S3": "s3",
    "SNS": "sns",
    "StepFunctions": "stepfunctions",
    "IAM": "iam",
    "Logs": "logs",
    "ECS": "ecs",
}


def test_localstack_enables_every_service_the_template_deploy_uses(
    services: dict[str, Any],
) -> None:
    from src.local.template_deploy import emulator_template

    template, _left_out = emulator_template()
    # Resources under a Condition are the ECS service's, left out without ContainerImage.
    kinds = {
        resource["Type"].split("::")[1]
        for resource in template["Resources"].values()
        if "Condition" not in resource
    }
    # CloudFormation itself; STS for the SDK's account lookups.
    needed = {_SERVICE_OF[kind] for kind in kinds} | {"cloudformation", "sts"}
    enabled = set(environment(services[LOCALSTACK])["SERVICES"].split(","))
    assert needed <= enabled, sorted(needed - enabled)
