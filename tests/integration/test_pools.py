"""
Pools against real slapd instances and a real ldaproute process: strategy
distributions (counted in each slapd's access log), SIGKILL of a backend
under load, health checks marking down and up, failover and fail-back, and
a backend that accepts TCP but never answers.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from tests.integration.conftest import SlapdFactory
from tests.integration.proxy import Proxy
from tests.integration.rawclient import RawClient, now
from tests.slapd import Slapd

PEOPLE = "ou=people,dc=example,dc=com"


def backendsConfig(servers: dict[str, Slapd], extra: dict[str, str] | None = None) -> str:
    text = ""
    for name, server in servers.items():
        text += f"[backend:{name}]\nurl = {server.url}\n{(extra or {}).get(name, '')}"
    return text


def poolConfig(servers: dict[str, Slapd], pool: str, extra: dict[str, str] | None = None) -> str:
    return (
        backendsConfig(servers, extra)
        + f"[pool:p]\nbackends = {', '.join(servers)}\n{pool}"
        + "[route:all]\npool = p\n"
    )


def peopleSearches(server: Slapd) -> int:
    """Client searches slapd saw (health probes search the rootDSE, not ou=people)."""
    return sum(1 for line in server.logLines() if " SRCH base=\"ou=people" in line)


def sessions(proxy: Proxy, n: int) -> None:
    """C{n} sessions of one search each, one after the other."""
    for i in range(n):
        client = RawClient("127.0.0.1", proxy.port)
        assert client.search(PEOPLE, f"user{i % 10}")[0] == 0
        client.close()


def waitFor(predicate: Any, timeout: float, what: str) -> float:
    start = now()
    while now() - start < timeout:
        if predicate():
            return now() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


# --- distribution -------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, extra, expected",
    [
        ("round-robin", {}, [20, 20, 20]),
        ("weighted", {"a": "weight = 1\n", "b": "weight = 2\n", "c": "weight = 3\n"}, [10, 20, 30]),
        ("failover", {"a": "priority = 2\n", "b": "priority = 1\n", "c": "priority = 3\n"}, [0, 60, 0]),
    ],
)
def test_distribution(
    slapdFactory: SlapdFactory, proxyFactory: Any, strategy: str, extra: dict[str, str], expected: list[int]
) -> None:
    """60 sessions of one search each, counted in each slapd's access log."""
    servers = {name: slapdFactory(entries=10, accessLog=True) for name in "abc"}
    proxy = proxyFactory(poolConfig(servers, f"strategy = {strategy}\nhealth_check = no\n", extra))
    sessions(proxy, 60)
    waitFor(lambda: [peopleSearches(s) for s in servers.values()] == expected, 5, f"{strategy} gives {expected}")


def test_leastOutstanding(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    """
    A session whose search is stuck on a paused backend keeps new sessions
    off that backend; once answered, sessions spread again.
    """
    servers = {name: slapdFactory(entries=10, accessLog=True) for name in "ab"}
    proxy = proxyFactory(poolConfig(servers, "strategy = least-outstanding\nhealth_check = no\n"))
    servers["a"].pause()
    stuck = RawClient("127.0.0.1", proxy.port)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(stuck.search(PEOPLE, "user1")[0]))
    thread.start()
    try:
        time.sleep(0.3)  # the stuck search went to a (first in turn)
        sessions(proxy, 10)
        assert peopleSearches(servers["b"]) == 10
    finally:
        servers["a"].resume()
    thread.join(10)
    assert result == [0]
    stuck.close()  # ties on in-flight operations go to the fewest connections
    time.sleep(0.3)
    sessions(proxy, 10)
    time.sleep(0.5)
    assert [peopleSearches(servers[n]) for n in "ab"] == [6, 15]


