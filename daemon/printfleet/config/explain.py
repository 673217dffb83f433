"""Turn pydantic's validation errors into problems a person can fix: what is wrong, and how.

pydantic's messages name types and error codes; a config author needs "must be a whole number
(got '10s'), write it like qos = 1" and never the value of a secret.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from printfleet.config.schema import InvalidValue, Settings, field_at, unwrap
from printfleet.config.toml_lines import dotted_key
from printfleet.errors import did_you_mean

DURATION_FIX = "write a number and a unit (ms, s, m, h, d, w), e.g. '30s', '5m', '1h30m'"
NAME_FIX = "use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit"


def explain(error: ErrorDetails) -> tuple[str, str]:
    """(what is wrong, how to fix it) for one pydantic error, never echoing a secret."""
    loc = tuple(error["loc"])
    kind = error["type"]
    msg = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    container, field_name = field_at(loc)
    info = container.model_fields.get(field_name) if container and field_name else None
    annotation = unwrap(info.annotation) if info is not None else None
    secret = annotation is SecretStr
    shown = "" if secret or not isinstance(value, str | int | float) else f" {value!r}"
    description = info.description if info is not None and info.description else ""

    if kind == "extra_forbidden":
        if container is None:
            return "unknown key", "remove it"
        valid = list(container.model_fields)
        what = "section" if container is Settings else "key"
        close = did_you_mean(str(loc[-1]), valid)
        if close:
            return f"unknown {what}", f"did you mean '{close}'?"
        return f"unknown {what}", f"remove it; valid {what}s here: {', '.join(valid)}"
    if kind == "missing":
        hint = f" ({description})" if description else ""
        return "required key is missing", f"add {field_name} = ...{hint}"
    if annotation is timedelta:
        return f"invalid duration{shown}", DURATION_FIX
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"invalid value{shown}", f"use one of {expected}"
    if kind == "string_pattern_mismatch":
        return f"invalid value{shown}", NAME_FIX if field_name == "name" else msg
    if kind == "tuple_type" and info is not None and container is Settings:
        return (
            f"[{field_name}] must be a list of tables",
            f"write each entry as a [[{field_name}]] table (double brackets)",
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table", f"write it as a [{dotted_key(loc)}] table"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidValue):  # the validator said what is wrong and how to fix it
        return str(cause), cause.fix
    if not loc:
        return msg, "see config.example.toml"
    if info is None:  # a model-level check, e.g. missing credentials of a [[source]]
        return msg, f"see the [[{loc[0]}]] examples in config.example.toml"
    got = "" if secret else _got(value)
    if kind in _RANGE_ERRORS:
        return f"{msg.replace('Input should be', 'must be')}{got}", _allowed(info, field_name)
    if kind in _TYPE_FIXES:
        message, example = _TYPE_FIXES[kind]
        if isinstance(loc[-1], int):
            return f"{message}{got}", f"write each item like {example}"
        return f"{message}{got}", f"write it like {loc[-1]} = {example}"
    return f"{msg.replace('Input should be', 'must be')}{got}", description


# Errors about the type of a value: (what is wrong, an example of the right form).
_TYPE_FIXES: dict[str, tuple[str, str]] = {
    "string_type": ("must be text", '"..." (in quotes)'),
    "int_type": ("must be a whole number", "10"),
    "int_parsing": ("must be a whole number", "10"),
    "int_from_float": ("must be a whole number", "10"),
    "float_type": ("must be a number", "0.5"),
    "float_parsing": ("must be a number", "0.5"),
    "bool_type": ("must be true or false", "true"),
    "bool_parsing": ("must be true or false", "true"),
    "tuple_type": ("must be a list", '["...", "..."]'),
    "list_type": ("must be a list", '["...", "..."]'),
    "path_type": ("must be a file path", '"/etc/printfleet/..."'),
}


_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _allowed(info: FieldInfo, name: str | None) -> str:
    """What a bounded number may be, with the default as the example:
    ``use a number from 0 to 1, e.g. material_low_ratio = 0.15``."""
    low = high = ""
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Ge):
            low = f"{bound.ge:g}"
        elif isinstance(bound, annotated_types.Gt):
            low = f"above {bound.gt:g}"
        elif isinstance(bound, annotated_types.Le):
            high = f"{bound.le:g}"
        elif isinstance(bound, annotated_types.Lt):
            high = f"below {bound.lt:g}"
    noun = "a whole number" if unwrap(info.annotation) is int else "a number"
    if low and high:
        low_text = low if low.startswith("above") else f"from {low}"
        high_text = high if high.startswith("below") else f"to {high}"
        text = f"use {noun} {low_text} {high_text}"
    elif low:
        text = f"use {noun} {low}" if low.startswith("above") else f"use {noun} of at least {low}"
    else:
        text = f"use {noun} {high}" if high.startswith("below") else f"use {noun} of at most {high}"
    default = info.default
    if name and isinstance(default, int | float) and not isinstance(default, bool):
        text += f", e.g. {name} = {default:g}"
    return text


def _got(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        return f" (got {value!r})"
    return f" (got a {type(value).__name__})"
