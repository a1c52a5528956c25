"""
Session mode and shared mode against the same real slapd, through a real
ldaproute process each: the same client traffic (a bind, searches that
find one entry and none, a search held while slapd is stopped) gives the
same operation metrics with the backend's name as label, the same in-flight
gauge while the held search is outstanding, and the same access-log fields.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ldaproute.wire import ber
from ldaproute.wire.results import readResponse
from tests.integration.rawclient import RawClient, searchRequest
from tests.integration.test_operations import Proxy, proxyFactory, quietPort, waitFor  # noqa: F401 (fixture)
from tests.integration.test_shared import PEOPLE, backend  # noqa: F401 (fixture)
from tests.slapd import Slapd

OPERATIONS = "ldaproute_operations_total"
IN_FLIGHT = ("ldaproute_backend_operations_in_flight", frozenset({"backend": "slapd"}.items()))

#: access-log fields that differ between any two runs
_VARYING = {"time", "ms", "client", "conn"}


def routes(server: Slapd, mode: str, listen: int, metrics: int) -> str:
    return (
        f"[ldaproute]\nlisten = tcp:{listen}:interface=127.0.0.1\nmetrics = tcp:{metrics}:interface=127.0.0.1\n"
        f"require_tls_for_simple_bind = off\nmode = {mode}\n"
        f"[backend:slapd]\nurl = {server.url}\n"
        "[pool:main]\nbackends = slapd\nhealth_check = no\nshared_connections = 1\nbind_connections = 1\n"
        f"service_bind_dn = {server.saslUserDN}\nservice_bind_password = {server.saslPassword}\n"
        "[route:all]\npool = main\n"
    )


def traffic(server: Slapd, proxyFactory: Callable[..., Proxy], mode: str) -> dict[str, Any]:  # noqa: F811
    listen, metrics = quietPort(), quietPort()
    proxy = proxyFactory(routes(server, mode, listen, metrics), metrics)
    proxy.start(waitPorts=())
    seen: dict[str, Any] = {}
    client = RawClient("127.0.0.1", listen)
    try:
        assert client.bind(server.userDN(1), server.userPassword(1))[0] == ber.SUCCESS
        assert client.search(PEOPLE, "user1")[0] == ber.SUCCESS
        assert client.search(PEOPLE, "nobody")[0] == ber.SUCCESS
        held = socket.create_connection(("127.0.0.1", listen), 15)
        server.pause()
        try:
            held.sendall(searchRequest(1, PEOPLE, "uid", "user2"))
            seen["inFlight"] = waitFor(lambda: proxy.samples().get(IN_FLIGHT) == 1, "the held search in flight")
        finally:
            server.resume()
        held.settimeout(15)
        framer = ber.Framer(1 << 20)
        finals: list[tuple[int, int, int]] = []
        while not finals:
            data = held.recv(65536)
            assert data, "the proxy closed the held client"
            finals = [response[:3] for response in map(readResponse, framer.feed(data)) if response.resultCode != -1]
        assert finals == [(1, ber.SEARCH_RESULT_DONE, ber.SUCCESS)]
        held.close()
        seen["inFlightAfter"] = waitFor(lambda: proxy.samples().get(IN_FLIGHT) == 0 or None, "no search in flight")
    finally:
        client.close()
    samples = proxy.samples()
    seen["operations"] = {
        (dict(labels)["op"], dict(labels)["backend"], dict(labels)["code"]): value
        for (name, labels), value in samples.items()
        if name == OPERATIONS
    }
    seen["accessLog"] = waitFor(lambda: accessEvents(proxy, 4), "four access-log events")
    return seen


def accessEvents(proxy: Proxy, count: int) -> list[dict[str, Any]] | None:
    events = [{key: value for key, value in line.items() if key not in _VARYING} for line in proxy.accessLines()]
    return events if len(events) >= count else None


def test_sameTrafficSameObservations(backend: Slapd, proxyFactory: Callable[..., Proxy]) -> None:  # noqa: F811
    session = traffic(backend, proxyFactory, "session")
    shared = traffic(backend, proxyFactory, "shared")
    assert session["operations"] == shared["operations"] == {
        ("bind", "slapd", "0"): 1,
        ("search", "slapd", "0"): 3,
    }
    assert session["inFlight"] is shared["inFlight"] is True
    assert session["accessLog"] == shared["accessLog"]
    assert [(e["type"], e["backend"], e["result"], e.get("entries", 0)) for e in shared["accessLog"]] == [
        ("bind", "slapd", 0, 0),
        ("search", "slapd", 0, 1),
        ("search", "slapd", 0, 0),
        ("search", "slapd", 0, 1),
    ]
