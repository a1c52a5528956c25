# -*- test-case-name: tests.test_status -*-
"""
The status page: what a person looks at during an incident, at C{/} and
C{/status.json} on the metrics endpoint.

L{StatusBoard} keeps the little history the metrics do not: operations
and errors per route over the last minute (one counter pair per route and
second, 61 seconds kept), the last L{RECENT_ERRORS} errors, and backend
state changes over the last hour (at most L{MAX_CHANGES}).  The observer
feeds it one call per operation: a dictionary update, nothing formatted.

L{statusSnapshot} gathers everything into one JSON-able dictionary, which
C{/status.json} serves as it is and L{renderHTML} turns into a page that
needs no JavaScript and reloads itself every L{REFRESH_SECONDS}.
"""

from __future__ import annotations

import html
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from ldaproute import __version__

#: The page reloads itself this often (seconds).
REFRESH_SECONDS = 2
#: Errors kept for the page.
RECENT_ERRORS = 50
#: Backend state changes kept, and for how long (seconds).
MAX_CHANGES = 500
CHANGE_WINDOW = 3600.0
#: The rates' window (seconds).
RATE_WINDOW = 60


class StatusBoard:
    """Recent history for the status page, bounded in memory."""

    def __init__(self) -> None:
        self._second = 0
        self._current: dict[str, list[int]] = {}
        self._seconds: deque[tuple[int, dict[str, list[int]]]] = deque(maxlen=RATE_WINDOW + 1)
        self.errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)
        self.changes: deque[dict[str, Any]] = deque(maxlen=MAX_CHANGES)

    # --- fed per operation ------------------------------------------------

    def operationCompleted(self, route: str, resultCode: int, now: float) -> None:
        """Count one completed operation (and whether it failed) for C{route}."""
        second = int(now)
        if second != self._second:
            if self._current:
                self._seconds.append((self._second, self._current))
            self._current = {}
            self._second = second
        counts = self._current.get(route)
        if counts is None:
            counts = self._current[route] = [0, 0]
        counts[0] += 1
        if resultCode not in (0, 5, 6, 10, 14):
            counts[1] += 1

    def errorSeen(self, completion: Any) -> None:
        """Keep one failed operation (an L{ldaproute.ops.accesslog.Completion})."""
        summary = completion.summary
        self.errors.append(
            {
                "time": completion.now,
                "client": completion.client,
                "listener": completion.listener,
                "conn": completion.conn,
                "op": summary.opNumber,
                "operation": summary.kind,
                "target": summary.get("dn") or summary.get("base") or summary.get("name") or "",
                "filter": summary.get("filter") or "",
                "route": completion.route,
                "backend": completion.backend,
                "resultCode": completion.resultCode,
                "message": completion.message[:200],
            }
        )

    def stateChanged(self, backend: str, health: str, reason: str, when: float) -> None:
        self.changes.append({"time": when, "backend": backend, "state": health, "reason": reason})

    # --- read by the page ---------------------------------------------------

    def rates(self, now: float) -> dict[str, dict[str, float]]:
        """Per route: operations and errors per second over the last minute."""
        since = int(now) - RATE_WINDOW
        totals: dict[str, list[int]] = {}
        buckets = list(self._seconds)
        if self._current:
            buckets.append((self._second, self._current))
        for second, counts in buckets:
            if second <= since:
                continue
            for route, (ops, errors) in counts.items():
                total = totals.setdefault(route, [0, 0])
                total[0] += ops
                total[1] += errors
        return {
            route or "(none)": {"ops": round(ops / RATE_WINDOW, 2), "errors": round(errors / RATE_WINDOW, 2)}
            for route, (ops, errors) in sorted(totals.items())
        }

    def recentChanges(self, now: float) -> list[dict[str, Any]]:
        """Backend state changes within the last hour, newest first."""
        return [change for change in reversed(self.changes) if change["time"] >= now - CHANGE_WINDOW]


@implementer(ILogObserver)
class _StateChangeWatch:
    """Turns the pool's C{Backend X is now up/down} events into board entries."""

    def __init__(self, board: StatusBoard) -> None:
        self._board = board

    def __call__(self, event: dict[str, Any]) -> None:
        health = event.get("health")
        if health in ("up", "down") and "backend" in event and "source" in event:
            self._board.stateChanged(
                str(event["backend"]), health, str(event.get("reason", "")), float(event.get("log_time", time.time()))
            )


