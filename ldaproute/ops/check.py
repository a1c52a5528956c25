# -*- test-case-name: tests.test_check -*-
"""
C{ldaproute check -c routes.ini} (and C{twistd ldaproute --check -c ...}):
load and validate a configuration exactly as start-up does, open no port,
print what it says and what an experienced administrator would warn about.

The summary lists listeners (endpoints, TLS, policy), routes in match
order with their conditions, pools with their strategy and backends, and
the process-wide settings.  L{warnings} are judgements, not errors: the
file is valid (exit 0) with or without them.  C{[expect:NAME]} sections
(an operation, as C{explain} takes it, and the route, pool, first backend
or proxy answer it must get) are configuration tests that travel with the
file: each is put through L{explain.explain}.  A L{ConfigError} (exit 1,
its one line on stderr) or an expectation that does not hold (exit 1) are
the failures.
"""

from __future__ import annotations

import ipaddress
from typing import IO

from ldaproute.core import secrets
from ldaproute.config import Config, ConfigError, Expectation, Listener, Route
from ldaproute.ops import explain
from ldaproute.wire import ber


def _isLoopbackHost(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpointIsLocal(description: str) -> bool:
    """
    Whether a listener endpoint only accepts local clients: a UNIX socket,
    or TCP bound to a loopback interface (C{tcp:389} binds every address).
    """
    parts = description.split(":")
    if parts and parts[0] == "haproxy":
        parts = parts[1:]
    if not parts:
        return False
    if parts[0] == "unix":
        return True
    for part in parts[1:]:
        if part.startswith("interface="):
            return _isLoopbackHost(part.partition("=")[2].replace("\\:", ":"))
    return False


def _listenerText(listener: Listener) -> str:
    tls = {"terminate": "StartTLS terminated here", "passthrough": "StartTLS passed to the backend", "off": "no StartTLS"}
    ldaps = [e for e in listener.endpoints if e.startswith(("ssl:", "haproxy:ssl:"))]
    policy = [
        "passwords need TLS" if listener.requireTLSForPasswords else "CLEARTEXT PASSWORDS ALLOWED",
        "anonymous allowed" if listener.allowAnonymous else "no anonymous access",
    ]
    if listener.clientNetworks:
        policy.append("clients from " + ", ".join(str(n) for n in listener.clientNetworks))
    if listener.bindThrottleFailures is not None:
        policy.append(f"bind throttle {listener.bindThrottleFailures} failures/{listener.bindThrottleWindow:g}s")
    return (
        f"  {listener.name}: {', '.join(listener.endpoints)}; {tls[listener.starttls]}"
        f"{'; LDAPS on ' + ', '.join(ldaps) if ldaps else ''}; " + ", ".join(policy)
    )


def routeConditions(route: Route) -> str:
    """A route's conditions as a phrase ("every operation" when none)."""
    parts = []
    if route.listener is not None:
        parts.append(f"listener {route.listener}")
    if route.operations is not None:
        names = sorted({ber.OPERATION_NAMES[tag] for tag in route.operations.tags})
        text = ", ".join(names)
        if route.operations.extendedOIDs:
            text += " (extended: " + ", ".join(sorted(o.decode() for o in route.operations.extendedOIDs)) + ")"
        parts.append(text)
    if route.bindAnonymous:
        parts.append("anonymous sessions")
    elif route.bindDN is not None:
        parts.append(f"bound within {route.bindDN.text}")
    if route.clientNetworks:
        parts.append("clients in " + ", ".join(str(n) for n in route.clientNetworks))
    if route.suffix is not None:
        parts.append(f"DN within {route.suffix.text}")
    return "; ".join(parts) if parts else "every operation"


def _routeText(number: int, route: Route) -> str:
    if route.reject is not None:
        target = f"answer {route.reject.resultCode} ({route.reject.message})"
    else:
        target = f"pool {route.pool}"
    rewrites = []
    if route.rewriteSuffix is not None:
        rewrites.append(f"suffix {route.rewriteSuffix.client.text} => {route.rewriteSuffix.backend.text}")
    if route.mapAttributes:
        rewrites.append("attributes " + ", ".join(f"{a} => {b}" for a, b in route.mapAttributes))
    if route.hideAttributes:
        rewrites.append("hides " + ", ".join(route.hideAttributes))
    extra = f"; rewrites {'; '.join(rewrites)}" if rewrites else ""
    return f"  {number}. {route.name}: {routeConditions(route)} -> {target}{extra}"


def summary(config: Config) -> list[str]:
    """What the configuration says, in the order an operator reads it."""
    lines = [f"{config.path}: valid", "listeners:"]
    lines += [_listenerText(listener) for listener in config.listeners]
    if config.cldapEndpoints:
        lines.append(f"  cldap: {', '.join(config.cldapEndpoints)} (UDP)")
    lines.append("routes, in match order (the first that matches wins):")
    lines += [_routeText(number, route) for number, route in enumerate(config.routes, 1)]
    lines.append("pools:")
    for name, pool in config.pools.items():
        if pool.srv is not None:
            members = f"backends from DNS SRV {pool.srv}"
        else:
            members = ", ".join(
                f"{b.name} ({b.url}{'' if b.tls == 'none' or b.url.scheme == 'ldaps' else ', ' + b.tls})"
                for b in pool.backends
            )
        health = f"health checks every {pool.healthInterval:g}s" if pool.healthCheck else "NO health checks"
        lines.append(f"  {name}: {pool.strategy}; {members}; {health}")
    lines.append(
        "process: "
        + "; ".join(
            [
                f"mode {config.mode}",
                f"access log {config.accessLog or 'off'} ({config.logFormat})",
                f"metrics and status page {config.metrics or 'off'}",
                f"workers {config.workers}",
                f"max PDU {config.maxPDUBytes} bytes",
                f"max filter depth {config.maxFilterDepth}",
            ]
        )
    )
    return lines


def _looser(earlier: Route, later: Route) -> bool:
    """Whether C{earlier} matches every operation C{later} matches."""
    if earlier.listener is not None and earlier.listener != later.listener:
        return False
    if earlier.operations is not None:
        if later.operations is None or not later.operations.tags <= earlier.operations.tags:
            return False
        if earlier.operations.extendedOIDs and (
            ber.EXTENDED_REQUEST in later.operations.tags
            and not (later.operations.extendedOIDs and later.operations.extendedOIDs <= earlier.operations.extendedOIDs)
        ):
            return False
    if earlier.bindAnonymous and not later.bindAnonymous:
        return False
    if earlier.bindDN is not None and (later.bindDN is None or not later.bindDN.isWithin(earlier.bindDN)):
        return False
    if earlier.clientNetworks:
        if not later.clientNetworks:
            return False
        if not all(any(n.version == m.version and n.subnet_of(m) for m in earlier.clientNetworks) for n in later.clientNetworks):
            return False
    if earlier.suffix is not None and (later.suffix is None or not later.suffix.isWithin(earlier.suffix)):
        return False
    return True


def _takesBinds(route: Route) -> bool:
    return route.pool is not None and (route.operations is None or ber.BIND_REQUEST in route.operations.tags)


def warnings(config: Config) -> list[str]:
    """What an experienced administrator would point out in a valid file."""
    out = []
    for listener in config.listeners:
        if not listener.requireTLSForPasswords:
            exposed = [e for e in listener.endpoints if not endpointIsLocal(e) and not e.startswith(("ssl:", "haproxy:ssl:"))]
            if exposed:
                out.append(
                    f"listener {listener.name}: cleartext passwords (simple binds...) are allowed on {', '.join(exposed)}, "
                    "which is not loopback: passwords can cross the network in the clear "
                    "(set require_tls_for_passwords = on)"
                )
        if listener.starttls == "passthrough":
            rewriting = [r.name for r in config.routes if r.rewrites and r.listener in (None, listener.name)]
            if rewriting:
                out.append(
                    f"listener {listener.name}: starttls = passthrough with rewriting route(s) {', '.join(rewriting)}: "
                    "after the pass the proxy relays encrypted bytes and cannot rewrite them"
                )
    routes = config.routes
    for i, later in enumerate(routes):
        for earlier in routes[:i]:
            if _looser(earlier, later):
                note = ""
                if later.suffix is not None and earlier.suffix is not None and later.suffix != earlier.suffix:
                    note = " (only a search above its suffix reaches it, as part of a fan-out); put the narrower suffix first"
                what = "catches every operation" if routeConditions(earlier) == "every operation" else "matches everything it matches"
                out.append(f"route {later.name} can never be chosen: the earlier route {earlier.name} {what}{note}")
                break
    for name, pool in config.pools.items():
        if not pool.healthCheck:
            out.append(f"pool {name}: no health checks (health_check = off): a dead backend is only noticed by failing connections")
    bindPools = {route.pool for route in routes if _takesBinds(route)}
    for name, pool in config.pools.items():
        if name not in bindPools:
            continue
        for backend in pool.backends:
            if backend.tls == "none" and backend.url.scheme == "ldap" and not _isLoopbackHost(backend.url.host):
                out.append(
                    f"backend {backend.name}: tls = none to {backend.url.host}, not loopback, and pool {name} serves "
                    "binds: client passwords cross the network to the backend in the clear (use tls = starttls or ldaps)"
                )
    # passwords and cleartext legs (core/secrets): the backend sentences; the
    # listener one is said above, for exposed listeners only
    out += [line for line in secrets.cleartextBackendWarnings(config) if line.startswith("backend ")]
    if config.metrics is None:
        out.append("no metrics endpoint ([ldaproute] metrics): no /metrics, /readyz or status page")
    return out


def run(path: str, stdout: IO[str], stderr: IO[str]) -> int:
    """C{ldaproute check}: 0 for a valid file (warnings included), 1 with the error line otherwise."""
    try:
        config = Config.fromFile(path)
    except ConfigError as e:
        stderr.write(f"{e}\n")
        return 1
    return report(config, stdout)


def verify(config: Config, expectation: Expectation) -> str | None:
    """L{None} when C{expectation} holds; else what went differently."""
    try:
        operation = explain.parseOperation(expectation.operation)
        found = explain.explain(
            config, operation, expectation.bindDN, expectation.client, expectation.listener, expectation.tls
        )
    except explain.ExplainError as e:
        return str(e)
    problems = []
    if expectation.route is not None and found.route != expectation.route:
        problems.append(f"route {found.route or '(none)'}, not {expectation.route}")
    if expectation.pool is not None and found.pool != expectation.pool:
        problems.append(f"pool {found.pool or '(none)'}, not {expectation.pool}")
    first = found.backends[0] if found.backends else None
    if expectation.backend is not None and first != expectation.backend:
        problems.append(f"backend {first or '(none)'} first, not {expectation.backend}")
    if expectation.result is not None and found.answer != expectation.result:
        got = "forwarded to a backend" if found.answer is None else f"answered {found.answer}"
        problems.append(f"{got}, not answered {expectation.result} by the proxy")
    return "; ".join(problems) or None


def report(config: Config, stdout: IO[str]) -> int:
    """
    Print the summary, the warnings and the C{[expect:NAME]} results of a
    loaded configuration; 0, or 1 when an expectation does not hold.
    """
    for line in summary(config):
        stdout.write(line + "\n")
    found = warnings(config)
    stdout.write(f"warnings: {len(found) or 'none'}\n")
    for line in found:
        stdout.write(f"  - {line}\n")
    if not config.expectations:
        return 0
    failures = 0
    lines = []
    for expectation in config.expectations:
        problem = verify(config, expectation)
        what = " ".join(expectation.operation)
        if problem is None:
            lines.append(f"  - expect:{expectation.name}: ok ({what})")
        else:
            failures += 1
            lines.append(f"  - expect:{expectation.name}: FAILED ({what}): {problem}")
    held = len(config.expectations) - failures
    stdout.write(f"expectations: {held} of {len(config.expectations)} hold\n")
    for line in lines:
        stdout.write(line + "\n")
    return 1 if failures else 0
