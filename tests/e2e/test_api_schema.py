"""schemathesis over the admin API's own OpenAPI schema, on the real service: whatever
valid requests it generates, no answer is a 5xx and every answer matches the schema
(status codes, content types, bodies)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from src.local.stack import EmbeddedStack
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

KEY = "schema-test-key"


@pytest.fixture(scope="module")
def service(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    env = {**embedded_stack.env(embedded_stack.provision("schema-")), "ADMIN_API_KEYS": KEY,
           "POLLING_INTERVAL_MS": "300", "SQS_WAIT_TIME_SECONDS": "1"}  # fmt: skip
    process = ServiceProcess(env, tmp_path_factory.mktemp("schema") / "service.log").start()
    yield process
    process.stop()


def test_no_server_errors_and_no_schema_violations(service: ServiceProcess) -> None:
    """Every operation of the schema, up to 12 generated requests each (schemathesis'
    pytest plugin does not run under pytest 9: its strategies are driven directly)."""
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{service.port}/openapi.json")
    validations = (
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.response_headers_conformance,
    )
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        # The DLQ routes wait on SQS long polls (a second each): fewer examples there.
        examples = 3 if "/dlq" in operation.label else 12

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": KEY}, timeout=30, checks=validations)

        exercise()
        tested.append(operation.label)
    assert len(tested) >= 12, tested
