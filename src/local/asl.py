"""The state machines' templates: one renderer, one validator.

A template (``state-machines/<name>/definition.asl.json``) is valid JSON whose placeholders
``${Name}`` all sit inside JSON strings. Rendering replaces them as text, exactly as
CloudFormation's ``DefinitionSubstitutions`` does; the embedded stack, the tests and the
CloudFormation template (which passes the same names) therefore run the same definition.
Textual substitution cannot type a value: a quoted ``"${TaskTimeoutSeconds}"`` stays a
string on AWS, so the templates turn numbers into numbers themselves
(``States.StringToJson('${TaskTimeoutSeconds}')`` feeding ``TimeoutSecondsPath``).
What the renderer can do is check each value against its declared type before it goes in.

``segments`` splits a template into literal text and placeholder names, in order, so that
a deployment can build the definition with ``Fn::Join`` instead of
``DefinitionSubstitutions``.

``validate`` checks a rendered definition: the ASL grammar (moto's parser, an ANTLR
grammar of the whole language, stands in for a JSON schema of ASL), no placeholder left,
every Next/Default/Catch target defined, every state reachable, every non-terminal state
with a way on, and a timeout on every Task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from src.infrastructure.aws.template import load_template

STATE_MACHINES_DIR = Path(__file__).resolve().parents[2] / "state-machines"
DEFINITION_FILE = "definition.asl.json"

# The export-job Task's limits. TaskTimeoutSeconds must exceed the longest the service
# can take to answer at its default settings (see state-machines/export-job/README.md,
# "Timing", and tests/unit/test_asl.py, which checks the inequality against Settings()).
# The template's defaults (infra/template.yaml is the one place they are set).
_PARAMETERS = load_template()["Parameters"]
DEFAULT_TASK_TIMEOUT_SECONDS = int(_PARAMETERS["TaskTimeoutSeconds"]["Default"])
DEFAULT_HEARTBEAT_SECONDS = int(_PARAMETERS["HeartbeatSeconds"]["Default"])
DEFAULT_MAX_CONCURRENCY = int(_PARAMETERS["BatchMaxConcurrency"]["Default"])
# Step Functions' own bounds (tests use seconds; infra/template.yaml's parameters are
# stricter): a standard execution lasts at most a year.
MAX_TASK_SECONDS = 31_536_000

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:\S+$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
# Characters a value may not carry: it lands inside a JSON string, unescaped (CloudFormation
# does not escape either), and inside a '...' intrinsic argument.
_UNSAFE = re.compile(r"[\"\\'\x00-\x1f{}]")

Kind = Literal["number", "string", "arn", "url"]


class TemplateError(ValueError):
    """A template, or the values given for it, cannot make a valid definition."""


class InvalidDefinition(ValueError):
    """A definition broke one or more rules; ``problems`` lists each one."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{name}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``${name}``: its type and, for numbers, its bounds."""

    name: str
    kind: Kind
    description: str
    minimum: int | None = None
    maximum: int | None = None

    def text(self, value: object) -> str:
        """The value as the text substituted, after checking it against the type."""
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise TemplateError(f"{self.name}: a whole number, not {value!r}")
            try:
                number = int(value)
            except ValueError:
                raise TemplateError(f"{self.name}: a whole number, not {value!r}") from None
            if self.minimum is not None and number < self.minimum:
                raise TemplateError(f"{self.name}: at least {self.minimum}, not {number}")
            if self.maximum is not None and number > self.maximum:
                raise TemplateError(f"{self.name}: at most {self.maximum}, not {number}")
            return str(number)
        if not isinstance(value, str) or not value:
            raise TemplateError(f"{self.name}: a non-empty string, not {value!r}")
        if _UNSAFE.search(value):
            raise TemplateError(
                f"{self.name}: {value!r} has a character that would need escaping "
                "(quote, backslash, brace or control character)"
            )
        if self.kind == "arn" and not _ARN.match(value):
            raise TemplateError(f"{self.name}: an ARN (arn:aws:service:region:account:...)")
        if self.kind == "url" and not _URL.match(value):
            raise TemplateError(f"{self.name}: an http(s) URL, not {value!r}")
        return value


Check = Callable[[Mapping[str, int | str]], str | None]


def _heartbeat_below_timeout(values: Mapping[str, int | str]) -> str | None:
    if int(values["HeartbeatSeconds"]) >= int(values["TaskTimeoutSeconds"]):
        return "HeartbeatSeconds must be less than TaskTimeoutSeconds"
    return None


