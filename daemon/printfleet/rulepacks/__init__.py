"""Rule packs: the TOML files of ``[[rule]]`` and ``[[silence]]`` tables, read and compiled.

Modules:
    loader     finding and reading packs, the TOML -> Rule/Silence mapping, every problem
               reported with file, line, key and fix (:class:`~printfleet.errors.RuleError`)
    when       the safe ``when`` expression compiler
    templates  the title/text/MQTT-topic template compiler
    errors     :class:`~printfleet.rulepacks.errors.ExpressionError`, raised by both compilers

:func:`load_rule_set` is re-exported here: it is the package's one entry point, and
``printfleet check`` imports it as ``printfleet.rulepacks.load_rule_set`` (tests replace
this module to hand ``check`` a prepared rule set). Everything else is imported from the module
that owns it.
"""

from printfleet.rulepacks.loader import load_rule_set

__all__ = ["load_rule_set"]