class StatusService(Service):
    """
    Watches the log for backend state changes while the proxy runs (the
    pool announces them as events; the board listens instead of asking
    the pool to know about it).
    """

    def __init__(self, board: StatusBoard, publisher: LogPublisher | None = None) -> None:
        self._watch = _StateChangeWatch(board)
        self._publisher = publisher if publisher is not None else globalLogPublisher

    def startService(self) -> None:
        super().startService()
        self._publisher.addObserver(self._watch)

    def stopService(self) -> None:
        super().stopService()
        self._publisher.removeObserver(self._watch)


# --- the snapshot ---------------------------------------------------------------


def statusSnapshot(runtime: Any, readiness: Any, now: float) -> dict[str, Any]:
    """
    Everything the page shows, as plain data (what C{/status.json} serves).

    @param runtime: the L{ldaproute.runtime.Runtime}.
    @param readiness: the L{ldaproute.ops.healthsite.Readiness} of the process.
    """
    config = runtime.config
    observer = runtime.observer
    metrics = observer.metrics
    board: StatusBoard = observer.status
    ready, readyBody = readiness.check()
    draining = bool(readiness.draining)
    openByListener: dict[str, int] = {}
    inFlightByBackend: dict[str, int] = {}
    inFlight = 0
    for protocol in list(observer.connections):
        listener = protocol.session.listener
        openByListener[listener] = openByListener.get(listener, 0) + 1
        for operation in protocol.session.outstanding.values():
            inFlight += 1
            backend = getattr(operation.link, "backend", None)
            if backend is not None:
                inFlightByBackend[backend.name] = inFlightByBackend.get(backend.name, 0) + 1
    listeners = [
        {
            "name": listener.name,
            "endpoints": list(listener.endpoints),
            "starttls": listener.starttls,
            "open": openByListener.get(listener.name, 0),
        }
        for listener in config.listeners
    ]
    checks = metrics.lastHealthChecks
    pools = []
    for name, pool in sorted(runtime.backends.pools.items()):
        members = []
        for state in pool.backends:
            check = checks.get(state.name)
            members.append(
                {
                    "name": state.name,
                    "url": str(state.backend.url),
                    "state": "draining" if draining else ("up" if state.up else "down"),
                    "reason": state.lastReason,
                    "connections": state.connections,
                    "inFlight": inFlightByBackend.get(state.name, 0),
                    "lastCheck": None
                    if check is None
                    else {"ok": check[0], "latencyMs": round(check[1] * 1000.0, 1), "time": check[2]},
                }
            )
        pools.append(
            {
                "name": name,
                "strategy": pool.pool.strategy,
                "healthCheck": pool.pool.healthCheck,
                "up": sum(1 for state in pool.backends if state.up),
                "backends": members,
            }
        )
    reload = metrics.lastReload
    return {
        "version": __version__,
        "time": now,
        "ready": ready,
        "readiness": readyBody,
        "draining": draining,
        "config": {
            "path": config.path,
            "mode": config.mode,
            "loaded": metrics.configLoaded._value.get() or None,
            "lastReload": None if reload is None else {"time": reload[0], "outcome": reload[1]},
            "accessLog": config.accessLog or "off",
        },
        "listeners": listeners,
        "inFlight": inFlight,
        "pools": pools,
        "routes": [
            {"name": route.name, "pool": route.pool, "reject": route.reject.resultCode if route.reject else None}
            for route in config.routes
        ],
        "rates": board.rates(now),
        "stateChanges": board.recentChanges(now),
        "errors": list(reversed(board.errors)),
    }


