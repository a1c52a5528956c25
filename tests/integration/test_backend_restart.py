"""
Backend restarts and deaths under load, against real slapd: what clients
see ("What clients see when a backend fails" in README.rst).

* The sidecar case: one slapd behind the proxy, 8 clients looping searches
  and compares for 10 s, slapd SIGKILLed and restarted on the same port
  three times, down for about half a second each time: no client sees an
  error, every operation gets one answer, every search its one entry, none
  twice; except, by the replay rule, a search whose entry had reached the
  client just before slapd died (then 52, rare: slapd writes the entry and
  the result separately, and the kill must fall between them).
* Two backends, one SIGKILLed under 8 clients of reads and writes: every
  read succeeds; the writes that fail are those in flight on the killed
  backend (compared with what its access log shows it had not answered).

The figures each scenario measures are printed (``-s``) and recorded as
test properties: operations sent, answered, errors, replays, waits, and the
clients' p50/p99 latency.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import urllib.request
from typing import Any

import pytest
from ldaptor import delta
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from ldaproute.wire.results import readResponse
from tests import pdus
from tests.integration.rawclient import RawClient, searchRequest
from tests.slapd import Slapd, SlapdFactory, freePort

PEOPLE = "ou=people,dc=example,dc=com"
ENTRIES = 50
CLIENTS = 8


class _CountingFramer:
    """A framer that counts the search result entries it frames (for L{CountingClient})."""

    def __init__(self, framer: ber.Framer) -> None:
        self._framer = framer
        self.entries = 0

    def feed(self, data: bytes) -> list[bytes]:
        out = self._framer.feed(data)
        self.entries += sum(1 for pdu in out if readResponse(pdu)[1] == ber.SEARCH_RESULT_ENTRY)
        return out


class CountingClient(RawClient):
    """A L{RawClient} that also counts the entries each search returns."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.framer = self._counting = _CountingFramer(self.framer)  # type: ignore[assignment]

    @property
    def entries(self) -> int:
        return self._counting.entries

    def call(self, makePDU, *args) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        self._counting.entries = 0
        return super().call(makePDU, *args)


def compareRequest(messageID: int, dn: str, attribute: str, value: str) -> bytes:
    ava = ber.tlv(0x04, attribute.encode()) + ber.tlv(0x04, value.encode())
    return ber.message(messageID, ber.tlv(0x6E, ber.tlv(0x04, dn.encode()) + ber.tlv(0x30, ava)))


def modifyRequest(messageID: int, dn: str, value: str) -> bytes:
    return pdus.message(
        pureldap.LDAPModifyRequest(object=dn, modification=[delta.Replace("description", [value]).asLDAP()]),
        messageID,
    )


