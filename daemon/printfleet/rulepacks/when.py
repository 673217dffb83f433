"""Safe ``when`` expressions for rule packs: the condition a rule applies under.

They are checked completely when a pack is loaded, so a typo or an escape attempt is a load
error with a position, never a surprise at 3 a.m.

``when`` expressions are parsed once with :func:`ast.parse`, validated against a whitelist,
and evaluated by a :class:`simpleeval.SimpleEval` subclass on the pre-parsed tree. Allowed:
names of the event (``type``, ``source``, ``printer``, ``print``, ``changes``, ``data``,
detail keys such as ``alert``), constants, dotted access into the event's dicts (a missing
key is ``None``), ``[...]`` with a constant key, comparisons (``None`` never orders, so
``print.progress > 0.5`` is false when there is no progress), ``and``/``or``/``not``,
``in``, ``x if c else y``, list/tuple/set literals, arithmetic on numbers with bounded
powers, the functions ``lower upper startswith endswith len glob any all abs min max round
int float str duration`` and the string methods ``.lower() .upper() .strip() .startswith()
.endswith()``. Everything else (underscore names, ``.format``, f-strings, ``%``-formatting,
lambdas, comprehensions, keyword arguments, slices, huge powers, string or list repetition)
is rejected at load time. Fields named like Python keywords work as written
(``changes.status.from``), and an expression may span lines (TOML multi-line strings).
Constant parts (``duration('2h')``, ``x in ['a', 'b']``) are computed once at load.

One file although long: the whitelist, the validator, the tree folding and the evaluator are
four readings of one grammar, and what is safe is only checkable with all of them in view.
"""

from __future__ import annotations

import ast
import io
import keyword
import operator
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from simpleeval import SimpleEval

from printfleet.core.durations import parse_duration
from printfleet.core.rules.names import check_field_path, typo_hint
from printfleet.rulepacks.errors import ExpressionError
from printfleet.rulepacks.templates import MAX_RENDERED_CHARS

MAX_EXPRESSION_LENGTH = 2000
MAX_NODES = 300
MAX_CONSTANT_LENGTH = 1000
MAX_EXPONENT = 100
MAX_INT_BITS = 4096

# --------------------------------------------------------------------------------------------
# runtime helpers (None-safe where the data may lack a key)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise OverflowError("number too large")
    return value


def _arith(op: Callable[[Any, Any], Any], *, strings: bool = False) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if _number(a) and _number(b):
            return _check_int(op(a, b))
        if strings and isinstance(a, str) and isinstance(b, str):
            if len(a) + len(b) > MAX_RENDERED_CHARS * 4:
                raise OverflowError("string too long")
            return a + b
        if strings and isinstance(a, list) and isinstance(b, list):
            if len(a) + len(b) > 10_000:
                raise OverflowError("list too long")
            return a + b
        raise TypeError(f"cannot apply arithmetic to {type(a).__name__} and {type(b).__name__}")

    return apply


