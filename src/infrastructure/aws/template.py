"""infra/template.yaml, read as data: the one definition of the service's AWS resources.

Used by `export-service migrate` (the tables and indexes this service adds to the original's)
and by the emulator's deploy (src/local/template_deploy.py). CloudFormation's short-form
tags (`!Ref`, `!Sub`, `!GetAtt` ...) are read into their long form (`{"Ref": ...}`,
`{"Fn::Sub": ...}`), as CloudFormation itself reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[3] / "infra" / "template.yaml"

_FUNCTIONS = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
)


class TemplateError(ValueError):
    """The template is missing, unreadable, or lacks what the caller needs."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that knows CloudFormation's short-form intrinsic functions."""


def _construct(tag: str) -> Any:
    def construct(loader: _Loader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        if tag == "Ref":
            return {"Ref": value}
        if tag == "Condition":
            return {"Condition": value}
        if tag == "GetAtt":
            return {"Fn::GetAtt": value.split(".", 1) if isinstance(value, str) else value}
        return {f"Fn::{tag}": value}

    return construct


for _name in (*_FUNCTIONS, "Ref", "Condition", "GetAtt"):
    _Loader.add_constructor(f"!{_name}", _construct(_name))


def load_template(path: Path | None = None) -> dict[str, Any]:
    """The template as a dict with long-form intrinsic functions."""
    path = path or TEMPLATE_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TemplateError(f"cannot read the template {path}: {err.strerror}") from None
    try:
        loaded = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise TemplateError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources")
    return loaded


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == resource_type
    }


_SUB_NAME = re.compile(r"\$\{([A-Za-z0-9:]+)\}")


def resolve_name(value: Any, parameters: dict[str, str]) -> str:
    """A resource name written as a literal or `!Sub "${NamePrefix}..."` over parameters."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in parameters:
                raise TemplateError(f"cannot resolve ${{{name}}} in a resource name")
            return parameters[name]

        return _SUB_NAME.sub(substitute, value["Fn::Sub"])
    raise TemplateError(f"cannot resolve the resource name {value!r}")


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table as the template defines it, in CreateTable's terms."""

    logical_id: str
    name: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    global_secondary_indexes: list[dict[str, Any]]
    ttl_attribute: str | None
    point_in_time_recovery: bool = False

    def attribute_definition(self, name: str) -> dict[str, str]:
        for definition in self.attribute_definitions:
            if definition["AttributeName"] == name:
                return definition
        raise TemplateError(f"{self.logical_id} does not define attribute {name}")


def table_specs(template: dict[str, Any], name_prefix: str = "") -> list[TableSpec]:
    """Every AWS::DynamoDB::Table of the template, named with `name_prefix`."""
    parameters = {"NamePrefix": name_prefix}
    specs = []
    for logical_id, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        properties = resource.get("Properties", {})
        ttl = properties.get("TimeToLiveSpecification") or {}
        specs.append(
            TableSpec(
                logical_id=logical_id,
                name=resolve_name(properties["TableName"], parameters),
                key_schema=list(properties["KeySchema"]),
                attribute_definitions=list(properties["AttributeDefinitions"]),
                global_secondary_indexes=list(properties.get("GlobalSecondaryIndexes", [])),
                ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None,
                point_in_time_recovery=bool(
                    properties.get("PointInTimeRecoverySpecification", {}).get(
                        "PointInTimeRecoveryEnabled"
                    )
                ),
            )
        )
    return specs
