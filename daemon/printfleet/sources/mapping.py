"""Lenient readers shared by the vendor mappers: decoded JSON in, plain values or ``None`` out.

The readers (``parse_time``, ``as_*``, ``raw_text``) are pure and total: each accepts *any*
decoded JSON value (and a few Python values besides) and never raises. A value of the wrong
type, out of range or unparseable reads as ``None`` ("the vendor did not say"), because both
vendors document fields that are marked required yet arrive null, numbers that arrive as
strings, and enums that grow. The mappers decide what a ``None`` means; only they raise
(:class:`MappingError` for an unusable record, ``BadResponse`` via :func:`records_of` for an
unusable response).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

from printfleet.core.model import (
    PrinterStatus,
    PrintStatus,
    RawJson,
    SkippedRecord,
    frozen_mapping,
)
from printfleet.errors import BadResponse

T = TypeVar("T")

#: Reasons given in :class:`SkippedRecord` (short, stable, safe to log and count).
REASON_NOT_OBJECT: Final = "not an object"
REASON_DUPLICATE: Final = "duplicate"
REASON_TOO_DEEP: Final = "nested too deep"
#: The default of ``[limits] json_max_depth``: the documented records nest about 6 deep.
DEFAULT_MAX_DEPTH: Final = 64

# Ints beyond int64 are not plausible vendor values and would overflow float division.
_INT_LIMIT: Final = 2**63
# Epoch values above this are taken as milliseconds (1e11 s is the year 5138).
_EPOCH_MS_THRESHOLD: Final = 1e11
_RAW_TEXT_LIMIT: Final = 200


class MappingError(ValueError):
    """A vendor record cannot become a normalized value (wrong shape or no key).

    The message is a short reason fit for :class:`~printfleet.core.model.SkippedRecord`; it
    never contains vendor payload text, so it is safe to log.
    """


class Keyed(Generic[T]):
    """Mapped records by key, plus the records that were skipped.

    A key seen again replaces the earlier item (the later record is the fresher one when
    pages shift while being walked) and the earlier one is counted as skipped with reason
    ``"duplicate"``, so ``len(items) + len(skipped)`` always equals the number of records.
    """

    __slots__ = ("items", "kind", "skipped")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[str, T] = {}
        self.skipped: list[SkippedRecord] = []

    def add(self, key: str, item: T) -> None:
        if key in self.items:
            self.skipped.append(SkippedRecord(self.kind, key, REASON_DUPLICATE))
            del self.items[key]  # re-insert so the dict keeps the order of the kept records
        self.items[key] = item

    def skip(self, key: str | None, reason: str) -> None:
        self.skipped.append(SkippedRecord(self.kind, key, reason))

    def collect(
        self,
        records: Iterable[Any],
        *,
        key: str,
        missing: str,
        build: Callable[[Mapping[str, Any], str], T],
        reuse: Callable[[str, str], T | None] | None = None,
    ) -> None:
        """Map every record with ``build(record, its key)``; skip, with a reason, each record
        that is not an object, lacks its ``key`` or cannot be mapped. Never raises: one bad
        record must not fail the poll. ``reuse(key, text)``, asked first for a record that
        kept its JSON text, may answer the item mapped from the same text before (see
        :class:`RecordCache`); a :class:`Known` element is decoded only when it does not."""
        for value in records:
            ident: str | None = None
            try:
                if type(value) is Known:
                    item = reuse(value.key, value.text) if reuse is not None else None
                    if item is not None:
                        self.add(value.key, item)
                        continue
                    value = value.decode()
                record = as_mapping(value)
                if record is None:
                    self.skip(None, REASON_TOO_DEEP if value is TOO_DEEP else REASON_NOT_OBJECT)
                    continue
                ident = as_str(record.get(key))
                if ident is None:
                    self.skip(None, missing)
                    continue
                item = None
                if reuse is not None and type(record) is Record:
                    item = reuse(ident, record.text)
                if item is None:
                    item = build(record, ident)
            except MappingError as err:
                self.skip(ident, str(err))
                continue
            # A mapper bug, or a record built to break one (100,000 levels deep: RecursionError);
            # either way one record, skipped. The fuzz tests fail on this reason.
            except Exception as err:
                self.skip(ident, unexpected(err))
                continue
            self.add(ident, item)


class Record(dict[str, Any]):
    """A decoded vendor record that remembers the JSON text it was decoded from."""

    __slots__ = ("text",)

    def __init__(self, value: dict[str, Any], text: str) -> None:
        super().__init__(value)
        self.text = text


class Known:
    """An array element whose text is, character for character, the one the last fetch had
    for ``key`` (see :meth:`RecordStream.expect`): not decoded unless asked to."""

    __slots__ = ("key", "text")

    def __init__(self, key: str, text: str) -> None:
        self.key = key
        self.text = text

    def decode(self) -> Record:
        # The same text decoded within the depth limit before, so it does again.
        return Record(json.loads(self.text), self.text)


class Cached(Generic[T]):
    """What one record was mapped to, kept to be reused while its text stays the same.

    The mapping may depend on the time it is done at (a printer turns offline once its
    heartbeat is old enough): it is valid only while the fetch time is after ``after`` (when
    set) and at most ``until`` (when set).
    """

    __slots__ = ("after", "cuts", "extra", "item", "text", "until")

    def __init__(
        self,
        text: str,
        item: T,
        *,
        extra: Any = None,
        after: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self.text = text
        self.item = item
        self.extra = extra
        self.after = after
        self.until = until
        #: :meth:`Heartbeat.cuts` of ``text``, once asked for (``None``: not yet or refused).
        self.cuts: list[int] | None = None

    def valid_at(self, now: datetime) -> bool:
        return (self.after is None or now > self.after) and (
            self.until is None or now <= self.until
        )


class RecordCache(Generic[T]):
    """Per source: the records of the last fetch by key, as mapped, with their text.

    A record whose JSON text equals the last fetch's (and whose mapping is still valid at the
    new fetch time) is not mapped again: its item is the very object mapped before, so
    everything downstream can tell "unchanged" by identity. Only the last fetch is kept, so
    printers that went away are forgotten, and the text kept is the one each printer's
    :class:`~printfleet.core.model.RawJson` holds anyway.
    """

    __slots__ = ("_cuts", "_entries", "_next", "mapped", "reused")

    def __init__(self) -> None:
        self._entries: dict[str, Cached[T]] = {}
        self._next: dict[str, Cached[T]] = {}
        self._cuts: list[int] | None = None  # of the record :meth:`similar` last patched
        #: Records of the latest fetch reused and mapped (each record is one or the other).
        self.reused = 0
        self.mapped = 0

    def begin(self) -> None:
        self._next = {}
        self.reused = self.mapped = 0

    def lookup(self, key: str, text: str, now: datetime) -> Cached[T] | None:
        """The cached mapping of the record ``key`` when its ``text`` is unchanged and the
        mapping still valid at ``now``."""
        entry = self._entries.get(key)
        if entry is None or entry.text != text or not entry.valid_at(now):
            return None
        self.reused += 1
        self._next[key] = entry
        return entry

    def similar(self, key: str, record: Mapping[str, Any], beat: Heartbeat) -> Cached[T] | None:
        """The last fetch's entry for ``key`` when ``record`` (which kept its text) differs
        from it only in ``beat``'s fields; its item is then patched, not mapped again (the
        caller keeps the patched entry with :meth:`keep` ``patched=True``)."""
        entry = self._entries.get(key)
        if entry is None or type(record) is not Record:
            return None
        # Each text is cut once: the new one's cuts are kept for the next fetch (see keep).
        if entry.cuts is None:
            entry.cuts = beat.cuts(entry.text)
        self._cuts = beat.cuts(record.text)
        if self._cuts is None or not beat.only_beat(entry.text, record, entry.cuts, self._cuts):
            return None
        return entry

    def keep(
        self,
        record: Mapping[str, Any],
        key: str,
        entry: Cached[T] | None,
        *,
        patched: bool = False,
    ) -> None:
        """Remember a record just mapped, or ``patched`` from its heartbeat alone (counted as
        reused); only records that kept their text can be compared. ``None``: its mapping
        holds only for this fetch's time, nothing to keep."""
        if patched:
            self.reused += 1
            if entry is not None:
                entry.cuts = self._cuts
        else:
            self.mapped += 1
        if entry is not None and type(record) is Record:
            self._next[key] = entry

    def collect(
        self,
        keyed: Keyed[T],
        records: Iterable[Any],
        *,
        key: str,
        missing: str,
        now: datetime,
        beat: Heartbeat,
        full: Callable[[Mapping[str, Any], str], T],
        patch: Callable[[T, Record], T],
        entry: Callable[[Mapping[str, Any], T], Cached[T] | None],
        seen: Callable[[T], None] | None = None,
    ) -> None:
        """:meth:`Keyed.collect` through this cache, as one whole fetch: an unchanged record
        gives its cached item, one changed only in ``beat``'s fields is ``patch``-ed from it,
        any other is mapped in ``full``; ``entry`` says what to keep of each, ``seen`` is told
        every item however it came."""

        def build(record: Mapping[str, Any], ident: str) -> T:
            known = self.similar(ident, record, beat)
            if known is not None:
                assert isinstance(record, Record)  # similar() answers only for one
                item = patch(known.item, record)
            else:
                item = full(record, ident)
            if seen is not None:
                seen(item)
            self.keep(record, ident, entry(record, item), patched=known is not None)
            return item

        def reuse(ident: str, text: str) -> T | None:
            found = self.lookup(ident, text, now)
            if found is None:
                return None
            if seen is not None:
                seen(found.item)
            return found.item

        self.begin()
        keyed.collect(records, key=key, missing=missing, build=build, reuse=reuse)
        self.finish()

    def known(self) -> list[tuple[str, str]]:
        """``(key, text)`` of the last fetch's records, in the order they came."""
        return [(key, entry.text) for key, entry in self._entries.items()]

    def finish(self) -> None:
        """End a fetch read whole: its records are what the next fetch is compared with."""
        self._entries, self._next = self._next, {}

    def __len__(self) -> int:
        return len(self._entries)


