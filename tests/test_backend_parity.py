"""
Session mode and shared mode are two thin links over one backend connection
(L{ldaproute.backends.connection}): the same client traffic, on in-memory
backends, gives the same operation metrics (backend label included), the
same in-flight counts while operations are outstanding, and the same
access-log fields, in both modes.  Both links, and the fakes standing in for
their owner, provide the declared interfaces.
"""

from __future__ import annotations

from typing import Any

import os
import tempfile

import pytest
from ldaptor.protocols import pureldap
from zope.interface.verify import verifyClass, verifyObject

from ldaproute.backends.connection import BackendConnection
from ldaproute.backends.interfaces import IBackendLink, IConnectionOwner, ILinkOwner
from ldaproute.backends.sessionlink import SessionLink
from ldaproute.backends.shared import SharedLink
from ldaproute.backends.sharedpool import SharedPool
from ldaproute.listeners.frontend import FrontendFactory
from ldaproute.ops.accesslog import parseTextLine
from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, FakeBackends, FakeConnection, proxy

CONFIG = """
[ldaproute]
listen = tcp:10389
mode = {mode}
require_tls_for_simple_bind = off
access_log = {accessLog}
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
shared_connections = 1
bind_connections = 1
[route:all]
pool = main
"""

USER = "uid=u,dc=example,dc=com"


def answer(backends: FakeBackends, entries: int = 2) -> None:
    """Accept every new connection and answer every request sent so far, as slapd would."""
    for connection in backends.connections:
        if connection.protocol is None:
            connection.accept()
    for connection in backends.connections:
        for message in pdus.decode(connection.sent()):
            if isinstance(message.value, pureldap.LDAPBindRequest):
                connection.respond(pdus.bindResponse(message.id, 0))
            elif isinstance(message.value, pureldap.LDAPSearchRequest):
                base = message.value.baseObject.decode()
                found = b"".join(pdus.searchEntry(f"cn={i},{base}", message.id) for i in range(entries))
                connection.respond(found + pdus.searchDone(message.id))


def inFlightGauge(factory: FrontendFactory) -> dict[str, float]:
    """C{ldaproute_backend_operations_in_flight} as a scrape shows it."""
    metrics = factory.runtime.observer.metrics
    metrics.watchState(lambda: factory.runtime)
    return {
        sample.labels["backend"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "ldaproute_backend_operations_in_flight"
        for sample in family.samples
    }


def operationsCounted(factory: FrontendFactory) -> dict[tuple[str, ...], float]:
    return {
        (sample.labels["op"], sample.labels["route"], sample.labels["backend"], sample.labels["code"]): sample.value
        for family in factory.runtime.observer.metrics.registry.collect()
        if family.name == "ldaproute_operations"
        for sample in family.samples
        if sample.name == "ldaproute_operations_total"
    }


def traffic(mode: str) -> dict[str, Any]:
    """
    One client: bind, a search answered, a search in flight then answered,
    a search lost with its backend connection, sent again on a new one and
    answered there, a delete lost with its backend connection (52).
    """
    directory = tempfile.mkdtemp(prefix="ldaproute-parity-")
    accessLog = os.path.join(directory, "access.log")
    factory, backends, clock = proxy(CONFIG.format(mode=mode, accessLog=accessLog))
    state = factory.runtime.backends.states["a"]
    seen: dict[str, Any] = {}
    try:
        client = Client(factory)
        client.send(pdus.bind(USER, "secret", 1))
        answer(backends)
        client.send(pdus.search("ou=a,dc=example,dc=com", 2))
        answer(backends)
        client.send(pdus.search("ou=b,dc=example,dc=com", 3))
        for connection in backends.connections:
            if connection.protocol is None:
                connection.accept()
        seen["inFlightOutstanding"] = (state.inFlight, inFlightGauge(factory))
        answer(backends, entries=1)
        seen["inFlightAnswered"] = (state.inFlight, inFlightGauge(factory))
        client.send(pdus.search("ou=c,dc=example,dc=com", 4))
        carrying = [c for c in backends.connections if c.transport is not None and c.transport.value()]
        assert len(carrying) == 1
        carrying[0].drop()
        clock.advance(0)  # (shared mode sends again on the next reactor turn)
        seen["inFlightLost"] = (state.inFlight, inFlightGauge(factory))
        answer(backends, entries=3)  # the search went out again: answered on the new connection
        answer(backends, entries=3)  # (in session mode, after the replayed bind's answer)
        client.send(pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 5))
        carrying = [c for c in backends.connections if c.transport is not None and c.transport.value()]
        assert len(carrying) == 1
        carrying[0].drop()
        seen["faults"] = vars(factory.runtime.backends.pools["main"].faults)
        seen["answers"] = [
            (m.id, type(m.value).__name__, getattr(m.value, "resultCode", None)) for m in pdus.decode(client.received())
        ]
    finally:
        factory.runtime.observer.flush()
        with open(accessLog) as f:
            lines = [parseTextLine(line) for line in f]
        os.unlink(accessLog)
        os.rmdir(directory)
    seen["operations"] = operationsCounted(factory)
    # every field but when and how long: the same in both modes
    seen["accessLog"] = [{k: v for k, v in line.items() if k not in ("time", "ms")} for line in lines]
    return seen