def _power(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if not (_number(a) and _number(b)):
        raise TypeError("** needs numbers")
    if abs(b) > MAX_EXPONENT or (isinstance(a, int) and a.bit_length() * abs(b) > MAX_INT_BITS):
        raise OverflowError("power too large")
    return a**b


def _order(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        return op(a, b)

    return compare


def _contains(a: Any, b: Any) -> bool:
    if b is None or (a is None and isinstance(b, str)):
        return False
    if isinstance(b, str) and not isinstance(a, str):
        return False
    return a in b


def _not_contains(a: Any, b: Any) -> bool:
    return not _contains(a, b)


def _neg(a: Any) -> Any:
    return None if a is None else -a if _number(a) else _fail_type("-", a)


def _pos(a: Any) -> Any:
    return None if a is None else a if _number(a) else _fail_type("+", a)


def _fail_type(op: str, value: Any) -> Any:
    raise TypeError(f"unary {op} needs a number, not {type(value).__name__}")


_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _arith(operator.add, strings=True),
    ast.Sub: _arith(operator.sub),
    ast.Mult: _arith(operator.mul),
    ast.Div: _arith(operator.truediv),
    ast.FloorDiv: _arith(operator.floordiv),
    ast.Mod: _arith(operator.mod),
    ast.Pow: _power,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: _order(operator.lt),
    ast.LtE: _order(operator.le),
    ast.Gt: _order(operator.gt),
    ast.GtE: _order(operator.ge),
    ast.In: _contains,
    ast.NotIn: _not_contains,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.Not: operator.not_,
    ast.USub: _neg,
    ast.UAdd: _pos,
}


def _str_fn(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(value: Any, *args: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"{method.__name__}() needs a string, not {type(value).__name__}")
        for arg in args:
            if not isinstance(arg, str | tuple):
                raise TypeError(f"{method.__name__}() needs string arguments")
        return method(value, *args)

    return call


def _len(value: Any) -> int:
    if value is None:
        return 0
    return len(value)


def _glob(value: Any, pattern: Any) -> bool:
    if value is None:
        return False
    return fnmatchcase(str(value), str(pattern))


def _duration(text: Any) -> float:
    return parse_duration(str(text)).total_seconds()


def _seq_fn(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        if value is None:
            return None
        return fn(value)

    call.__name__ = fn.__name__
    return call


def _extreme(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        values = list(args[0]) if len(args) == 1 and isinstance(args[0], list) else list(args)
        if not values or any(v is None for v in values):
            return None
        return fn(values)

    return call


def _round(value: Any, digits: Any = 0) -> Any:
    if value is None:
        return None
    return round(value, int(digits))


#: Functions and their accepted argument counts.
FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "lower": (_str_fn(str.lower), (1,)),
    "upper": (_str_fn(str.upper), (1,)),
    "startswith": (_str_fn(str.startswith), (2,)),
    "endswith": (_str_fn(str.endswith), (2,)),
    "len": (_len, (1,)),
    "glob": (_glob, (2,)),
    "any": (_seq_fn(any), (1,)),
    "all": (_seq_fn(all), (1,)),
    "abs": (_seq_fn(abs), (1,)),
    "min": (_extreme(min), (1, 2, 3, 4)),
    "max": (_extreme(max), (1, 2, 3, 4)),
    "round": (_round, (1, 2)),
    "int": (_seq_fn(int), (1,)),
    "float": (_seq_fn(float), (1,)),
    "str": (_seq_fn(str), (1,)),
    "duration": (_duration, (1,)),
}
#: String methods callable as ``value.method(...)`` and their accepted argument counts.
METHODS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "lower": (_str_fn(str.lower), (0,)),
    "upper": (_str_fn(str.upper), (0,)),
    "strip": (_str_fn(str.strip), (0,)),
    "startswith": (_str_fn(str.startswith), (1,)),
    "endswith": (_str_fn(str.endswith), (1,)),
}


class _Path(ast.expr):
    """A dotted name such as ``printer.raw.status_message``, looked up in one step.

    Produced from validated ``Name``/``Attribute`` chains after load-time checks (see
    :func:`_paths`), so evaluation walks dicts in a loop instead of recursing per dot.
    """

    _fields = ("parts",)

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__()
        self.parts = parts


class _Evaluator(SimpleEval):  # type: ignore[misc]
    """simpleeval on a validated tree: dict-wrapping attribute access, None-safe lookups.

    Instances are not re-entrant (``names`` is set per call); each compiled expression owns
    one and the rule engine is single-threaded.
    """

    def __init__(self) -> None:
        super().__init__(
            operators=_OPERATORS,
            functions={name: fn for name, (fn, _) in FUNCTIONS.items()},
            names={},
        )
        self.nodes[ast.List] = self._eval_sequence
        self.nodes[ast.Tuple] = self._eval_sequence
        self.nodes[ast.Set] = self._eval_sequence
        self.nodes[_Path] = self._eval_path

    def _eval(self, node: ast.AST) -> Any:
        # The tree was validated at load time and every value comes from JSON data, so the
        # per-node scan simpleeval does for smuggled modules/functions is not needed here.
        return self.nodes[type(node)](node)

    def _eval_constant(self, node: ast.Constant) -> Any:
        return node.value  # lengths were bounded at load time

    def _eval_compare(self, node: ast.Compare) -> Any:
        if len(node.ops) == 1:  # the common case, without simpleeval's chaining loop
            return self.operators[type(node.ops[0])](
                self._eval(node.left), self._eval(node.comparators[0])
            )
        return super()._eval_compare(node)

    def _eval_name(self, node: ast.Name) -> Any:
        return self.names.get(node.id)

    def _eval_path(self, node: _Path) -> Any:
        value: Any = self.names
        for part in node.parts:
            if type(value) is dict or isinstance(value, Mapping):
                value = value.get(part)
                if value is None:
                    return None
            else:
                return None
        return value

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        value = self._eval(node.value)
        if type(value) is dict or isinstance(value, Mapping):
            return value.get(_KEYWORD_ATTRS.get(node.attr, node.attr))
        return None

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, Mapping):
            return container.get(key)
        if isinstance(container, list | tuple | str) and isinstance(key, int):
            return container[key] if -len(container) <= key < len(container) else None
        return None

    def _eval_call(self, node: ast.Call) -> Any:
        args = [self._eval(a) for a in node.args]
        if isinstance(node.func, ast.Attribute):
            return METHODS[node.func.attr][0](self._eval(node.func.value), *args)
        assert isinstance(node.func, ast.Name)
        return FUNCTIONS[node.func.id][0](*args)

    def _eval_sequence(self, node: ast.List | ast.Tuple | ast.Set) -> Any:
        return [self._eval(item) for item in node.elts]


class _PathFolder(ast.NodeTransformer):
    """Replaces ``Name``/``Attribute`` chains (not method calls) by :class:`_Path` nodes."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.args = [self.visit(a) for a in node.args]
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "duration"
            and isinstance(node.args[0], ast.Constant)
        ):  # duration('2h') is a constant: compute it once
            try:
                seconds = _duration(node.args[0].value)
            except ValueError as err:
                raise _err(node, str(err), "write e.g. duration('90m')") from None
            return ast.copy_location(ast.Constant(seconds), node)
        if isinstance(node.func, ast.Attribute):  # keep the method, fold its receiver
            node.func.value = self.visit(node.func.value)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        parts: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.append(_KEYWORD_ATTRS.get(current.attr, current.attr))
            current = current.value
        if isinstance(current, ast.Name):
            return ast.copy_location(_Path((current.id, *reversed(parts))), node)
        self.generic_visit(node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(_Path((node.id,)), node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for index, (op, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            # `x in ['a', 'b']` with constants only: build the tuple once, not per event
            if (
                isinstance(op, ast.In | ast.NotIn)
                and isinstance(right, _SEQ_LITERALS)
                and all(isinstance(e, ast.Constant) for e in right.elts)
            ):
                values: Any = tuple(e.value for e in right.elts if isinstance(e, ast.Constant))
                node.comparators[index] = ast.copy_location(ast.Constant(values), right)
        return node


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled ``when`` expression; call it with an event's names."""

    source: str
    tree: ast.expr
    names: frozenset[str]
    _evaluator: _Evaluator

    def __call__(self, names: Mapping[str, Any]) -> bool:
        evaluator = self._evaluator
        evaluator.names = names
        try:
            return bool(evaluator.eval(self.source, previously_parsed=self.tree))
        finally:
            evaluator.names = {}


_ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,
    ast.Call,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.IfExp,
    ast.Subscript,
)
_FORBIDDEN: dict[type, tuple[str, str]] = {
    ast.Lambda: ("lambda is not allowed", "write a plain condition"),
    ast.ListComp: ("comprehensions are not allowed", "use any()/all() on a list or 'in'"),
    ast.SetComp: ("comprehensions are not allowed", "use any()/all() on a list or 'in'"),
    ast.DictComp: ("comprehensions are not allowed", "use any()/all() on a list or 'in'"),
    ast.GeneratorExp: ("comprehensions are not allowed", "use any()/all() on a list or 'in'"),
    ast.JoinedStr: (
        "f-strings are not allowed",
        "compare values directly; templates (title/text) are where formatting happens",
    ),
    ast.NamedExpr: ("':=' is not allowed", "write a plain condition"),
    ast.Slice: ("slices are not allowed", "index with a constant, e.g. printer.materials[0]"),
    ast.Starred: ("'*' unpacking is not allowed", "pass arguments one by one"),
    ast.Dict: ("dict literals are not allowed", "compare against a list: x in ['a', 'b']"),
    ast.Await: ("await is not allowed", "write a plain condition"),
    ast.BitAnd: ("'&' is not allowed", "use 'and'"),
    ast.BitOr: ("'|' is not allowed", "use 'or'"),
    ast.BitXor: ("'^' is not allowed", "write a plain condition"),
    ast.LShift: ("'<<' is not allowed", "write a plain condition"),
    ast.RShift: ("'>>' is not allowed", "write a plain condition"),
    ast.Invert: ("'~' is not allowed", "use 'not'"),
}
_SEQ_LITERALS = (ast.List, ast.Tuple, ast.Set)
_HELP_NAMES = {"true": "True", "false": "False", "null": "None", "none": "None"}