@dataclass(frozen=True, slots=True)
class Template:
    """A state machine's template and the placeholders it declares."""

    name: str
    placeholders: tuple[Placeholder, ...]
    checks: tuple[Check, ...] = ()
    directory: Path = field(default=STATE_MACHINES_DIR)

    @property
    def path(self) -> Path:
        return self.directory / self.name / DEFINITION_FILE

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def render(self, values: Mapping[str, object], text: str | None = None) -> str:
        """The definition with every placeholder replaced; validated before it is returned.

        Refuses a placeholder the template uses but does not declare, a declared one the
        template does not use, a value missing or not asked for, and a value of the wrong
        type or out of bounds."""
        source = self.text() if text is None else text
        declared = {p.name: p for p in self.placeholders}
        used = set(placeholders_in(source))
        problems = [
            f"${{{n}}} is not a declared placeholder" for n in sorted(used - declared.keys())
        ]
        problems += [f"${{{n}}} is declared but not used" for n in sorted(declared.keys() - used)]
        problems += [f"no value for ${{{n}}}" for n in sorted(declared.keys() - values.keys())]
        problems += [
            f"{n} is not a placeholder of {self.name}"
            for n in sorted(values.keys() - declared.keys())
        ]
        if problems:
            raise TemplateError(f"{self.name}: " + "; ".join(problems))
        texts = {name: declared[name].text(value) for name, value in values.items()}
        typed: dict[str, int | str] = {
            name: int(texts[name]) if declared[name].kind == "number" else texts[name]
            for name in texts
        }
        for check in self.checks:
            problem = check(typed)
            if problem:
                raise TemplateError(f"{self.name}: {problem}")
        rendered = _PLACEHOLDER.sub(lambda m: texts[m.group(1)], source)
        validate(rendered, self.name)
        return rendered


EXPORT_JOB = Template(
    "export-job",
    (
        Placeholder("ExportJobsQueueUrl", "url", "the export-jobs queue the job message goes to"),
        Placeholder(
            "TaskTimeoutSeconds",
            "number",
            "RunExport's TimeoutSeconds: the service's answer must come within it",
            minimum=1,
            maximum=MAX_TASK_SECONDS,
        ),
        Placeholder(
            "HeartbeatSeconds",
            "number",
            "RunExport's HeartbeatSeconds: the service heartbeats more often",
            minimum=1,
            maximum=MAX_TASK_SECONDS,
        ),
        Placeholder(
            "NotificationTopicArn", "arn", "SNS topic told of jobs completed with failures"
        ),
    ),
    checks=(_heartbeat_below_timeout,),
)

BATCH_EXPORT = Template(
    "batch-export",
    (
        Placeholder(
            "ExportJobStateMachineArn", "arn", "the export-job state machine run per export"
        ),
        Placeholder("NotificationTopicArn", "arn", "SNS topic told of batches with failed exports"),
        Placeholder(
            "MaxConcurrency",
            "number",
            "export-job executions running at once per batch",
            minimum=1,
            maximum=1000,
        ),
        Placeholder(
            "TaskTimeoutSeconds",
            "number",
            "the export-job's TaskTimeoutSeconds: a child execution may run an hour longer",
            minimum=1,
            maximum=MAX_TASK_SECONDS,
        ),
    ),
)

TEMPLATES = {t.name: t for t in (EXPORT_JOB, BATCH_EXPORT)}


# --- Text -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """Literal text of a template."""

    value: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A placeholder of a template (CloudFormation: the parameter or resource it names)."""

    name: str


def placeholders_in(text: str) -> list[str]:
    """Placeholder names in order of appearance (repeats kept); a malformed ``${...}``
    (not letters, digits, underscores) raises ``TemplateError``."""
    names = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1)
        if not _NAME.match(name):
            raise TemplateError(f"malformed placeholder {match.group(0)!r}")
        names.append(name)
    return names


def segments(text: str) -> list[Text | Ref]:
    """The text split into literal text and placeholders, in order: joined back with each
    ``Ref`` replaced by its value, it is the rendered definition (``Fn::Join`` with ``""``).
    Empty literals are left out."""
    placeholders_in(text)  # refuses malformed ones
    parts: list[Text | Ref] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(Text(text[position : match.start()]))
        parts.append(Ref(match.group(1)))
        position = match.end()
    if position < len(text):
        parts.append(Text(text[position:]))
    return parts


def render(name: str, values: Mapping[str, object]) -> str:
    """The named state machine's definition with these values (see ``Template.render``)."""
    try:
        template = TEMPLATES[name]
    except KeyError:
        raise TemplateError(f"no state machine {name!r}; known: {sorted(TEMPLATES)}") from None
    return template.render(values)


