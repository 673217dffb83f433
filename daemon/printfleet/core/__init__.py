"""The pure core of printfleet: model, events, diffing and rule evaluation.

Nothing in here performs I/O, reads a clock or logs; only the standard library and
``printfleet.errors`` may be imported (a test walks the AST to keep it that way).
"""
