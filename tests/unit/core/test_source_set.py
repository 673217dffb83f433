"""Which sources a SIGHUP adds, removes, changes and leaves alone."""

from __future__ import annotations

from printfleet.core.source_set import SourceSetChange, diff_source_sets


def test_added_removed_changed_and_unchanged_by_name() -> None:
    running = {"lab": ("formlabs", "k1"), "old": ("carbon", "k2"), "shop": ("formlabs", "k3")}
    wanted = {"lab": ("formlabs", "k1"), "shop": ("formlabs", "k4"), "new": ("carbon", "k5")}
    assert diff_source_sets(running, wanted) == SourceSetChange(
        added=("new",), removed=("old",), changed=("shop",), unchanged=("lab",)
    )


def test_same_sets_change_nothing() -> None:
    running = {"b": 2, "a": 1}
    change = diff_source_sets(running, dict(running))
    assert not change
    assert change.unchanged == ("a", "b")


def test_a_renamed_source_is_one_removed_and_one_added() -> None:
    change = diff_source_sets({"lab": 1}, {"lab2": 1})
    assert (change.added, change.removed, change.changed) == (("lab2",), ("lab",), ())


def test_names_come_sorted_whatever_the_config_order() -> None:
    change = diff_source_sets({}, {"z": 1, "a": 1, "m": 1})
    assert change.added == ("a", "m", "z")
    assert bool(change)


def test_everything_removed() -> None:
    assert diff_source_sets({"b": 1, "a": 1}, {}).removed == ("a", "b")
