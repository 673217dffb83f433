"""The Formlabs Dashboard Developer API (0.8.1) as documented in ``shared/api/formlabs.md``.

Behaviour where the vendor is silent, chosen to match the Django REST Framework +
django-oauth-toolkit stack the notes infer:

- Order of checks: per-IP limit (every request) -> route (unknown path: Django's HTML 404) ->
  method (405) -> bearer token (401 ``{"detail": ...}``) -> per-user hourly limit -> the view.
- Token requests count toward the per-IP limit only, never toward the per-user hourly budget
  (DRF throttles apply to API views; the token endpoint is django-oauth-toolkit's own view).
- Both limits are sliding windows on the protocol clock; refused requests are not counted.
- Lists are newest first. ``per_page`` defaults to the config's 20 and is clamped to its 100;
  ``page=last`` works, any other page outside 1..N is 404 ``{"detail": "Invalid page."}``.
- ``date``/``date__gt``/``date__lt`` on prints compare ``created_at``; ``date`` with a bare day
  matches that UTC day. ``name`` is a case-insensitive substring. Bad filter values get DRF's
  400 ``{"<param>": ["..."]}``.
- A token stays valid for ``expires_in`` seconds; issuing a new one does not revoke older ones.
"""

from __future__ import annotations

import math
import re
import secrets
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlencode

from printfleet.simulator import catalog, queues
from printfleet.simulator import formlabs_render as render
from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.engine import Engine
from printfleet.simulator.faults import Faults, VendorFaults, mix_in, oversized_body, spliced
from printfleet.simulator.fleet import Account, Printer, Run, VendorEvent
from printfleet.simulator.pictures import PREFIX as PICTURE_PREFIX
from printfleet.simulator.pictures import PictureCdn
from printfleet.simulator.ratelimit import SlidingWindow
from printfleet.simulator.rng import derive_seed
from printfleet.simulator.wire import (
    Moment,
    Request,
    Response,
    dumps,
    html_response,
    iso_seconds,
    json_response,
    parse_instant,
)

T = TypeVar("T")
VENDOR = "formlabs"
NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
NOT_FOUND = {"detail": "Not found."}

_ROUTES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile("/developer/v1/" + pattern), method, name)
    for pattern, method, name in (
        (r"o/token/", "POST", "token"),
        (r"o/revoke_token/", "POST", "revoke"),
        (r"printers/", "GET", "printers"),
        (r"printers/(?P<serial>[^/]+)/", "GET", "printer"),
        (r"printers/(?P<serial>[^/]+)/prints/", "GET", "printer_prints"),
        (r"prints/", "GET", "prints"),
        (r"events/", "GET", "events"),
        (r"tanks/", "GET", "tanks"),
        (r"cartridges/", "GET", "cartridges"),
        (r"groups/", "GET", "groups"),
        (r"groups/(?P<group>[^/]+)/queue/", "GET", "group_queue"),
    )
)


@dataclass(slots=True)
class _Grant:
    account: Account
    expires_at: float