class Heartbeat:
    """The fields of a vendor record that move with every heartbeat of an idle printer
    (``keys`` of the object at ``path``): a record that differs from the last fetch's only in
    their values is patched instead of mapped again.

    Telling that is done on the text, at C speed: each key's value is cut out of both texts
    and the rest compared. That is exact under three conditions checked here: no escape
    (``\\``) in either text (so every key is spelled literally), each key at most once (as
    ``"key"``, so a key cannot hide elsewhere; a string *value* spelled so also refuses), and
    every key found in the new record's object at ``path``. Then equal rests mean the decoded
    records are equal but for those values, in that object.
    """

    __slots__ = ("_quoted", "keys", "path")

    def __init__(self, path: tuple[str, ...], keys: tuple[str, ...]) -> None:
        self.path = path
        self.keys = keys
        self._quoted = tuple(f'"{key}"' for key in keys)

    def holder(self, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The object holding the heartbeat keys in a decoded record, if it is one."""
        value: Any = record
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, dict) else None

    def cuts(self, text: str) -> list[int] | None:
        """Where the heartbeat values are in ``text`` (start, end, start, end, … in order);
        ``None`` when cutting them out would not be exact."""
        if text.find("\\") >= 0:  # one C scan; an escape could spell a key unseen
            return None
        cuts: list[int] = []
        for quoted in self._quoted:
            at = text.find(quoted)
            if at < 0:
                continue
            if text.find(quoted, at + 1) >= 0:
                return None
            at += len(quoted)
            if text.startswith(":", at):  # compact, or Python's ": " (else any spacing)
                start = at + 2 if text.startswith(" ", at + 1) else at + 1
            else:
                at = _skip_space(text, at)
                if not text.startswith(":", at):
                    return None  # a string value spelled like the key
                start = _skip_space(text, at + 1)
            try:
                _, end = _DECODER.raw_decode(text, start)
            except (ValueError, RecursionError):
                return None
            cuts.append(start)
            cuts.append(end)
        if len(cuts) > 2 and not (len(cuts) == 4 and cuts[1] <= cuts[2]):
            pairs = sorted(zip(cuts[::2], cuts[1::2], strict=True))
            if any(pairs[i][0] < pairs[i - 1][1] for i in range(1, len(pairs))):
                return None  # one key inside another's value
            cuts = [at for pair in pairs for at in pair]
        return cuts

    def only_beat(
        self,
        old: str,
        record: Record,
        old_cuts: list[int] | None = None,
        new_cuts: list[int] | None = None,
    ) -> bool:
        """Whether ``record`` differs from the record whose text was ``old`` only in the
        heartbeat values (an identical text counts too); ``old_cuts``/``new_cuts``: their
        :meth:`cuts` when known already."""
        new = record.text
        if new_cuts is None:
            new_cuts = self.cuts(new)
        if new_cuts is None:
            return False
        if old_cuts is None:
            old_cuts = self.cuts(old)
        if old_cuts is None or len(old_cuts) != len(new_cuts):
            return False
        o = n = 0
        for i in range(0, len(new_cuts), 2):
            if old[o : old_cuts[i]] != new[n : new_cuts[i]]:
                return False
            o, n = old_cuts[i + 1], new_cuts[i + 1]
        if old[o:] != new[n:]:
            return False
        if not new_cuts:
            return True
        holder = self.holder(record)
        return holder is not None and all(
            key in holder
            for key, quoted in zip(self.keys, self._quoted, strict=True)
            if quoted in new
        )


def raw_record(record: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    """What a mapped value keeps as ``raw``: the record's own text when it has it (decoded
    again only if read), else a read-only copy. ``path`` selects a nested object."""
    if isinstance(record, Record):
        return RawJson(record.text, path)
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return frozen_mapping(value if isinstance(value, Mapping) else None)


_DECODER: Final = json.JSONDecoder()
_SPACE: Final = re.compile(r"[ \t\n\r]*")
# A JSON string or one bracket: enough to find where a value too deep to decode ends.
_TOKEN: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class TooDeep:
    """Stands in for a record nested deeper than ``json_max_depth`` (it was not kept).

    Mappers see something that is not an object and skip it; :meth:`Keyed.collect` names the
    reason (:data:`REASON_TOO_DEEP`).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_DEEP"