@pytest.fixture(scope="module")
def bothModes() -> dict[str, dict[str, Any]]:
    return {mode: traffic(mode) for mode in ("session", "shared")}


def test_sameOperationMetrics(bothModes: dict[str, dict[str, Any]]) -> None:
    assert bothModes["session"]["operations"] == bothModes["shared"]["operations"] == {
        ("bind", "all", "a", "0"): 1,
        ("search", "all", "a", "0"): 3,
        ("delete", "all", "a", str(ber.UNAVAILABLE)): 1,
    }


def test_sameReplays(bothModes: dict[str, dict[str, Any]]) -> None:
    assert bothModes["session"]["faults"] == bothModes["shared"]["faults"]
    assert bothModes["session"]["faults"]["replayed"] == {ber.SEARCH_REQUEST: 1}


def test_sameInFlightCounts(bothModes: dict[str, dict[str, Any]]) -> None:
    for key, expected in [("inFlightOutstanding", 1), ("inFlightAnswered", 0), ("inFlightLost", 0)]:
        assert bothModes["session"][key] == bothModes["shared"][key] == (expected, {"a": expected}), key


def test_sameAccessLog(bothModes: dict[str, dict[str, Any]]) -> None:
    session, shared = bothModes["session"]["accessLog"], bothModes["shared"]["accessLog"]
    assert session == shared
    assert [(line["type"], line["backend"], line["result"], line.get("entries", "0")) for line in session] == [
        ("bind", "a", "0", "0"),
        ("search", "a", "0", "2"),
        ("search", "a", "0", "1"),
        ("search", "a", "0", "3"),
        ("delete", "a", str(ber.UNAVAILABLE), "0"),
    ]


def test_sameAnswers(bothModes: dict[str, dict[str, Any]]) -> None:
    assert bothModes["session"]["answers"] == bothModes["shared"]["answers"]


def test_linksProvideTheInterface() -> None:
    """Both links, and what they report to, are checked against the interfaces."""
    # (SessionLink binds its per-operation methods per instance: checked on objects below)
    assert verifyClass(IBackendLink, SharedLink)
    assert verifyClass(IConnectionOwner, SessionLink) and verifyClass(IConnectionOwner, SharedPool)
    for mode, linkClass in [("session", SessionLink), ("shared", SharedLink)]:
        factory, backends, _ = proxy(CONFIG.format(mode=mode, accessLog="off"))
        client = Client(factory)
        client.send(pdus.search(messageID=1))
        (link,) = client.protocol._links.byPool.values()
        assert isinstance(link, linkClass)
        assert verifyObject(IBackendLink, link)
        assert verifyObject(ILinkOwner, client.protocol)
        connection = backends.connections[0]
        assert isinstance(connection, FakeConnection)
        connection.accept()
        assert isinstance(connection.protocol.connection, BackendConnection)
