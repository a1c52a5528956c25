# -*- test-case-name: tests.test_explain -*-
"""
C{ldaproute explain -c routes.ini OPERATION}: where one operation would go
and why, without starting the proxy.

The operation is encoded as a real request (ldaptor's codec) and put
through the same objects the proxy uses: L{Router.routeFor} chooses the
route (L{Router.whyNot} says why each earlier route did not match),
L{fanout.planSearch} plans a search that spans suffixes, the route's
L{Rewriter} rewrites it, L{PoolState.candidates} orders the backends, and
the listener's policy (cleartext binds, anonymous access, filter depth,
StartTLS) gives the answer the proxy itself would send.  The order of those
checks is the frontend's (L{ldaproute.listeners.frontend}): keep the two
together when either changes.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import IO, Any

import attrs
from ldaptor import ldapfilter
from ldaptor.protocols import pureber, pureldap

from ldaproute.backends.pool import Backends
from ldaproute.config import Config, Listener, Route
from ldaproute.core import fanout, limits
from ldaproute.core.policy import ListenerPolicy
from ldaproute.core.dn import DN, parseDN
from ldaproute.core.rewrite import Refused, Rewriter
from ldaproute.core.routing import Router, noRouteResult
from ldaproute.ops.accesslog import describeRequest
from ldaproute.wire import ber
from ldaproute.wire.pdu import searchWith

#: C{explain}'s operation words and the request tags they stand for.
OPERATIONS = ("search", "bind", "modify", "add", "delete", "modifydn", "compare", "extended")
_SCOPES = {"base": 0, "one": 1, "onelevel": 1, "sub": 2, "subtree": 2, "children": 3, "subordinates": 3}
_SCOPE_NAMES = {0: "base", 1: "one", 2: "sub", 3: "children"}


class ExplainError(ValueError):
    """The operation as written cannot be explained (a usage mistake)."""


@attrs.frozen
class Operation:
    """An operation as an operator writes it, encoded as a request."""

    words: tuple[str, ...]
    pdu: bytes
    tag: int
    target: bytes | None
    extendedOID: bytes | None = None

    @property
    def text(self) -> str:
        return " ".join(self.words)


def parseOperation(words: Sequence[str]) -> Operation:
    """
    C{search BASE [SCOPE [FILTER [ATTR...]]]}, C{bind DN}, C{modify DN},
    C{add DN}, C{delete DN}, C{modifydn DN NEWRDN}, C{compare DN ATTR},
    C{extended OID}.

    @raise ExplainError: an unknown operation or a missing argument.
    """
    if not words:
        raise ExplainError(f"give an operation: {', '.join(OPERATIONS)}")
    kind, args = words[0].lower(), list(words[1:])

    def need(count: int, usage: str) -> None:
        if len(args) < count:
            raise ExplainError(f"{kind} needs {usage}")

    if kind == "search":
        need(1, "a base DN: search BASE [SCOPE [FILTER [ATTRIBUTE...]]]")
        scopeName = args[1].lower() if len(args) > 1 else "sub"
        if scopeName not in _SCOPES:
            raise ExplainError(f"unknown scope {args[1]!r}: expected base, one, sub or children")
        filterText = args[2] if len(args) > 2 else "(objectClass=*)"
        try:
            parsedFilter = ldapfilter.parseFilter(filterText)
        except (ldapfilter.InvalidLDAPFilter, Exception) as e:
            raise ExplainError(f"bad filter {filterText!r}: {e}") from None
        request: Any = pureldap.LDAPSearchRequest(
            baseObject=args[0].encode("utf-8"),
            scope=_SCOPES[scopeName],
            filter=parsedFilter,
            attributes=[a.encode("utf-8") for a in args[3:]],
        )
        words = ["search", args[0], _SCOPE_NAMES[_SCOPES[scopeName]], filterText, *args[3:]]
    elif kind == "bind":
        need(1, "a DN: bind DN")
        request = pureldap.LDAPBindRequest(dn=args[0].encode("utf-8"), auth=b"(a password)")
    elif kind == "modify":
        need(1, "a DN: modify DN")
        request = pureldap.LDAPModifyRequest(object=args[0].encode("utf-8"), modification=[])
    elif kind == "add":
        need(1, "a DN: add DN")
        request = pureldap.LDAPAddRequest(entry=args[0].encode("utf-8"), attributes=[])
    elif kind == "delete":
        need(1, "a DN: delete DN")
        request = pureldap.LDAPDelRequest(entry=args[0].encode("utf-8"))
    elif kind == "modifydn":
        need(2, "a DN and a new RDN: modifydn DN NEWRDN")
        request = pureldap.LDAPModifyDNRequest(entry=args[0].encode("utf-8"), newrdn=args[1].encode("utf-8"), deleteoldrdn=True)
    elif kind == "compare":
        need(2, "a DN and an attribute: compare DN ATTR")
        request = pureldap.LDAPCompareRequest(
            entry=args[0].encode("utf-8"),
            ava=pureldap.LDAPAttributeValueAssertion(
                pureldap.LDAPAttributeDescription(args[1].encode("utf-8")), pureldap.LDAPAssertionValue(b"?")
            ),
        )
    elif kind == "extended":
        need(1, "an OID: extended OID")
        request = pureldap.LDAPExtendedRequest(requestName=args[0].encode("ascii"))
    else:
        raise ExplainError(f"unknown operation {words[0]!r}: expected {', '.join(OPERATIONS)}")
    pdu = pureldap.LDAPMessage(request, id=1).toWire()
    envelope = ber.Envelope.fromBytes(pdu)
    return Operation(tuple(words), pdu, envelope.opTag, envelope.targetDN(pdu), envelope.extendedName(pdu))


def _listenerNamed(config: Config, name: str | None) -> Listener:
    if name is None:
        return config.listeners[0]
    for listener in config.listeners:
        if listener.name == name:
            return listener
    raise ExplainError(f"no listener {name!r} (the file has {', '.join(l.name for l in config.listeners)})")


def _describeRequest(pdu: bytes) -> str:
    """A rewritten request as an operator reads it: the access log's fields
    (DN, filter with attribute names and no values, attributes)."""
    summary = describeRequest(pdu, ber.Envelope.fromBytes(pdu))
    fields = " ".join(f"{key} {value!r}" if isinstance(value, str) else f"{key} {value}" for key, value in summary.fields)
    if summary.kind == "search":
        attributes = _searchAttributes(pdu)
        fields += f" attributes {', '.join(attributes) if attributes else '(all)'}"
    return f"{summary.kind} {fields}"


def _searchAttributes(pdu: bytes) -> list[str]:
    message = pureber.berDecodeObject(pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    ), pdu)[0]  # fmt: skip
    return [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in message.value.attributes]


def liveHealth(url: str, timeout: float = 3.0) -> dict[str, str]:
    """Backend name -> state (up, down, draining) from a running proxy's C{/status.json}.

    @raise ExplainError: the URL cannot be read."""
    target = url.rstrip("/") + "/status.json"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 (operator-given URL)
            body = json.load(response)
    except (OSError, ValueError) as e:
        raise ExplainError(f"--live {url}: cannot read {target}: {e}") from None
    return {b["name"]: b["state"] for pool in body.get("pools", []) for b in pool.get("backends", [])}


@attrs.define
class Explanation:
    """What C{explain} found: lines to print, and the outcome in short."""

    lines: list[str] = attrs.Factory(list)
    route: str | None = None
    pool: str | None = None
    backends: list[str] = attrs.Factory(list)
    answer: int | None = None  # the proxy's own result code, when it answers

    def add(self, line: str) -> None:
        self.lines.append(line)


def explain(
    config: Config,
    operation: Operation,
    bindDN: str | None = None,
    client: str = "192.0.2.1",
    listenerName: str | None = None,
    tls: bool = False,
    live: dict[str, str] | None = None,
) -> Explanation:
    """
    Put C{operation} through the proxy's decisions for C{config}.

    @param bindDN: the session's bound identity (L{None}: anonymous).
    @param client: the client's IP address.
    @param tls: whether the client connection has TLS (ldaps or StartTLS).
    @param live: backend states from a running proxy (L{liveHealth}).
    """
    out = Explanation()
    listener = _listenerNamed(config, listenerName)
    router = Router(config.routes)
    boundDN: DN | None = None
    if bindDN:
        try:
            boundDN = parseDN(bindDN)
        except ValueError as e:
            raise ExplainError(f"--bind-dn {bindDN!r}: {e}") from None
    tag = operation.tag
    out.add(f"operation: {operation.text}")
    out.add(
        f"listener:  {listener.name} ({', '.join(listener.endpoints)}; starttls {listener.starttls}); "
        f"client {client}, {'TLS' if tls else 'no TLS'}, {'bound as ' + bindDN if bindDN else 'anonymous'}"
    )

    def answer(code: int, message: str, why: str) -> Explanation:
        out.answer = code
        out.add(f"answer:    the proxy answers {code} ({message}): {why}; nothing reaches a backend")
        return out

    # the frontend's order: policy, StartTLS, filter depth, routing
    envelope = ber.Envelope.fromBytes(operation.pdu)
    if listener.requireTLSForPasswords and not tls:
        secret = ListenerPolicy.fromListener(listener).secrets.secretIn(operation.pdu, envelope)
        if secret is not None:
            return answer(
                ber.CONFIDENTIALITY_REQUIRED,
                secret.refusal,
                "require_tls_for_passwords is on and the connection has no TLS",
            )
    if tag == ber.BIND_REQUEST:
        pass
    elif not listener.allowAnonymous and boundDN is None and operation.extendedOID != ber.STARTTLS_OID:
        return answer(ber.INSUFFICIENT_ACCESS_RIGHTS, "bind first", "allow_anonymous is off and the session is anonymous")
    if operation.extendedOID == ber.STARTTLS_OID:
        if listener.starttls == "terminate":
            return answer(ber.SUCCESS, "StartTLS", "starttls = terminate: the proxy does the TLS handshake itself")
        if listener.starttls == "off":
            return answer(ber.PROTOCOL_ERROR, "StartTLS is not offered on this listener", "starttls = off")
        out.add("starttls:  passthrough: the request goes to the session's backend, then bytes are relayed untouched")
    if tag == ber.SEARCH_REQUEST:
        depth = limits.filterDepth(operation.pdu, envelope, config.maxFilterDepth)
        if depth > config.maxFilterDepth:
            return answer(limits.ADMIN_LIMIT_EXCEEDED, "filter too deep", f"max_filter_depth = {config.maxFilterDepth}")

    target = operation.target
    peer = client
    out.add("routes, in file order:")
    chosen = router.routeFor(listener.name, tag, target, boundDN, peer, operation.extendedOID)
    for number, route in enumerate(config.routes, 1):
        reason = router.whyNot(route, listener.name, tag, target, boundDN, peer, operation.extendedOID)
        if route is chosen:
            out.add(f"  {number}. {route.name:<20} MATCH ({_conditions(route)})")
            break
        out.add(f"  {number}. {route.name:<20} no: {reason}")
    if tag == ber.SEARCH_REQUEST and router.needsTargetDN:
        plan = fanout.planSearch(router, listener.name, operation.pdu, target, boundDN, peer)
        if plan is not None and (len(plan.targets) > 1 or plan.rootDSE):
            return _explainFanOut(out, config, plan, live, operation.pdu)
    if chosen is None:
        if tag == ber.BIND_REQUEST and not bindDN and not (target or b"").strip():
            return answer(ber.SUCCESS, "anonymous bind", "no route claims an anonymous bind, so the proxy accepts it")
        code, message = noRouteResult(tag)
        return answer(code, message, "no route matches")
    out.route = chosen.name
    if chosen.reject is not None:
        return answer(chosen.reject.resultCode, chosen.reject.message, f"route {chosen.name} is a reject route")
    _explainRewrite(out, chosen, operation.pdu)
    _explainPool(out, config, chosen.pool, live)
    return out


def _conditions(route: Route) -> str:
    parts = []
    if route.listener is not None:
        parts.append(f"listener {route.listener}")
    if route.operations is not None:
        names = sorted({ber.OPERATION_NAMES[t] for t in route.operations.tags})
        parts.append("operations " + ", ".join(names))
    if route.bindAnonymous:
        parts.append("bind_dn anonymous")
    elif route.bindDN is not None:
        parts.append(f"bind_dn {route.bindDN.text}")
    if route.clientNetworks:
        parts.append("client_network " + ", ".join(str(n) for n in route.clientNetworks))
    if route.suffix is not None:
        parts.append(f"suffix {route.suffix.text}")
    return "; ".join(parts) if parts else "no condition: matches everything"


def _explainRewrite(out: Explanation, route: Route, pdu: bytes, indent: str = "") -> bool:
    if not route.rewrites:
        out.add(f"{indent}rewrite:   none (the request is relayed as the client sent it)")
        return True
    try:
        rewritten = Rewriter(route).request(pdu)
    except Refused as e:
        out.answer = e.resultCode
        out.add(f"{indent}answer:    the proxy answers {e.resultCode} ({e.message}): the route's rewrite refuses it")
        return False
    out.add(f"{indent}rewritten: {_describeRequest(rewritten)}")
    return True


def _candidates(config: Config, poolName: str, live: dict[str, str] | None) -> tuple[str, list[tuple[str, str]]]:
    backends = Backends()
    backends.configure(config.backends, config.pools)
    pool = backends.pools[poolName]
    for state in pool.backends:
        if live is not None and state.name in live:
            state.up = live[state.name] == "up"
    order = [(state.name, ("up" if state.up else "down") if live is not None else "health not known") for state in pool.candidates()]
    return pool.pool.strategy, order


def _explainPool(out: Explanation, config: Config, poolName: str | None, live: dict[str, str] | None) -> None:
    assert poolName is not None
    strategy, order = _candidates(config, poolName, live)
    out.pool = poolName
    out.backends = [name for name, _ in order]
    listed = ", ".join(f"{name} ({state})" for name, state in order) or "none (an SRV pool: backends come from DNS)"
    out.add(f"pool:      {poolName}, strategy {strategy}; backends in the order a new connection tries them: {listed}")
    if live is not None and not any(state == "up" for _, state in order):
        out.add("answer:    every backend of the pool is down now: the proxy tries them anyway, then answers 52 (unavailable)")


def _explainFanOut(
    out: Explanation, config: Config, plan: fanout.Plan, live: dict[str, str] | None, pdu: bytes
) -> Explanation:
    if plan.rootDSE:
        out.add(f"root DSE:  the proxy presents namingContexts {', '.join(plan.namingContexts) or '(none)'}")
        if not plan.targets:
            out.add("answer:    the proxy answers the root DSE itself (no route serves the empty DN)")
            out.answer = ber.SUCCESS
            return out
    else:
        out.add(f"fan-out:   the search spans {len(plan.targets)} routes; the proxy merges their entries:")
    for target in plan.targets:
        route = target.route
        out.add(
            f"  - route {route.name}: base {target.base.decode('utf-8', 'replace')!r} scope "
            f"{_SCOPE_NAMES.get(target.scope, target.scope)} -> pool {route.pool}"
        )
        if route.rewrites:
            _explainRewrite(out, route, searchWith(pdu, target.base, target.scope), indent="    ")
        assert route.pool is not None  # reject routes are never search targets
        strategy, order = _candidates(config, route.pool, live)
        out.add(f"    backends ({strategy}): {', '.join(f'{n} ({s})' for n, s in order)}")
    out.route = ",".join(t.route.name for t in plan.targets)
    return out


def run(
    config: Config,
    words: Sequence[str],
    stdout: IO[str],
    bindDN: str | None = None,
    client: str = "192.0.2.1",
    listener: str | None = None,
    tls: bool = False,
    liveURL: str | None = None,
) -> int:
    """C{ldaproute explain}: print the explanation; 0, or 2 for a usage mistake."""
    operation = parseOperation(words)
    live = liveHealth(liveURL) if liveURL else None
    result = explain(config, operation, bindDN, client, listener, tls, live)
    for line in result.lines:
        stdout.write(line + "\n")
    return 0
