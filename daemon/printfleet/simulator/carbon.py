"""The Carbon DLS API v1 (0.4.17) as documented in ``shared/api/carbon.md``.

Behaviour where the vendor is silent (simulator choices, all small JSON bodies
``{"error": <code>, "message": <text>}``):

- Order of checks: bearer JWT (401) -> per-``iss`` limit (429 with ``Retry-After``) -> route
  (404) -> parameters (400) -> the view. Requests failing auth do not count toward the limit.
- JWT: RS256 only, signature checked with the account's public key, ``iss`` must be a known
  client_id, ``exp`` required and judged on the protocol clock (``iat``/``nbf`` are ignored).
- ``GET /printers``: ``offset`` counts items to skip; ``limit`` 1-1000 (default 100); an account
  with no printers gets 404 ``no printer found``; an offset past the end gets an empty page.
- ``GET /prints``: default order newest first (by when the print was queued); ``status`` defaults
  to ``["finished"]`` and takes 1-5 values, each one of ``queued``, ``printing``, ``finished``
  (anything else is a 400: no other value is documented, so a client must not rely on it);
  cursors are base64 text naming an offset, a digest of
  the account, filters and sort, and the issue time. A cursor expires ``cursor_ttl_s`` (60 s)
  after issue and is rejected (400) when used with different filters or sort. Sorting puts nulls
  last ascending and first descending (PostgreSQL's defaults). ``total_count`` is capped at 10,000.
- ``GET /printers/queues`` is served too (the queued print's uuid per printer).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from printfleet.simulator import carbon_render as render
from printfleet.simulator import catalog
from printfleet.simulator.carbon_render import carbon_status, print_order_number
from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.engine import Engine
from printfleet.simulator.faults import Faults, VendorFaults, mix_in, oversized_body, spliced
from printfleet.simulator.fleet import Account, Printer, Run
from printfleet.simulator.ratelimit import SlidingWindow
from printfleet.simulator.wire import (
    Moment,
    Request,
    Response,
    dumps,
    iso_millis,
    json_response,
    parse_instant,
)

VENDOR = "carbon"
TOTAL_COUNT_CAP = 10_000
_SERIAL = re.compile(r"[0-9A-Z]{6,7}")
_SORTABLE = ("uuid", "status", "started_at", "finished_at", "print_order_number")
_CACHE_LIMIT = 10_000


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


class _BadRequest(Exception):
    pass


class CarbonApi:
    """Answers Carbon requests from the shared fleet. Call under the simulator lock."""

    vendor = VENDOR

    def __init__(self, engine: Engine, config: SimulatorConfig, faults: Faults) -> None:
        self.base_url = ""
        self._engine = engine
        self._config = config
        self._all_faults = faults
        self._accounts = {a.client_id: a for a in engine.accounts[VENDOR]}
        self._keys: dict[str, RSAPublicKey] = {}
        for account in self._accounts.values():
            key = load_pem_public_key(account.public_pem)
            assert isinstance(key, RSAPublicKey)
            self._keys[account.client_id] = key
        self._verified: dict[str, tuple[Account, float]] = {}
        self._stale: set[str] = set()
        self._limit = SlidingWindow(config.carbon_limit_per_10s, 10.0)

    @property
    def _faults(self) -> VendorFaults:
        # Looked up per request, so tests may replace ``sim.faults.carbon`` wholesale.
        return self._all_faults.carbon

    # --- entry points ---------------------------------------------------------------------------

    def handle(self, request: Request, moment: Moment) -> Response:
        """Answer one request at ``moment``."""
        if request.method != "GET":
            return _error(405, "method_not_allowed", f"{request.method} is not allowed here")
        account = self._authenticate(request, moment)
        if isinstance(account, str):
            return _error(401, "unauthorized", account)
        wait = self._limit.acquire(account.client_id, moment.protocol)
        if wait is not None:
            return self.throttled(wait)
        path = request.path
        try:
            if path == "/v1/printers":
                return self._printers(request, account, moment)
            if path == "/v1/printers/queues":
                return self._queues(request, account, moment)
            if path.startswith("/v1/printers/"):
                return self._printer(path.removeprefix("/v1/printers/"), account, moment)
            if path == "/v1/prints":
                return self._prints(request, account, moment)
        except _BadRequest as bad:
            return _error(400, "bad_request", str(bad))
        return _error(404, "not_found", f"no route for {path}")

    def throttled(self, retry_after: int) -> Response:
        """429 with ``Retry-After`` (Carbon documents neither; our choice)."""
        body = {"error": "rate_limited", "message": f"Too many requests; retry in {retry_after} s"}
        return json_response(429, body, [("Retry-After", str(retry_after))])

    def expire_tokens(self) -> None:
        """Reject every JWT seen so far once more, as if it had expired.

        Carbon clients mint their own tokens, and RS256 signatures are deterministic, so a client
        re-minting within the same second produces the very same token; rejecting each known token
        exactly once lets that retry succeed, like a fresh token would.
        """
        self._stale.update(self._verified)
        self._verified.clear()

    # --- auth -----------------------------------------------------------------------------------

    def _authenticate(self, request: Request, moment: Moment) -> Account | str:
        """The calling account, or why the request is unauthorized."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "missing bearer token"
        if token in self._stale:
            self._stale.discard(token)
            return "token expired"
        cached = self._verified.get(token)
        if cached is None:
            verified = self._verify(token)
            if isinstance(verified, str):
                return verified
            cached = verified
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[token] = cached
        account, expires = cached
        if expires <= moment.protocol:
            return "token expired"
        return account

    def _verify(self, token: str) -> tuple[Account, float] | str:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "malformed token"
        issuer = claims.get("iss")
        account = self._accounts.get(issuer) if isinstance(issuer, str) else None
        if account is None:
            return "unknown issuer"
        try:
            claims = jwt.decode(
                token,
                key=self._keys[account.client_id],
                algorithms=["RS256"],
                options={
                    "require": ["iss", "exp"],
                    "verify_exp": False,  # judged below on the protocol clock, not time.time()
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            return "invalid signature"
        except jwt.PyJWTError as err:
            return f"invalid token: {err}"
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            return "invalid token: exp must be a number"
        return account, float(expires)

    # --- printers -------------------------------------------------------------------------------

    def _printer_bytes(self, printer: Printer, moment: Moment) -> bytes:
        return render.printer_json(
            printer,
            moment.sim_s,
            self._config.heartbeat_s,
            unknown=self._faults.unknown_statuses,
            malformed=printer.serial in self._faults.malformed_serials,
        )

    def _printers(self, request: Request, account: Account, moment: Moment) -> Response:
        limit = _int_param(request, "limit", 100, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, None)
        if not account.printers:
            return _error(404, "not_found", "no printer found")
        oversized = oversized_body(self._faults)
        if oversized is not None:
            chunks, length = oversized
            return Response(200, stream=chunks, stream_length=length)
        extra = spliced(self._faults.extra_printers, iso_millis(moment.sim_s) or "")
        rows = mix_in(
            account.printers_by_name(),
            self._faults.malformed_records,
            lambda i: dumps(render.malformed_printer(i)),
        )
        rows = [*rows, *extra]
        parts = [
            row if isinstance(row, bytes) else self._printer_bytes(row, moment)
            for row in rows[offset : offset + limit]
        ]
        head = f'{{"limit":{limit},"offset":{offset},"total_count":{len(rows)},"printers":['
        return Response(200, head.encode() + b",".join(parts) + b"]}")

    def _printer(self, serial: str, account: Account, moment: Moment) -> Response:
        printer = account.printers.get(serial) if _SERIAL.fullmatch(serial) else None
        if printer is None:
            return _error(404, "not_found", "printer not found")
        return Response(200, self._printer_bytes(printer, moment))

    def _queues(self, request: Request, account: Account, moment: Moment) -> Response:
        wanted = set(request.query.get("printer_serial", []))
        queues = []
        for printer in account.printers_by_name():
            if wanted and printer.serial not in wanted:
                continue
            queued = [printer.next_run.guid] if printer.next_run is not None else []
            observed = printer.observed_at(moment.sim_s, self._config.heartbeat_s)
            queues.append(
                {
                    "printer_serial": printer.serial,
                    "updated_at": iso_millis(observed),
                    "print_uuids": queued,
                }
            )
        return json_response(200, {"printer_queues": queues})

    # --- prints ---------------------------------------------------------------------------------

    def _prints(self, request: Request, account: Account, moment: Moment) -> Response:
        limit = _int_param(request, "limit", 100, 1, 1000)
        statuses = request.query.get("status") or ["finished"]
        if len(statuses) > 5:
            raise _BadRequest("status takes 1 to 5 values")
        undocumented = sorted(set(statuses) - catalog.CARBON_FILTER_STATUSES)
        if undocumented:
            raise _BadRequest(f"status: unsupported value {undocumented[0]!r}")
        sorts = [_sort_spec(value) for value in request.query.get("sort", [])]
        predicates = self._predicates(request, set(statuses))
        digest = _digest(account.client_id, request)
        offset = 0
        cursor = request.param("cursor")
        if cursor:
            offset = self._open_cursor(cursor, digest, moment)
        runs = [run for run in reversed(account.runs) if all(p(run) for p in predicates)]
        for field, descending in reversed(sorts):
            runs.sort(key=_sort_key(field), reverse=descending)
        page = runs[offset : offset + limit]
        records = [render.print_record(run, moment.sim_s) for run in page]
        rows = mix_in(
            records, self._faults.malformed_records if page else 0, render.malformed_print
        )
        more = offset + limit < len(runs)
        body = {
            "limit": limit,
            "next_cursor": _make_cursor(offset + limit, digest, moment.protocol) if more else None,
            "total_count": min(len(runs), TOTAL_COUNT_CAP),
            "prints": list(rows),
        }
        return Response(200, dumps(body))

    def _predicates(self, request: Request, statuses: set[str]) -> list[Callable[[Run], bool]]:
        predicates: list[Callable[[Run], bool]] = [lambda run: carbon_status(run) in statuses]
        serials = set(request.query.get("printer_serial", []))
        if serials:
            predicates.append(lambda run: run.printer_serial in serials)
        print_ids = set(request.query.get("print_id", []))
        if print_ids:
            predicates.append(lambda run: run.started_at is not None and run.print_id in print_ids)
        uuids = set(request.query.get("uuid", []))
        if uuids:
            predicates.append(lambda run: run.guid in uuids)
        for name, attribute, inclusive in (
            ("started_after", "started_at", True),
            ("started_before", "started_at", False),
            ("finished_after", "finished_at", True),
            ("finished_before", "finished_at", False),
        ):
            text = request.param(name)
            if text is None:
                continue
            bound = parse_instant(text)
            if bound is None:
                raise _BadRequest(f"{name} must be an ISO-8601 date or date-time")
            predicates.append(_time_predicate(attribute, bound, inclusive))
        return predicates

    def _open_cursor(self, cursor: str, digest: str, moment: Moment) -> int:
        try:
            kind, offset, cursor_digest, issued = (
                base64.b64decode(cursor, validate=True).decode().split(":")
            )
            offset_value, issued_at = int(offset), float(issued)
        except (binascii.Error, UnicodeDecodeError, ValueError) as err:
            raise _BadRequest("invalid cursor") from err
        if kind != "print" or offset_value < 0:
            raise _BadRequest("invalid cursor")
        if cursor_digest != digest:
            raise _BadRequest("cursor does not match the request's filters or sort")
        if moment.protocol - issued_at > self._config.cursor_ttl_s:
            raise _BadRequest("cursor expired")
        return offset_value


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.param(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError as err:
        raise _BadRequest(f"{name} must be an integer") from err
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _BadRequest(f"{name} must be {bounds}")
    return value


def _sort_spec(value: str) -> tuple[str, bool]:
    field, _, direction = value.partition(",")
    if field not in _SORTABLE or direction not in ("", "asc", "desc"):
        raise _BadRequest(f"cannot sort by {value!r}")
    return field, direction == "desc"


def _sort_key(field: str) -> Callable[[Run], tuple[bool, str]]:
    # (is null, value): nulls sort last ascending and, under reverse=True, first descending.
    def key(run: Run) -> tuple[bool, str]:
        value: str | None
        if field == "uuid":
            value = run.guid
        elif field == "status":
            value = carbon_status(run)
        elif field == "print_order_number":
            value = print_order_number(run)
        else:
            stamp = getattr(run, field)
            value = None if stamp is None else f"{stamp:012d}"
        return value is None, value or ""

    return key


def _time_predicate(attribute: str, bound: float, inclusive: bool) -> Callable[[Run], bool]:
    def check(run: Run) -> bool:
        value: int | None = getattr(run, attribute)
        if value is None:
            return False
        return value >= bound if inclusive else value < bound

    return check


def _digest(client_id: str, request: Request) -> str:
    """What a cursor is bound to: the account, every filter and the sort (not limit/cursor)."""
    items = sorted(
        (key, tuple(values))
        for key, values in request.query.items()
        if key not in ("cursor", "limit")
    )
    return hashlib.blake2b(repr((client_id, items)).encode(), digest_size=8).hexdigest()


def _make_cursor(offset: int, digest: str, issued: float) -> str:
    return base64.b64encode(f"print:{offset}:{digest}:{issued:.3f}".encode()).decode()