def compile_when(source: str) -> Expression:
    """Parse and validate a ``when`` expression.

    Raises:
        ExpressionError: naming what is not allowed, where, and how to write it instead.
    """
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression", "remove 'when' or write a condition")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression longer than {MAX_EXPRESSION_LENGTH} characters",
            "split the rule into several rules",
        )
    try:
        # Parenthesised on lines of their own so a multi-line TOML string may break lines
        # anywhere while columns and (after the shift back) line numbers stay the user's.
        tree = ast.parse(f"(\n{_rename_keyword_attributes(text)}\n)", mode="eval")
    except SyntaxError as err:
        lines = text.count("\n") + 1
        raise ExpressionError(
            f"syntax error: {err.msg}",
            "write a Python-style condition, e.g. printer.group == 'Dental'",
            err.offset,
            min(max((err.lineno or 2) - 1, 1), lines),
        ) from None
    ast.increment_lineno(tree, -1)
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError("expression too complex", "split the rule into several rules")
    names: set[str] = set()
    _validate(tree.body, names, call_target=False)
    body = _PathFolder().visit(tree.body)
    return Expression(source=text, tree=body, names=frozenset(names), _evaluator=_Evaluator())


#: ``changes.status.from`` is written ``from``, but ``from`` is a Python keyword: attributes
#: that are keywords are renamed with a trailing ``_`` before parsing and mapped back here.
_KEYWORD_ATTRS = {f"{word}_": word for word in keyword.kwlist}


