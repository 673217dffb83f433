"""Turn pydantic's validation errors into problems a person can fix: what is wrong, and how.

pydantic's messages name types and error codes; a config author needs "must be a whole number
(got '10s'), write it like qos = 1" and never the value of a secret.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from pydantic_core import ErrorDetails

from printfleet.config.schema import Settings, field_at, unwrap
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
    if not loc:
        return msg, "see config.example.toml"
    if info is None:  # a model-level check, e.g. missing credentials of a [[source]]
        return msg, f"see the [[{loc[0]}]] examples in config.example.toml"
    got = "" if secret else _got(value)
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


def _got(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        return f" (got {value!r})"
    return f" (got a {type(value).__name__})"