# --- HTML -------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;margin-bottom:.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#eee}.up{background:#d8f5d8}.down{background:#f8d0d0}.draining{background:#fbe9b7}
.meta{color:#555;font-size:.9em}.none{color:#777;font-style:italic}code{font-size:.95em}
"""


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _table(headers: list[str], rows: list[list[Any]], rowClasses: list[str] | None = None, empty: str = "none") -> str:
    if not rows:
        return f'<p class="none">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{rowClasses[i]}"' if rowClasses else ""
        cells = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def renderHTML(snapshot: dict[str, Any]) -> bytes:
    """The status page for one snapshot: plain HTML, every value escaped."""
    s = snapshot
    config = s["config"]
    reload = config["lastReload"]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        "<title>ldaproute status</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>ldaproute {html.escape(s['version'])}: {'ready' if s['ready'] else 'NOT READY'}</h1>",
        '<p class="meta">',
        f"Configuration <code>{html.escape(config['path'])}</code> (mode {html.escape(config['mode'])}), "
        f"loaded {_when(config['loaded'])}; last reload: "
        + (f"{html.escape(reload['outcome'])} at {_when(reload['time'])}" if reload else "none")
        + f". Access log: {html.escape(str(config['accessLog']))}. In flight: {s['inFlight']} operation(s)."
        + (" <strong>Draining for shutdown.</strong>" if s["draining"] else "")
        + f" Page generated {_when(s['time'])}, refreshes every {REFRESH_SECONDS}s.</p>",
    ]
    reasons = s["readiness"].get("reasons")
    if reasons:
        parts.append(f"<p><strong>Not ready:</strong> {html.escape('; '.join(reasons))}</p>")
    parts.append("<h2>Listeners</h2>")
    parts.append(
        _table(
            ["listener", "endpoints", "StartTLS", "open connections"],
            [[l["name"], ", ".join(l["endpoints"]), l["starttls"], l["open"]] for l in s["listeners"]],
        )
    )
    parts.append("<h2>Pools and backends</h2>")
    for pool in s["pools"]:
        parts.append(
            f"<p><strong>{html.escape(pool['name'])}</strong>: {html.escape(pool['strategy'])}, "
            f"{pool['up']} of {len(pool['backends'])} up"
            + ("" if pool["healthCheck"] else ", no health checks")
            + "</p>"
        )
        rows, classes = [], []
        for b in pool["backends"]:
            check = b["lastCheck"]
            checkText = "-" if check is None else f"{'ok' if check['ok'] else 'failed'}, {check['latencyMs']} ms, {_when(check['time'])}"
            rows.append([b["name"], b["url"], b["state"], b["reason"], checkText, b["connections"], b["inFlight"]])
            classes.append(b["state"])
        parts.append(
            _table(["backend", "url", "state", "reason", "last health check", "connections", "in flight"], rows, classes)
        )
    parts.append("<h2>Operations per route (last minute)</h2>")
    parts.append(
        _table(
            ["route", "operations/s", "errors/s"],
            [[route, rate["ops"], rate["errors"]] for route, rate in s["rates"].items()],
            empty="no operations in the last minute",
        )
    )
    parts.append("<h2>Backend state changes (last hour)</h2>")
    changes = s["stateChanges"]
    parts.append(
        _table(
            ["time", "backend", "state", "reason"],
            [[_when(c["time"]), c["backend"], c["state"], c["reason"]] for c in changes],
            [c["state"] for c in changes],
            empty="no state change in the last hour",
        )
    )
    parts.append("<h2>Recent errors</h2>")
    parts.append(
        _table(
            ["time", "client", "conn/op", "operation", "target", "filter", "route", "backend", "code", "message"],
            [
                [
                    _when(e["time"]), e["client"], f"{e['conn']}/{e['op']}", e["operation"], e["target"], e["filter"],
                    e["route"] or "-", e["backend"] or "-", e["resultCode"], e["message"],
                ]  # fmt: skip
                for e in s["errors"]
            ],
            empty="no errors",
        )
    )
    parts.append(
        '<p class="meta">Also: <a href="/status.json">/status.json</a>, <a href="/metrics">/metrics</a>, '
        '<a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a>.</p></body></html>'
    )
    return "".join(parts).encode("utf-8")


class StatusPage(Resource):
    """C{/} (HTML) or C{/status.json}: one snapshot per request."""

    isLeaf = True

    def __init__(self, snapshot: Callable[[], dict[str, Any]], asJSON: bool = False) -> None:
        super().__init__()
        self._snapshot = snapshot
        self._asJSON = asJSON

    def render_GET(self, request: Request) -> bytes:
        snapshot = self._snapshot()
        request.setHeader("Cache-Control", "no-store")
        if self._asJSON:
            request.setHeader("Content-Type", "application/json")
            return json.dumps(snapshot, sort_keys=True).encode("utf-8") + b"\n"
        request.setHeader("Content-Type", "text/html; charset=utf-8")
        return renderHTML(snapshot)
