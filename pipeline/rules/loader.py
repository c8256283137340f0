"""Reading the rules file, with errors that name the file, line and field.

Example::

    rules = load_rules(Path("config/rules.yaml"))
    # RulesError: config/rules.yaml:42: triggers.rules[3].delay: invalid duration '1x' (…)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.errors import validation_message
from pipeline.rules.models import Rules

Path_ = tuple[str | int, ...]


class RulesError(ValueError):
    """A rules file that cannot be used; ``problems`` lists ``file:line: field: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_rules(path: Path) -> Rules:
    """Read and validate a rules file; raise ``RulesError`` naming file, line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"{path}: cannot read the rules file: {exc.strerror or exc}"]) from exc
    return parse_rules(text, str(path))


def parse_rules(text: str, filename: str = "<rules>") -> Rules:
    """Validate rules given as YAML text; ``filename`` is used in error messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        context = ""
        if exc.context and exc.context_mark:
            context = f" ({exc.context}, which starts on line {exc.context_mark.line + 1})"
        raise RulesError([f"{filename}{line}: not valid YAML: {exc.problem}{context}"]) from exc
    except yaml.YAMLError as exc:
        raise RulesError([f"{filename}: not valid YAML: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError([f"{filename}:1: the rules file must be a mapping of sections"])
    lines = _line_numbers(node) if node is not None else {}
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        raise RulesError([_describe(error, filename, lines) for error in exc.errors()]) from exc


def _line_numbers(node: yaml.Node, path: Path_ = ()) -> dict[Path_, int]:
    """Map each key path in the YAML document to the 1-based line it starts on."""
    lines: dict[Path_, int] = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            lines.update(_line_numbers(value_node, child))
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, (*path, index)))
    return lines


def _describe(error: Any, filename: str, lines: dict[Path_, int]) -> str:
    # pydantic adds union-member and validator tags to locations; keep only real keys/indexes
    loc: Path_ = tuple(
        part for part in error["loc"] if isinstance(part, int) or _is_data_key(part, lines)
    )
    if error["type"] == "missing" and error["loc"] and isinstance(error["loc"][-1], str):
        loc = (*loc, error["loc"][-1])  # the missing field is in no line of the file: name it
    line = 1
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            line = lines[loc[:end]]
            break
    field = _dotted(loc) or "(top level)"
    message = validation_message(error)
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see config/rules.yaml for every field)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return f"{filename}:{line}: {field}: {message}"


def _is_data_key(part: Any, lines: dict[Path_, int]) -> bool:
    return any(part in key for key in lines) or part == "in"


def _dotted(loc: Path_) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