# --- Validation -----------------------------------------------------------------------------

_TERMINAL_TYPES = {"Succeed", "Fail"}


def validate(definition: str, name: str = "definition") -> dict[str, Any]:
    """The parsed definition if it keeps every rule; else ``InvalidDefinition`` listing
    each problem (all of them, not only the first)."""
    try:
        document = json.loads(definition)
    except json.JSONDecodeError as exc:
        raise InvalidDefinition(name, [f"not JSON: {exc}"]) from exc
    problems = [
        f"placeholder ${{{p}}} left unsubstituted at {where}"
        for where, p in _strings_with_placeholders(document)
    ]
    problems += _grammar(definition)
    if isinstance(document, dict):
        problems += _structure(document, "")
    else:
        problems.append("the definition is not a JSON object")
    if problems:
        raise InvalidDefinition(name, problems)
    parsed: dict[str, Any] = document
    return parsed


def _strings_with_placeholders(value: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        for match in _PLACEHOLDER.finditer(value):
            yield where, match.group(1)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_with_placeholders(key, where)
            yield from _strings_with_placeholders(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings_with_placeholders(item, f"{where}[{index}]")


def _grammar(definition: str) -> list[str]:
    """Problems moto's ASL parser finds (field names, types, state kinds, values)."""
    # Imported here: moto is the optional "embedded" dependency group.
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    try:
        AmazonStateLanguageParser.parse(definition)
    except Exception as exc:  # the parser raises its own and plain errors alike
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [f"ASL grammar: {first[:300]}"]
    return []


def _structure(machine: dict[str, Any], scope: str) -> list[str]:
    """Targets, reachability, ways on and Task timeouts of one state graph (a Map's
    ItemProcessor and a Parallel's branches are graphs of their own)."""
    where = f"{scope}: " if scope else ""
    states = machine.get("States")
    start = machine.get("StartAt")
    if not isinstance(states, dict) or not states:
        return [f"{where}no States"]
    problems: list[str] = []
    if start not in states:
        problems.append(f"{where}StartAt {start!r} is not a state")
    edges: dict[str, list[str]] = {}
    for state_name, state in states.items():
        if not isinstance(state, dict):
            problems.append(f"{where}state {state_name!r} is not an object")
            continue
        kind = state.get("Type")
        targets = _targets(state)
        for label, target in targets:
            if target not in states:
                problems.append(f"{where}{state_name}.{label} -> {target!r}: no such state")
        edges[state_name] = [t for _, t in targets]
        ends = state.get("End") is True
        has_next = "Next" in state
        if kind in _TERMINAL_TYPES or kind == "Choice":
            if has_next or "End" in state:
                problems.append(f"{where}{state_name}: a {kind} state takes no Next or End")
        elif ends == has_next:
            problems.append(f"{where}{state_name}: needs exactly one of Next and End: true")
        if kind == "Task" and "TimeoutSeconds" not in state and "TimeoutSecondsPath" not in state:
            problems.append(f"{where}{state_name}: a Task without TimeoutSeconds(Path)")
        if kind == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if isinstance(processor, dict):
                problems += _structure(processor, f"{scope}{state_name}")
            else:
                problems.append(f"{where}{state_name}: a Map without ItemProcessor")
        if kind == "Parallel":
            for index, branch in enumerate(state.get("Branches") or []):
                if isinstance(branch, dict):
                    problems += _structure(branch, f"{scope}{state_name}[{index}]")
    if isinstance(start, str) and start in states:
        reached = {start}
        stack = [start]
        while stack:
            for target in edges.get(stack.pop(), []):
                if target in states and target not in reached:
                    reached.add(target)
                    stack.append(target)
        for state_name in states:
            if state_name not in reached:
                problems.append(f"{where}{state_name}: unreachable from {start}")
    return problems


def _targets(state: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if "Next" in state:
        found.append(("Next", state["Next"]))
    if "Default" in state:
        found.append(("Default", state["Default"]))
    for index, choice in enumerate(state.get("Choices") or []):
        if isinstance(choice, dict) and "Next" in choice:
            found.append((f"Choices[{index}].Next", choice["Next"]))
    for index, catcher in enumerate(state.get("Catch") or []):
        if isinstance(catcher, dict) and "Next" in catcher:
            found.append((f"Catch[{index}].Next", catcher["Next"]))
    return found