def _rename_keyword_attributes(text: str) -> str:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text  # ast.parse reports the problem with its position
    after_dot: list[tuple[int, int]] = []
    previous: tokenize.TokenInfo | None = None
    for token in tokens:
        if (
            token.type == tokenize.NAME
            and keyword.iskeyword(token.string)
            and previous is not None
            and previous.type == tokenize.OP
            and previous.string == "."
        ):
            after_dot.append(token.end)
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = token
    if not after_dot:
        return text
    lines = text.split("\n")
    for row, col in sorted(after_dot, reverse=True):
        lines[row - 1] = lines[row - 1][:col] + "_" + lines[row - 1][col:]
    return "\n".join(lines)


def _err(node: ast.AST, message: str, fix: str) -> ExpressionError:
    col = getattr(node, "col_offset", None)
    end = getattr(node, "end_col_offset", None)
    if isinstance(node, ast.Attribute) and end is not None and node.end_lineno == node.lineno:
        col = end - len(node.attr)  # point at the attribute, not the start of the chain
    return ExpressionError(
        message, fix, None if col is None else col + 1, getattr(node, "lineno", 1)
    )


def _validate(
    node: ast.AST, names: set[str], *, call_target: bool, parent: ast.AST | None = None
) -> None:
    kind = type(node)
    where = node if hasattr(node, "col_offset") or parent is None else parent
    if kind in _FORBIDDEN:
        message, fix = _FORBIDDEN[kind]
        raise _err(where, message, fix)
    if kind not in _ALLOWED_NODES:
        raise _err(where, f"{kind.__name__} is not allowed", "write a plain condition")
    if isinstance(node, ast.Name):
        _validate_name(node, names, call_target=call_target)
        return
    if isinstance(node, ast.Constant):
        value = node.value
        if not (value is None or isinstance(value, bool | int | float | str)):
            raise _err(
                node,
                f"{type(value).__name__} constants are not allowed",
                "use strings, numbers, True, False or None",
            )
        if isinstance(value, str) and len(value) > MAX_CONSTANT_LENGTH:
            raise _err(node, "string constant too long", "shorten it")
        return
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise _err(
                node,
                f"'{node.attr}': names starting with '_' are not allowed",
                "use the event's field names, e.g. printer.name",
            )
        _validate(node.value, names, call_target=False)
        _check_path(node)
        return
    if isinstance(node, ast.Call):
        _validate_call(node, names)
        return
    if isinstance(node, ast.Subscript):
        key = node.slice
        if not (
            isinstance(key, ast.Constant)
            and isinstance(key.value, str | int)
            and not isinstance(key.value, bool)
        ):
            raise _err(
                node,
                "only constant keys may be used in [...]",
                "write e.g. printer.raw['status-message'] or printer.materials[0]",
            )
        if isinstance(key.value, str) and key.value.startswith("_"):
            raise _err(
                key,
                f"'{key.value}': keys starting with '_' are not allowed",
                "use the event's field names",
            )
        _validate(node.value, names, call_target=False)
        return
    if isinstance(node, ast.BinOp):
        _validate_binop(node)
    for child in ast.iter_child_nodes(node):
        _validate(child, names, call_target=False, parent=node)