TOO_DEEP: Final = TooDeep()


def too_deep(value: Any, limit: int) -> bool:
    """Whether decoded JSON ``value`` nests more than ``limit`` containers deep.

    Iterative (no recursion, whatever the value), and it visits containers only once each.
    """
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        for child in container.values() if type(container) is dict else container:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def _record(text: str, start: int, limit: int) -> tuple[Any, int]:
    """The array element at ``start``: its value (TOO_DEEP past ``limit``) and where it ends.

    An element too deep for the decoder's own recursion guard is stepped over unread, so one
    hostile record costs one scan and never a ``RecursionError``.
    """
    try:
        value, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        return TOO_DEEP, _skip_value(text, start)
    if type(value) is dict:
        chunk = text[start:end]
        # Counting brackets is C-fast and settles almost every record (a printer has ~14).
        if chunk.count("{") + chunk.count("[") > limit and too_deep(value, limit):
            return TOO_DEEP, end
        return Record(value, chunk), end
    if type(value) is list and too_deep(value, limit):
        return TOO_DEEP, end
    return value, end


def _skip_value(text: str, start: int) -> int:
    """The end of the (valid-looking) JSON container at ``start``, by counting brackets."""
    depth = 0
    for match in _TOKEN.finditer(text, start):
        part = match.group()
        if part in "[{":
            depth += 1
        elif part in "]}":
            depth -= 1
            if depth == 0:
                return match.end()
    raise ValueError(f"unterminated value at character {start}")