def test_maxConnectionsBusy(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    """
    When every backend is at its cap, a new session waits within its retry
    budget: served when a slot frees in time, else answered busy (51)
    (with on_backend_unavailable = answer).
    """
    servers = {"a": slapdFactory(entries=10)}
    proxy = proxyFactory(
        poolConfig(servers, "health_check = no\nretry_budget = 1500ms\n", {"a": "max_connections = 2\n"}),
        "on_backend_unavailable = answer\n",
    )
    held = [RawClient("127.0.0.1", proxy.port) for _ in range(2)]
    for client in held:
        assert client.search(PEOPLE, "user1")[0] == 0
    extra = RawClient("127.0.0.1", proxy.port)
    started = now()
    code, text = extra.search(PEOPLE, "user1")
    assert code == 51 and "max_connections" in text and "retry_budget" in text
    assert 1.4 < now() - started < 3.0
    # a slot frees while a session waits: it is served
    waiting = RawClient("127.0.0.1", proxy.port)
    timer = threading.Timer(0.5, held[0].close)
    timer.start()
    try:
        started = now()
        assert waiting.search(PEOPLE, "user1")[0] == 0
        assert 0.4 < now() - started < 1.4
    finally:
        timer.join()


# --- failure ------------------------------------------------------------------


def test_killBackendUnderLoad(slapdFactory: SlapdFactory, proxyFactory: Any, record_property: Any) -> None:
    """
    8 clients loop bind + search; one of three backends is SIGKILLed.
    Every operation gets exactly one final result (RawClient checks IDs);
    errors are unavailable (52) and stop soon after the kill; every later
    operation succeeds.
    """
    servers = {name: slapdFactory(entries=50) for name in "abc"}
    proxy = proxyFactory(
        poolConfig(servers, "health_interval = 500ms\nhealth_timeout = 500ms\nhealth_fall = 2\n")
    )
    killAt: list[float] = []
    stats = {"sent": 0, "results": 0, "errors": 0, "errorTimes": [], "codes": set()}
    lock = threading.Lock()
    failures: list[BaseException] = []
    iterations = 400

    def worker(k: int) -> None:
        try:
            client = RawClient("127.0.0.1", proxy.port)
            for i in range(iterations):
                user = (k * 7 + i) % 50
                for op in (
                    lambda: client.bind(f"uid=user{user},{PEOPLE}", f"pass{user}"),
                    lambda: client.search(PEOPLE, f"user{(user + 1) % 50}"),
                ):
                    with lock:
                        stats["sent"] += 1
                    code, _ = op()
                    with lock:
                        stats["results"] += 1
                        if code != 0:
                            stats["errors"] += 1
                            stats["errorTimes"].append(now())
                            stats["codes"].add(code)
                if i == iterations // 3 and k == 0 and not killAt:
                    killAt.append(now())
                    servers["a"].kill()
            client.close()
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    start = now()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = now() - start
    assert not failures, failures
    assert killAt
    assert stats["sent"] == stats["results"] == 8 * iterations * 2
    assert stats["codes"] <= {52}, stats["codes"]
    lastError = max(stats["errorTimes"], default=killAt[0]) - killAt[0]
    figures = (
        f"sent={stats['sent']} results={stats['results']} errors={stats['errors']} "
        f"kill->last error={lastError * 1000:.0f}ms run={elapsed:.1f}s"
    )
    record_property("failover", figures)
    print("FAILOVER FIGURES:", figures)
    assert stats["errors"] <= 8 * 2  # at most the ops in flight on a's links
    assert lastError < 2.0


def test_midSessionDeathReplaysBind(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    """
    A backend dies under a bound session: the next operation gets 52 only
    if it was in flight; the one after reconnects to the other backend with
    the bind replayed (the search runs as the bound user).
    """
    servers = {name: slapdFactory(entries=10, accessLog=True) for name in "ab"}
    proxy = proxyFactory(poolConfig(servers, "strategy = failover\nhealth_check = no\n", {"b": "priority = 1\n"}))
    client = RawClient("127.0.0.1", proxy.port)
    assert client.bind(f"uid=user3,{PEOPLE}", "pass3")[0] == 0
    assert client.search(PEOPLE, "user1")[0] == 0
    servers["a"].kill()
    time.sleep(0.2)
    code, _ = client.search(PEOPLE, "user2")
    assert code == 0
    assert any('BIND dn="uid=user3,ou=people,dc=example,dc=com" mech=SIMPLE' in line for line in servers["b"].logLines())


def test_wholePoolDown(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    servers = {name: slapdFactory(entries=10) for name in "ab"}
    proxy = proxyFactory(
        poolConfig(servers, "health_check = no\nconnect_timeout = 1s\nretry_budget = 1s\n"),
        "on_backend_unavailable = answer\n",
    )
    for server in servers.values():
        server.stop()
    code, text = RawClient("127.0.0.1", proxy.port).search(PEOPLE, "user1")
    assert code == 52
    assert "no backend of pool 'p' is reachable (tried: " in text and "retry_budget of 1s" in text


def test_healthDownUpAndFailBack(slapdFactory: SlapdFactory, proxyFactory: Any, record_property: Any) -> None:
    """
    Stop the primary: marked down within fall * interval (plus one probe
    timeout); sessions go to the secondary.  Restart it: up again after
    rise probes, and new sessions fail back to it.
    """
    servers = {name: slapdFactory(entries=10, accessLog=True) for name in "ab"}
    interval, timeout, rise, fall = 0.5, 0.3, 2, 3
    proxy = proxyFactory(
        poolConfig(
            servers,
            f"strategy = failover\nhealth_interval = {interval}s\nhealth_timeout = {timeout}s\n"
            f"health_rise = {rise}\nhealth_fall = {fall}\n",
            {"b": "priority = 1\n"},
        )
    )
    sessions(proxy, 3)
    assert peopleSearches(servers["a"]) == 3
    servers["a"].stop()
    stopped = now()
    downAfter = waitFor(lambda: [h for _, h in proxy.healthEvents("a")] == ["down"], 10, "a marked down")
    assert downAfter <= fall * interval + timeout + 0.5, downAfter
    sessions(proxy, 3)
    assert peopleSearches(servers["b"]) == 3
    servers["a"].start()
    started = now()
    upAfter = waitFor(lambda: [h for _, h in proxy.healthEvents("a")] == ["down", "up"], 10, "a back up")
    assert upAfter <= rise * interval + timeout + 1.0, upAfter
    sessions(proxy, 3)
    waitFor(lambda: peopleSearches(servers["a"]) == 6, 5, "fail back to a")  # the log is appended to
    record_property("health", f"down after {downAfter:.2f}s, up after {upAfter:.2f}s")
    print(f"HEALTH FIGURES: stop->down {downAfter:.2f}s start->up {upAfter:.2f}s", stopped, started)


class SilentServer:
    """Accepts TCP connections, reads whatever comes, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._running = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while self._running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections.append(conn)  # held open, never read or answered

    def close(self) -> None:
        self._running = False
        for conn in self.connections:
            conn.close()
        self.sock.close()


def test_silentBackend(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    """
    A backend that accepts TCP and never answers: probes time out and mark
    it down; a session that was sent there gets timeLimitExceeded (3) for
    its operation after operation_timeout, and its next operation moves on
    to the good backend.  Other clients are never stalled.
    """
    good = slapdFactory(entries=10, accessLog=True)
    silent = SilentServer()
    try:
        proxy = proxyFactory(
            f"[backend:silent]\nurl = ldap://127.0.0.1:{silent.port}\n[backend:good]\nurl = {good.url}\n"
            "[pool:p]\nbackends = silent, good\nhealth_interval = 300ms\nhealth_timeout = 200ms\n"
            "health_fall = 1\nhealth_rise = 1\noperation_timeout = 1s\n[route:all]\npool = p\n"
        )
        # the very first session is the silent backend's turn, before any probe
        # result (the first probe is still waiting for its timeout)
        client = RawClient("127.0.0.1", proxy.port)
        started = now()
        code, text = client.search(PEOPLE, "user1")
        took = now() - started
        assert code == 3 and "operation_timeout" in text, (code, text)
        assert 0.9 <= took < 2.5
        assert client.search(PEOPLE, "user1")[0] == 0  # moved on
        waitFor(lambda: "down" in [h for _, h in proxy.healthEvents("silent")], 5, "silent marked down")
        started = now()
        sessions(proxy, 10)  # all go to good, none waits
        assert now() - started < 2.0
    finally:
        silent.close()