def _validate_name(node: ast.Name, names: set[str], *, call_target: bool) -> None:
    name = node.id
    if name.startswith("_"):
        raise _err(
            node,
            f"'{name}': names starting with '_' are not allowed",
            "use the event's field names, e.g. printer.name",
        )
    if call_target:
        if name not in FUNCTIONS:
            hint = typo_hint(name, FUNCTIONS)
            raise _err(
                node,
                f"unknown function '{name}'",
                f"{hint}available: {', '.join(sorted(FUNCTIONS))}",
            )
        return
    if name in FUNCTIONS and check_field_path([name], template=False) is not None:
        raise _err(node, f"'{name}' is a function", f"call it: {name}(...)")
    if name.lower() in _HELP_NAMES:
        raise _err(node, f"unknown name '{name}'", f"write {_HELP_NAMES[name.lower()]}")
    problem = check_field_path([name], template=False)
    if problem is not None:
        raise _err(node, *problem)
    names.add(name)


def _check_path(node: ast.Attribute) -> None:
    parts: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        parts.append(_KEYWORD_ATTRS.get(current.attr, current.attr))
        current = current.value
    if isinstance(current, ast.Name):
        parts.append(current.id)
        problem = check_field_path(list(reversed(parts)), template=False)
        if problem is not None:
            raise _err(node, *problem)


def _validate_call(node: ast.Call, names: set[str]) -> None:
    if node.keywords:
        raise _err(node, "keyword arguments are not allowed", "pass arguments by position")
    func = node.func
    if isinstance(func, ast.Name):
        _validate_name(func, names, call_target=True)
        arities = FUNCTIONS[func.id][1]
        label = f"{func.id}()"
    elif isinstance(func, ast.Attribute):
        if func.attr not in METHODS:
            why = (
                " (format strings can reach object internals)"
                if func.attr in ("format", "format_map")
                else ""
            )
            raise _err(
                func,
                f"method '{func.attr}' is not allowed{why}",
                f"allowed methods: {', '.join(sorted(METHODS))}; "
                f"functions: {', '.join(sorted(FUNCTIONS))}",
            )
        _validate(func.value, names, call_target=False)
        arities = METHODS[func.attr][1]
        label = f".{func.attr}()"
    else:
        raise _err(node, "only named functions may be called", "call e.g. lower(printer.name)")
    if len(node.args) not in arities:
        want = " or ".join(str(a) for a in arities)
        raise _err(
            node, f"{label} takes {want} argument(s), got {len(node.args)}", "check the call"
        )
    for arg in node.args:
        _validate(arg, names, call_target=False)


def _is_text_literal(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(
        node, _SEQ_LITERALS
    )


def _validate_binop(node: ast.BinOp) -> None:
    if isinstance(node.op, ast.Pow):
        exponent = node.right
        if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub | ast.UAdd):
            exponent = exponent.operand
        value = exponent.value if isinstance(exponent, ast.Constant) else None
        if not (isinstance(value, int | float) and abs(value) <= MAX_EXPONENT):
            raise _err(
                node,
                f"the exponent of ** must be a number up to {MAX_EXPONENT}",
                "write the power out, e.g. x ** 2",
            )
        if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in ast.walk(node.left)):
            raise _err(node, "nested ** is not allowed", "compute with a single power")
    if isinstance(node.op, ast.Mult) and (
        _is_text_literal(node.left) or _is_text_literal(node.right)
    ):
        raise _err(
            node,
            "multiplying strings or lists is not allowed",
            "compare values instead of building large ones",
        )
    if isinstance(node.op, ast.Mod) and _is_text_literal(node.left):
        raise _err(
            node,
            "'%' formatting is not allowed",
            "compare values directly; formatting belongs in title/text",
        )