class RecordStream(Iterable[Any]):
    """The elements of a JSON array body, decoded one at a time as they are read.

    A 5,000-printer ``/printers/`` array decodes to ~55 MB of objects; mapped one by one, each
    record is garbage as soon as its printer is built. Objects come as :class:`Record`; an
    element nested deeper than ``max_depth`` comes as :data:`TOO_DEEP` (the rest are still
    read). Iterating raises ``ValueError`` where the text stops being a JSON array.
    """

    def __init__(self, text: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self._text = text
        self._limit = max_depth
        self._known: list[tuple[str, str]] = []
        self._key = ""

    @staticmethod
    def is_array(text: str) -> bool:
        return text.startswith("[", _skip_space(text, 0))

    def expect(self, known: list[tuple[str, str]], *, key: str) -> None:
        """Elements are likely the ``known`` ``(key value, text)`` of the last fetch, in that
        order: one whose text is the same, character for character, comes as :class:`Known`
        without being decoded (a JSON object ends where its text does, so the same text at
        this position is the same element). ``key`` names the field that holds the key, to
        find the place again after an element that differs."""
        self._known = known
        self._key = key

    def __iter__(self) -> Iterator[Any]:
        text = self._text
        known, field = self._known, self._key
        place: dict[str, int] | None = None  # key value -> index in ``known``, when needed
        ahead = 0  # the index in ``known`` expected next
        at = _skip_space(text, _skip_space(text, 0) + 1)
        if text.startswith("]", at):
            at += 1
        else:
            while True:
                if ahead < len(known) and text.startswith(known[ahead][1], at):
                    ident, chunk = known[ahead]
                    ahead += 1
                    end = at + len(chunk)
                    yield Known(ident, chunk)
                else:
                    value, end = _record(text, at, self._limit)
                    if known and type(value) is Record:
                        if place is None:
                            place = {k: i for i, (k, _) in enumerate(known)}
                        index = place.get(as_str(value.get(field)) or "")
                        if index is not None:
                            ahead = index + 1
                    yield value
                at = _skip_space(text, end)
                if text.startswith(",", at):
                    at = _skip_space(text, at + 1)
                elif text.startswith("]", at):
                    at += 1
                    break
                else:
                    raise ValueError(f"expected ',' or ']' at character {at}")
        if _skip_space(text, at) != len(text):
            raise ValueError(f"extra data after the array at character {at}")


def _skip_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


class JsonTooDeep(ValueError):
    """A JSON document nests deeper than allowed outside its list of records."""


def loads(
    text: str, *, max_depth: int = DEFAULT_MAX_DEPTH, records: bool = True, keep_text: bool = False
) -> Any:
    """Decode a JSON document whose nesting is capped at ``max_depth`` containers.

    With ``records``, a list at the top or directly under the top-level object is a list of
    records: an element of it nested deeper than the cap becomes :data:`TOO_DEEP` (a skipped
    record, the rest kept). Without, and for anything else too deep, the whole document is
    refused. With ``keep_text`` (and ``records``), the objects in those lists come as
    :class:`Record` (each keeps its JSON text, so a source can tell an unchanged one).

    Raises:
        JsonTooDeep: nested too deep (never ``RecursionError``, however deep).
        ValueError: not JSON.
    """
    if keep_text and records and text.startswith(("[", "{"), _skip_space(text, 0)):
        return _loads_slow(text, max_depth, keep=True)
    try:
        value = json.loads(text)
    except RecursionError:
        if not records:
            raise JsonTooDeep(f"nested deeper than {max_depth}") from None
        return _loads_slow(text, max_depth)
    if not too_deep(value, max_depth):
        return value
    if not records:
        raise JsonTooDeep(f"nested deeper than {max_depth}")
    return _cap_records(value, max_depth)


def _cap_records(value: Any, limit: int) -> Any:
    """A decoded document with its too-deep records replaced by :data:`TOO_DEEP`."""
    if type(value) is list:
        return [TOO_DEEP if too_deep(item, limit - 1) else item for item in value]
    if type(value) is dict:
        capped: dict[str, Any] = {}
        for key, item in value.items():
            if type(item) is list:
                capped[key] = [TOO_DEEP if too_deep(e, limit - 2) else e for e in item]
            elif too_deep(item, limit - 1):
                raise JsonTooDeep(f"{key!r} is nested deeper than {limit}")
            else:
                capped[key] = item
        return capped
    return value


def _loads_slow(text: str, limit: int, *, keep: bool = False) -> Any:
    """:func:`loads` for a document too deep for the decoder (or whose records keep their
    text): walk its top two levels here."""
    at = _skip_space(text, 0)
    value: Any
    if text.startswith("[", at):
        value, end = _array(text, at, limit - 1, keep)
    elif text.startswith("{", at):
        value, end = _object(text, at, limit, keep)
    else:
        raise JsonTooDeep(f"nested deeper than {limit}")
    if _skip_space(text, end) != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


def _array(text: str, at: int, limit: int, keep: bool = False) -> tuple[list[Any], int]:
    items: list[Any] = []
    at = _skip_space(text, at + 1)
    if text.startswith("]", at):
        return items, at + 1
    while True:
        value, end = _record(text, at, limit)
        items.append(value.copy() if type(value) is Record and not keep else value)
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at = _skip_space(text, at + 1)
        elif text.startswith("]", at):
            return items, at + 1
        else:
            raise ValueError(f"expected ',' or ']' at character {at}")


def _object(text: str, at: int, limit: int, keep: bool = False) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    at = _skip_space(text, at + 1)
    if text.startswith("}", at):
        return result, at + 1
    while True:
        key, end = _DECODER.raw_decode(text, at)
        at = _skip_space(text, end)
        if not isinstance(key, str) or not text.startswith(":", at):
            raise ValueError(f"expected a key and ':' at character {at}")
        at = _skip_space(text, at + 1)
        if text.startswith("[", at):
            value, end = _array(text, at, limit - 2, keep)
        else:
            try:
                value, end = _DECODER.raw_decode(text, at)
            except RecursionError:
                raise JsonTooDeep(f"{key!r} is nested deeper than {limit}") from None
            if too_deep(value, limit - 1):
                raise JsonTooDeep(f"{key!r} is nested deeper than {limit}")
        result[key] = value
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at = _skip_space(text, at + 1)
        elif text.startswith("}", at):
            return result, at + 1
        else:
            raise ValueError(f"expected ',' or '}}' at character {at}")


def records_of(body: Any, *, source: str, what: str, list_key: str) -> Iterable[Any]:
    """The list of records in a response body: a bare JSON array, or an object holding the
    array under ``list_key`` (a page wrapper such as ``{count, next, previous, results}``).

    Raises:
        BadResponse: the body is neither (the whole response is unusable, not one record).
    """
    if isinstance(body, list | RecordStream):
        return body
    if isinstance(body, Mapping):
        inner = body.get(list_key)
        if isinstance(inner, list):
            return inner
        raise BadResponse(source, f"expected a list of {what} under {list_key!r}")
    raise BadResponse(source, f"expected a list of {what}, got {json_type(body)}")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages that must not quote the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def unexpected(err: Exception) -> str:
    """The skip reason for a record that broke a mapper (a bug: the fuzz tests forbid it)."""
    return f"unexpected error: {type(err).__name__}"


def parse_time(value: Any) -> datetime | None:
    """An aware UTC ``datetime`` from a vendor timestamp, or ``None`` when there is none.

    Accepts ISO 8601 with ``Z``/``z``, ``+00:00``, ``+0000`` or a trailing `` UTC``, any number
    of fraction digits, a space or ``T`` separator, naive values (taken as UTC) and date-only
    values (midnight UTC). Ints and floats are read as Unix seconds (milliseconds when
    implausibly large). Anything else, including bools, reads as ``None``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(value)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed_or_none = _from_iso(value)
        if parsed_or_none is None:
            return None
        parsed = parsed_or_none
    else:
        return None
    try:
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        return None


def _from_iso(text: str) -> datetime | None:
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text[-1] == "z":
        text = text[:-1] + "Z"
    elif text.upper().endswith("UTC"):
        text = text[:-3].rstrip() + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _from_epoch(value: float) -> datetime | None:
    if not math.isfinite(value) or value < 0:
        return None
    seconds = value / 1000 if value > _EPOCH_MS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def as_str(value: Any) -> str | None:
    """A non-blank string as given, an int as its decimal text, else ``None``.

    Blank strings read as ``None`` because the vendors use ``""`` for "none" (Formlabs
    ``inside_printer``, ``user_custom_label``). Floats and bools are not identifiers or names,
    so they read as ``None``.
    """
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool) and -_INT_LIMIT < value < _INT_LIMIT:
        return str(value)
    return None


def as_int(value: Any) -> int | None:
    """An int from an int, an integral float or a numeric string ("517", "517.0")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT_LIMIT < value < _INT_LIMIT else None
    number = as_float(value)
    if number is None or not number.is_integer() or not -_INT_LIMIT < number < _INT_LIMIT:
        return None
    return int(number)


def as_float(value: Any) -> float | None:
    """A finite float from an int, a float or a numeric string; NaN and infinities are ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if -_INT_LIMIT < value < _INT_LIMIT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})


def as_bool(value: Any) -> bool | None:
    """A bool from a bool, 0/1, or "true"/"false"/"yes"/"no"/"1"/"0" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def as_mapping(value: Any) -> Mapping[str, Any] | None:
    """The value when it is a JSON object, else ``None``."""
    if isinstance(value, dict):  # decoded JSON: skips the slower ABC check on the hot path
        return value
    return value if isinstance(value, Mapping) else None


def raw_text(value: Any) -> str:
    """The vendor's value as text for ``status_raw`` fields: strings verbatim, ``None`` as
    ``""``, anything else as compact JSON (cut to 200 characters)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=repr)
    except (TypeError, ValueError):  # ints too long to print, circular values
        text = type(value).__name__
    return text[:_RAW_TEXT_LIMIT]


def clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


# --- Formlabs machine types (formlabs.md §6.10) ------------------------------------------------

#: Formlabs ``machine_type_id`` -> human model name. Newer models have codes not listed by the
#: vendor; those keep their raw code as the name.
FORMLABS_MODELS: Final[Mapping[str, str]] = {
    "FORM-1-0": "Form 1",
    "FORM-1-1": "Form 1+",
    "FORM-2-0": "Form 2",
    "FORM-2-1": "Form 2.1",
    "FORM-3-0": "Form 3",
    "FORM-3-1": "Form 3",
    "FORM-3-2": "Form 3+",
    "DGJR-1-0": "Form 3",
    "FRML-3-0": "Form 3L",
    "FRBL-3-0": "Form 3BL",
    "FRMB-3-0": "Form 3B",
    "DGSR-1-0": "Form 3L",
    "FRMB-3-1": "Form 3B+",
    "PILK-1-0": "Fuse 1",
    "SIFT-1": "Sift",
    "UNKNOWN": "Unknown",
    "PILK-1-1": "Fuse 1",
    "SIFT-1-0": "Sift",
    "SIFT-1-1": "Sift",
    "CURL-1-1": "Cure L",
    "CURL-1-0": "Cure L",
    "WSHL-1-0": "Wash L",
    "FS30-1-0": "Fuse 1+ (30W)",
    "FS30-1-1": "Fuse 1+ (30W)",
    "FORM-4-0": "Form 4",
}

# Machine families that hold no resin tank (SLS printers and post-processing units).
_FORMLABS_NOT_RESIN_PREFIXES: Final = ("PILK-", "FS30-", "SIFT-", "CURL-", "WSHL-")


def model_name(machine_type_id: str) -> str:
    """The human model name for a Formlabs ``machine_type_id``; the code itself when unknown."""
    return FORMLABS_MODELS.get(machine_type_id, machine_type_id)


def formlabs_is_resin_printer(machine_type_id: str) -> bool:
    """Whether a Formlabs machine type is a resin (SLA) printer that should hold a tank.

    Unknown codes count as resin printers only when they look like one (``FORM-``/``FR``
    prefixes, e.g. a future Form 4L), so a new Fuse or Wash model raises no "tank missing".
    """
    if machine_type_id == "UNKNOWN" or machine_type_id.startswith(_FORMLABS_NOT_RESIN_PREFIXES):
        return False
    if machine_type_id in FORMLABS_MODELS:
        return True
    return machine_type_id.startswith(("FORM-", "FR", "DG"))


# --- status normalisers --------------------------------------------------------------------------

_FORMLABS_PRINTER_STATUS: Final[Mapping[str, PrinterStatus]] = {
    s.value: s for s in PrinterStatus if s is not PrinterStatus.UNKNOWN
}

_FORMLABS_PRINT_STATUS: Final[Mapping[str, PrintStatus]] = {
    "QUEUED": PrintStatus.QUEUED,
    "PREPRINT": PrintStatus.PREPARING,
    "PREHEAT": PrintStatus.PREPARING,
    "PRECOAT": PrintStatus.PREPARING,
    "PRINTING": PrintStatus.PRINTING,
    "POSTCOAT": PrintStatus.PRINTING,
    "PAUSING": PrintStatus.PAUSED,
    "PAUSED": PrintStatus.PAUSED,
    "WAITING_FOR_RESOLUTION": PrintStatus.WAITING,
    "ABORTING": PrintStatus.ABORTING,
    "FINISHED": PrintStatus.FINISHED,
    "ERROR": PrintStatus.FAILED,
    "ABORTED": PrintStatus.ABORTED,
}

_CARBON_PRINTER_STATUS: Final = _FORMLABS_PRINTER_STATUS  # same six words, compared upper-cased

#: Carbon ``printer_state`` values (upper-cased) that mean the printer is not connected.
CARBON_OFFLINE_STATES: Final = frozenset({"OFFLINE", "DISCONNECTED"})

#: Carbon ``ModelPrint.status`` words we know (carbon.md §6, §8.2): ``finished`` is documented
#: (the filter default); ``queued`` and ``printing`` come from third-party code. No failure or
#: abort spelling is known, so none is listed: an unknown word is UNKNOWN, never an outcome.
_CARBON_PRINT_STATUS: Final[Mapping[str, PrintStatus]] = {
    "queued": PrintStatus.QUEUED,
    "printing": PrintStatus.PRINTING,
    "finished": PrintStatus.FINISHED,
}


#: Printer words that state a fact about the printer itself, so they win over the current run.
_FORMLABS_PRINTER_FACTS: Final = frozenset(
    {PrinterStatus.ERROR, PrinterStatus.OFFLINE, PrinterStatus.MAINTENANCE}
)


def formlabs_printer_status(raw: Any, run_status: Any = None) -> PrinterStatus:
    """Formlabs printer status from ``printer_status.status`` and ``current_print_run.status``.

    The printer word is a free string the vendor never enumerates (formlabs.md §6.2, which
    says to derive "is printing" from the run), while the run status is the documented
    ``StatusEnum`` (§6.10). So, in this order:

    * printer word ``ERROR``, ``OFFLINE`` or ``MAINTENANCE``: that (a fact about the machine);
    * a run in progress (pre-print, printing, waiting, aborting, paused — the §6.10 groups
      short of terminal): PAUSED for ``PAUSING``/``PAUSED``, else PRINTING, whatever the
      printer word (``PREHEAT``, ``FILLING``, ``WAITING_FOR_RESOLUTION``, …);
    * otherwise the printer word by exact known string (``IDLE``, ``PRINTING``, ``PAUSED``);
      anything else is UNKNOWN, never guessed by case or resemblance.
    """
    said = (
        _FORMLABS_PRINTER_STATUS.get(raw, PrinterStatus.UNKNOWN)
        if isinstance(raw, str)
        else PrinterStatus.UNKNOWN
    )
    if said in _FORMLABS_PRINTER_FACTS:
        return said
    run = formlabs_print_status(run_status)
    if run is PrintStatus.PAUSED:
        return PrinterStatus.PAUSED
    if run.is_active:
        return PrinterStatus.PRINTING
    return said


def formlabs_printer_phase(raw: Any, run_status: Any, status: PrinterStatus) -> str | None:
    """The vendor's word for what the printer is doing, where ``status`` is coarser.

    The printer word itself when it is not one of the normalized words (``FILLING``,
    ``PREHEAT``, a word new to us); else, when ``status`` came from a run in progress, the
    run's status when it differs from ``status`` (``PREHEAT`` under PRINTING, ``PAUSING``
    under PAUSED); else None.
    """
    if isinstance(raw, str) and raw.strip() and raw not in _FORMLABS_PRINTER_STATUS:
        return raw_text(raw)
    if status not in (PrinterStatus.PRINTING, PrinterStatus.PAUSED):
        return None
    if not isinstance(run_status, str) or not formlabs_print_status(run_status).is_active:
        return None
    return None if run_status == status.value else raw_text(run_status)


def formlabs_print_status(raw: Any) -> PrintStatus:
    """Formlabs print-run ``status`` (``StatusEnum``, formlabs.md §6.10) to a PrintStatus."""
    if isinstance(raw, str):
        return _FORMLABS_PRINT_STATUS.get(raw, PrintStatus.UNKNOWN)
    return PrintStatus.UNKNOWN


def carbon_printer_status(raw: Any) -> PrinterStatus:
    """Carbon ``printer_state``, case-insensitively; only PRINTING is vendor-documented."""
    if isinstance(raw, str):
        return _CARBON_PRINTER_STATUS.get(raw.strip().upper(), PrinterStatus.UNKNOWN)
    return PrinterStatus.UNKNOWN


def carbon_is_offline_state(raw: Any) -> bool:
    """Whether a Carbon ``printer_state`` says the printer is offline (OFFLINE, DISCONNECTED)."""
    return isinstance(raw, str) and raw.strip().upper() in CARBON_OFFLINE_STATES


def carbon_print_status(raw: Any) -> PrintStatus:
    """Carbon ``ModelPrint.status``, case-insensitively; any other value is UNKNOWN.

    Only ``finished`` is documented; ``queued``/``printing`` come from third-party code. The
    vendor's failure and abort spellings are unknown (carbon.md §8.2), and guessing one turns
    a word such as ``complete`` or ``paused`` into a false ``print.failed``: an unrecognised
    word is UNKNOWN (not an outcome) with its raw text kept, and the poller logs and counts it
    (``printfleet_unknown_status_total``).
    """
    if not isinstance(raw, str):
        return PrintStatus.UNKNOWN
    return _CARBON_PRINT_STATUS.get(raw.strip().lower(), PrintStatus.UNKNOWN)