def proxyConfig(
    backends: dict[str, Slapd], mode: str, metricsPort: int, service: tuple[str, str] | None = None
) -> tuple[str, str]:
    """
    (the config sections, the [ldaproute] keys) of a pool over C{backends};
    in shared mode bound as C{service} (DN, password), by default the
    first backend's SASL user.
    """
    sections = "".join(f"[backend:{name}]\nurl = {server.url}\n" for name, server in backends.items())
    sections += f"[pool:p]\nbackends = {', '.join(backends)}\nhealth_interval = 500ms\nhealth_timeout = 500ms\n"
    if mode == "shared":
        server = next(iter(backends.values()))
        serviceDN, servicePassword = service or (server.saslUserDN, server.saslPassword)
        sections += (
            f"service_bind_dn = {serviceDN}\nservice_bind_password = {servicePassword}\n"
            "shared_connections = 2\n"
        )
    sections += "[route:all]\npool = p\n"
    return sections, f"mode = {mode}\nmetrics = tcp:{metricsPort}:interface=127.0.0.1\n"


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ldaproute_operations_replayed_total") or line.startswith(
            ("ldaproute_operations_waited_total", "ldaproute_operations_budget_spent_total")
        ):
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
        elif line.startswith("ldaproute_operation_wait_seconds_bucket"):
            out[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def waitQuantiles(samples: dict[str, float]) -> str:
    """p50/p99 of the wait histogram, as the upper bound of the bucket that holds them."""
    buckets = sorted(
        (float("inf") if m.group(1) == "+Inf" else float(m.group(1)), value)
        for name, value in samples.items()
        if (m := re.search(r'le="([^"]+)"', name))
    )
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "waits=0"
    quantile = lambda q: next(bound for bound, count in buckets if count >= q * total)  # noqa: E731
    return f"waits={total:.0f} wait p50<={quantile(0.5)}s p99<={quantile(0.99)}s"


def faultFigures(metricsPort: int) -> str:
    """Replays and waits as the proxy's metrics count them."""
    samples = scrape(metricsPort)
    replayed = sum(v for k, v in samples.items() if k.startswith("ldaproute_operations_replayed_total"))
    return f"replayed={replayed:.0f} {waitQuantiles(samples)}"


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "p50=- p99=-"
    ordered = sorted(latencies)
    return (
        f"p50={statistics.median(ordered) * 1000:.1f}ms p99={ordered[int(0.99 * (len(ordered) - 1))] * 1000:.1f}ms "
        f"max={ordered[-1] * 1000:.0f}ms"
    )


@pytest.mark.parametrize("mode", ["session", "shared"])
def test_sidecarRestartsAreInvisible(
    slapdFactory: SlapdFactory, proxyFactory: Any, mode: str, record_property: Any
) -> None:
    backend = slapdFactory(entries=ENTRIES)
    metricsPort = freePort()
    sections, keys = proxyConfig({"slapd": backend}, mode, metricsPort)
    proxy = proxyFactory(sections, keys)
    stop = threading.Event()
    lock = threading.Lock()
    stats: dict[str, Any] = {"sent": 0, "answered": 0, "errors": [], "partial": 0, "wrongEntries": 0, "latencies": []}
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            client = CountingClient("127.0.0.1", proxy.port)
            i = 0
            while not stop.is_set():
                user = (k * 7 + i) % ENTRIES
                started = time.monotonic()
                if i % 2:
                    code, text = client.call(compareRequest, backend.userDN(user), "uid", f"user{user}")
                    ok = code == 6  # compareTrue
                    wrong = False
                else:
                    code, text = client.call(searchRequest, PEOPLE, "uid", f"user{user}")
                    ok = code == 0
                    # the one case the rule answers 52: its entry had reached the client
                    partial = code == 52 and client.entries == 1
                    wrong = client.entries != 1
                elapsed = time.monotonic() - started
                with lock:
                    stats["sent"] += 1
                    stats["answered"] += 1
                    stats["latencies"].append(elapsed)
                    if partial:
                        stats["partial"] += 1
                    elif not ok:
                        stats["errors"].append((code, text))
                    if wrong:
                        stats["wrongEntries"] += 1
                i += 1
            client.close()
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    restarts = []
    try:
        for at in (2.0, 5.0, 8.0):
            time.sleep(max(0.0, began + at - time.monotonic()))
            killed = time.monotonic()
            backend.kill()
            time.sleep(0.4)  # a directory container's restart: refused for about half a second
            backend.start()
            restarts.append(time.monotonic() - killed)
        time.sleep(max(0.0, began + 10.0 - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures
    figures = (
        f"mode={mode} sent={stats['sent']} answered={stats['answered']} errors={len(stats['errors'])} "
        f"answered-52-after-their-entry={stats['partial']} "
        f"wrong-entry-counts={stats['wrongEntries']} {faultFigures(metricsPort)} clients {summary(stats['latencies'])} "
        f"restarts took {', '.join(f'{r:.2f}s' for r in restarts)}"
    )
    print("SIDECAR RESTART FIGURES:", figures)
    record_property("sidecar", figures)
    assert stats["errors"] == [], stats["errors"][:5]
    # a search whose entry had reached the client when slapd died is answered 52 (sending it
    # again could show the client an entry twice): rare, at most one per client and kill
    assert stats["partial"] <= CLIENTS * len(restarts)
    assert stats["wrongEntries"] == 0
    assert stats["sent"] == stats["answered"] > CLIENTS * 20


def test_killOneOfTwoUnderReadsAndWrites(slapdFactory: SlapdFactory, proxyFactory: Any, record_property: Any) -> None:
    servers = {name: slapdFactory(entries=ENTRIES, accessLog=True) for name in "ab"}
    metricsPort = freePort()
    sections, keys = proxyConfig(servers, "session", metricsPort)
    proxy = proxyFactory(sections.replace("health_timeout = 500ms\n", "health_timeout = 500ms\nhealth_fall = 2\n"), keys)
    stop = threading.Event()
    lock = threading.Lock()
    stats: dict[str, Any] = {"reads": 0, "readErrors": [], "writes": 0, "writeErrors": [], "latencies": []}
    failures: list[BaseException] = []
    rootDN = servers["a"].rootDN

    def worker(k: int) -> None:
        try:
            client = CountingClient("127.0.0.1", proxy.port)
            assert client.bind(rootDN, Slapd.rootPW)[0] == 0
            i = 0
            while not stop.is_set():
                user = (k * 5 + i) % ENTRIES
                started = time.monotonic()
                if i % 3 == 2:
                    code, text = client.call(modifyRequest, servers["a"].userDN(k), f"write {i}")
                    with lock:
                        stats["writes"] += 1
                        if code != 0:
                            stats["writeErrors"].append((code, text))
                else:
                    code, text = client.call(searchRequest, PEOPLE, "uid", f"user{user}")
                    with lock:
                        stats["reads"] += 1
                        if code != 0 or client.entries != 1:
                            stats["readErrors"].append((code, text, client.entries))
                with lock:
                    stats["latencies"].append(time.monotonic() - started)
                i += 1
            client.close()
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3.0)
        servers["a"].kill()
        time.sleep(4.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures
    # writes the killed slapd had read and not answered: in flight on it at that instant
    lines = servers["a"].logLines()
    started = {m.group(1) for line in lines if (m := re.search(r"(conn=\d+ op=\d+) MOD dn=", line))}
    finished = {m.group(1) for line in lines if (m := re.search(r"(conn=\d+ op=\d+) RESULT tag=103", line))}
    inFlight = len(started - finished)
    figures = (
        f"reads={stats['reads']} read-errors={len(stats['readErrors'])} writes={stats['writes']} "
        f"write-errors={len(stats['writeErrors'])} writes-in-flight-on-the-killed-slapd={inFlight} "
        f"{faultFigures(metricsPort)} clients {summary(stats['latencies'])}"
    )
    print("KILL ONE OF TWO FIGURES:", figures)
    record_property("killOneOfTwo", figures)
    assert stats["readErrors"] == [], stats["readErrors"][:5]
    assert all(code == 52 for code, _ in stats["writeErrors"]), stats["writeErrors"]
    # a write fails only when it was in flight on the killed backend: at most one per client, and
    # at least those the killed slapd had started (it may also have died before reading some)
    assert inFlight <= len(stats["writeErrors"]) <= CLIENTS


@pytest.mark.parametrize("mode", ["session", "shared"])
def test_bindDuringRestartWaits(slapdFactory: SlapdFactory, proxyFactory: Any, mode: str) -> None:
    """
    A client that connects and binds while its slapd is down (the restart
    window) is not refused: its bind and its search wait within the retry
    budget and are served once slapd is back (shared mode: on a bind
    connection that reconnects for it).
    """
    backend = slapdFactory(entries=ENTRIES)
    # (the rootdn may assert any identity of its database: the bound client's search)
    sections, keys = proxyConfig({"slapd": backend}, mode, freePort(), (backend.rootDN, backend.rootPW))
    proxy = proxyFactory(sections, keys)
    warm = CountingClient("127.0.0.1", proxy.port)
    assert warm.bind(backend.userDN(1), backend.userPassword(1))[0] == 0
    backend.kill()
    answers: list[tuple[int, str]] = []
    failures: list[BaseException] = []

    def client() -> None:
        try:
            c = CountingClient("127.0.0.1", proxy.port)
            answers.append(c.bind(backend.userDN(3), backend.userPassword(3)))
            answers.append(c.call(searchRequest, PEOPLE, "uid", "user3"))
            answers.append((c.entries, ""))
            c.close()
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    thread = threading.Thread(target=client)
    started = time.monotonic()
    thread.start()
    time.sleep(0.6)  # the bind is out of the client and waits in the proxy
    assert answers == [], answers
    backend.start()
    thread.join(30)
    assert not failures, failures
    assert [code for code, _ in answers] == [0, 0, 1], answers  # bind, search, its one entry
    assert time.monotonic() - started < 5.0
    warm.close()
