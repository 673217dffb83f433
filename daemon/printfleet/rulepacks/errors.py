"""The error both rule-pack compilers raise, with the position the loader turns into file:line.

Apart from :mod:`~printfleet.rulepacks.when` and :mod:`~printfleet.rulepacks.templates` so that
neither compiler imports the other just for it.
"""

from __future__ import annotations


class ExpressionError(ValueError):
    """A ``when`` expression or a template is not acceptable.

    ``position`` is 1-based (column in a one-line expression, character offset in a
    template), ``line`` the line inside a multi-line expression.
    """

    def __init__(self, message: str, fix: str, position: int | None = None, line: int = 1) -> None:
        self.message = message
        self.fix = fix
        self.position = position
        self.line = line
        where = ""
        if position is not None:
            where = f" at column {position}" if line == 1 else f" at line {line}, column {position}"
        super().__init__(f"{message}{where}")
