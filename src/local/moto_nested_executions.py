"""moto's ``states:startExecution`` integration (``.sync``, ``.sync:2``) cannot start a child.

moto's interpreter comes from LocalStack, whose service integrations translate between the
names a state machine uses and boto's: the parameters (``StateMachineArn``, ``Input``,
``Name``) to boto's members (``stateMachineArn``, ...) and boto's responses back to the
capitalised names AWS shows a state machine (``ExecutionArn``, ``Status``, ``Output``, ...).
moto 5.2.5 keeps the calls but stubs the translation out, so every StartExecution from a
state machine fails inside botocore (``KeyError: 'StateMachineArn'``, reported as
``States.Runtime``), and the ``.sync`` poller then reads ``ExecutionArn`` from an
untranslated response. AWS's ``.sync:2`` output, and the cause of a failed child
(``States.TaskFailed``), is the DescribeExecution response with capitalised names and
``Input``/``Output`` as JSON. Here both translations are put back for this integration:
the parameters' first letter is lowered, the response's names get their first letter
raised, leaving the child's own ``Input`` and ``Output`` documents as they are. A child
started without a ``Name`` gets a UUID, as on AWS (moto named each one None).

Only the patched (embedded) emulator applies this; plain moto cannot run nested
executions (recorded in the README's fidelity gaps)."""

from __future__ import annotations

import uuid
from typing import Any

_DOCUMENTS = {"input", "output"}  # the child's own JSON: never renamed


def _pascal(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key[:1].upper() + key[1:]: item if key in _DOCUMENTS else _pascal(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_pascal(item) for item in value]
    return value


def apply() -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    to_boto = StateTaskServiceSfn._normalise_parameters

    def normalise_parameters(
        self: Any,
        parameters: dict[str, Any],
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        to_boto(self, parameters, boto_service_name, service_action_name)
        for key in list(parameters):
            if key[:1].isupper():
                parameters[key[:1].lower() + key[1:]] = parameters.pop(key)
        # AWS names an execution started without a Name with a UUID; moto named every
        # such child "None", so the second one was refused (ExecutionAlreadyExists).
        parameters.setdefault("name", str(uuid.uuid4()))

    def normalise_response(
        self: Any,
        response: Any,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        if isinstance(response, dict):
            renamed = _pascal(response)
            response.clear()
            response.update(renamed)

    StateTaskServiceSfn._normalise_parameters = normalise_parameters  # type: ignore[method-assign]
    StateTaskServiceSfn._normalise_response = normalise_response  # type: ignore[method-assign]