class _BadFilter(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class FormlabsApi:
    """Answers Formlabs requests from the shared fleet. Call under the simulator lock."""

    vendor = VENDOR

    def __init__(self, engine: Engine, config: SimulatorConfig, faults: Faults) -> None:
        self._base_url = ""
        self._engine = engine
        self._config = config
        self._all_faults = faults
        self._accounts = {a.client_id: a for a in engine.accounts[VENDOR]}
        self._grants: dict[str, _Grant] = {}
        self._hourly = SlidingWindow(config.formlabs_hourly_limit, 3600.0)
        self._per_ip = SlidingWindow(config.formlabs_per_second_limit, 1.0)
        # Keyed from the seed: the same fleet signs the same links (deterministic runs).
        key = derive_seed(config.seed, "picture-cdn").to_bytes(8, "big")
        self.cdn = PictureCdn(key, config.picture_link_ttl_s, self._run_exists)

    @property
    def base_url(self) -> str:
        """Set once the server has its port; next/previous and picture links use it."""
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._base_url = value
        self.cdn.base_url = value

    def _run_exists(self, guid: str) -> bool:
        return any(run.guid == guid for a in self._accounts.values() for run in a.runs)

    @property
    def _faults(self) -> VendorFaults:
        # Looked up per request, so tests may replace ``sim.faults.formlabs`` wholesale.
        return self._all_faults.formlabs

    # --- entry points ---------------------------------------------------------------------------

    def handle(self, request: Request, moment: Moment) -> Response:
        """Answer one request at ``moment``."""
        if request.path.startswith(PICTURE_PREFIX):
            # The CDN is not the API: no token, no API rate limits (it shares only the port).
            return self.cdn.handle(request, moment.sim)
        wait = self._per_ip.acquire(request.client, moment.protocol)
        if wait is not None:
            return self.throttled(wait)
        for pattern, method, name in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if request.method != method:
                return json_response(405, {"detail": f'Method "{request.method}" not allowed.'})
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if name == "token":
                return self._token(request, moment)
            if name == "revoke":
                return self._revoke(request)
            account = self._authenticate(request, moment)
            if account is None:
                return json_response(
                    401, NOT_AUTHENTICATED, [("WWW-Authenticate", 'Bearer realm="api"')]
                )
            wait = self._hourly.acquire(account.name, moment.protocol)
            if wait is not None:
                return self.throttled(wait)
            try:
                return self._view(name, request, moment, account, params)
            except _BadFilter as bad:
                return json_response(400, {bad.param: [bad.message]})
        return html_response(404, "<h1>Not Found</h1><p>The requested resource was not found.</p>")

    def throttled(self, retry_after: int) -> Response:
        """DRF's 429 with ``Retry-After`` in whole seconds."""
        body = {"detail": f"Request was throttled. Expected available in {retry_after} seconds."}
        return json_response(429, body, [("Retry-After", str(retry_after))])

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far; clients must request new ones."""
        self._grants.clear()

    # --- auth -----------------------------------------------------------------------------------

    @staticmethod
    def _form(request: Request) -> dict[str, str]:
        # Only form encoding is declared; a JSON body simply carries no form fields.
        if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
            return {}
        parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}

    def _token(self, request: Request, moment: Moment) -> Response:
        form = self._form(request)
        if form.get("grant_type") != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        account = self._accounts.get(form.get("client_id", ""))
        if account is None:
            return json_response(401, {"error": "invalid_client"})
        if not secrets.compare_digest(form.get("client_secret", ""), account.secret):
            body = {"error": "invalid_grant", "error_description": "Invalid credentials given."}
            return json_response(400, body)
        if self._faults.token_body is not None:
            return Response(200, self._faults.token_body.encode("utf-8", "surrogatepass"))
        token = secrets.token_urlsafe(24)
        expires_in = self._config.token_expires_in
        self._grants[token] = _Grant(account, moment.protocol + expires_in)
        return json_response(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": "developer-api",
            },
        )

    def _revoke(self, request: Request) -> Response:
        form = self._form(request)
        account = self._accounts.get(form.get("client_id", ""))
        if account is None or not secrets.compare_digest(
            form.get("client_secret", ""), account.secret
        ):
            return json_response(401, {"error": "invalid_client"})
        grant = self._grants.get(form.get("token", ""))
        if grant is not None and grant.account is account:
            del self._grants[form["token"]]
        return Response(200, b"", content_type="")

    def _authenticate(self, request: Request, moment: Moment) -> Account | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        grant = self._grants.get(token.strip())
        if grant is None:
            return None
        if grant.expires_at <= moment.protocol:
            del self._grants[token.strip()]
            return None
        return grant.account

    # --- views ----------------------------------------------------------------------------------

    def _view(
        self, name: str, request: Request, moment: Moment, account: Account, params: dict[str, str]
    ) -> Response:
        now = moment.sim_s
        if name == "printers":
            return self._printers(account, now)
        if name == "printer":
            printer = account.printers.get(params["serial"])
            if printer is None:
                return json_response(404, NOT_FOUND)
            return Response(200, self._printer_bytes(printer, now))
        if name in ("prints", "printer_prints"):
            serial = params.get("serial")
            known = serial in account.printers or serial in account.runs_by_printer
            if serial is not None and not known:
                return json_response(404, NOT_FOUND)
            source = account.runs if serial is None else account.runs_by_printer.get(serial, [])
            runs = self._filter_runs(source, request)
            return self._paginate(request, runs, lambda r: self._run(r, now))
        if name == "events":
            return self._events(request, account, now)
        if name == "tanks":
            tanks = account.tanks[::-1]
            return self._paginate(request, tanks, render.tank_record)
        if name == "cartridges":
            cartridges = account.cartridges[::-1]
            return self._paginate(request, cartridges, render.cartridge_record)
        if name == "groups":
            members: dict[str, list[str]] = {g.id: [] for g in account.groups}
            for printer in account.printers.values():
                if printer.group is not None:
                    members[printer.group.id].append(printer.serial)
            body = [render.group_record(g, account.users, members[g.id]) for g in account.groups]
            return json_response(200, body)
        if name == "group_queue":
            group = next((g for g in account.groups if g.id == params["group"]), None)
            if group is None:
                return json_response(404, NOT_FOUND)
            # Always empty unless the group has Fleet Control on (formlabs.md §5).
            items = account.queues.get(group.id, []) if group.has_fleet_control else []
            return json_response(200, [queues.record(item) for item in items])
        raise AssertionError(f"unrouted view {name!r}")  # pragma: no cover

    def _printer_bytes(self, printer: Printer, now: int) -> bytes:
        return render.printer_json(
            printer,
            now,
            self._config.heartbeat_s,
            unknown=self._faults.unknown_statuses,
            malformed=printer.serial in self._faults.malformed_serials,
            links=self.cdn.link,
        )

    def _printers(self, account: Account, now: int) -> Response:
        oversized = oversized_body(self._faults)
        if oversized is not None:
            chunks, length = oversized
            return Response(200, stream=chunks, stream_length=length)
        parts = mix_in(
            [self._printer_bytes(p, now) for p in account.printers.values()],
            self._faults.malformed_records,
            lambda i: dumps(render.malformed_printer(i)),
        )
        extra = spliced(self._faults.extra_printers, iso_seconds(now) or "")
        return Response(200, b"[" + b",".join([*parts, *extra]) + b"]")

    def _sample_time(self, run: Run, now: int) -> int:
        """An active run reads as its printer last reported it, the same as in /printers/."""
        if not run.terminal:
            printer = self._engine.printer(VENDOR, run.printer_serial)
            if printer is not None:
                return printer.observed_at(now, self._config.heartbeat_s)
        return now

    def _run(self, run: Run, now: int) -> dict[str, Any]:
        sample = self._sample_time(run, now)
        return render.run_record(
            run, sample, full=True, unknown=self._faults.unknown_statuses, links=self.cdn.link
        )

    def _event(self, event: VendorEvent, now: int) -> dict[str, Any]:
        sample = self._sample_time(event.run, now) if event.run is not None else now
        return render.event_record(event, sample, self.cdn.link)

    def _filter_runs(self, runs: Sequence[Run], request: Request) -> list[Run]:
        printer = request.param("printer")
        status = request.param("status")
        if status is not None and status not in catalog.RUN_STATUSES:
            raise _BadFilter(
                "status", f"Select a valid choice. {status} is not one of the available choices."
            )
        after = _instant(request, "date__gt")
        before = _instant(request, "date__lt")
        day = _instant(request, "date")
        whole_day = len(request.param("date") or "") == 10
        name = (request.param("name") or "").lower()
        material = request.param("material")
        machine_types = set(request.query.get("machine_type_id", []))
        out: list[Run] = []
        for run in reversed(runs):
            if printer is not None and run.printer_serial != printer:
                continue
            if status is not None and run.status != status:
                continue
            if after is not None and not run.created_at > after:
                continue
            if before is not None and not run.created_at < before:
                continue
            if day is not None and not (
                0 <= run.created_at - day < 86400 if whole_day else run.created_at == day
            ):
                continue
            if name and name not in run.name.lower():
                continue
            if material is not None and run.material != material:
                continue
            if machine_types and run.machine_type_id not in machine_types:
                continue
            out.append(run)
        return out

    def _events(self, request: Request, account: Account, now: int) -> Response:
        after = _instant(request, "date__gt")
        before = _instant(request, "date__lt")
        printer = request.param("printer")
        kind = request.param("type")
        run_id = request.param("print_run")
        tank = request.param("tank")
        cartridge = request.param("cartridge")
        start = bisect_right(account.event_times, math.floor(after)) if after is not None else 0
        selected: list[VendorEvent] = []
        for event in reversed(account.events[start:]):
            if before is not None and not event.created_at < before:
                continue
            if printer is not None and event.printer != printer:
                continue
            if kind is not None and event.type != kind:
                continue
            if run_id is not None and (event.run is None or event.run.guid != run_id):
                continue
            if tank is not None and event.tank != tank:
                continue
            if cartridge is not None and event.cartridge != cartridge:
                continue
            selected.append(event)
        broken = self._faults.malformed_records
        rows = mix_in(selected, broken, lambda i: render.malformed_event(i, now))
        return self._paginate(
            request,
            rows,
            lambda row: self._event(row, now) if isinstance(row, VendorEvent) else row,
        )

    # --- pagination -----------------------------------------------------------------------------

    def _paginate(
        self, request: Request, rows: Sequence[T], render_row: Callable[[T], Any]
    ) -> Response:
        per_page = _positive_int(request.param("per_page")) or self._config.per_page_default
        per_page = min(per_page, self._config.per_page_max)
        pages = max(1, math.ceil(len(rows) / per_page))
        raw_page = request.param("page") or "1"
        page = pages if raw_page == "last" else _positive_int(raw_page)
        if page is None or page > pages:
            return json_response(404, {"detail": "Invalid page."})
        chunk = rows[(page - 1) * per_page : page * per_page]
        body = {
            "count": len(rows),
            "next": self._page_url(request, page + 1) if page < pages else None,
            "previous": self._page_url(request, page - 1) if page > 1 else None,
            "results": [render_row(row) for row in chunk],
        }
        return Response(200, dumps(body))

    def _page_url(self, request: Request, page: int) -> str:
        # DRF's replace_query_param / remove_query_param: keys sorted, page 1 has no page key.
        query = {k: v for k, v in request.query.items() if k != "page"}
        if page > 1:
            query["page"] = [str(page)]
        encoded = urlencode(sorted(query.items()), doseq=True)
        return f"{self.base_url}{request.path}" + (f"?{encoded}" if encoded else "")


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    value = int(text)
    return value if value > 0 else None


def _instant(request: Request, param: str) -> float | None:
    text = request.param(param)
    if text is None:
        return None
    value = parse_instant(text)
    if value is None:
        raise _BadFilter(param, "Enter a valid date/time.")
    return value
