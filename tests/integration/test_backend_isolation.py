"""
No client can take a backend out of service (issue #14, item 5), against a
real slapd whose request size limit is low (C{sockbuf_max_incoming} and
C{sockbuf_max_incoming_auth}) and a real 389 DS (its 2 MiB
C{nsslapd-maxbersize}, with a 3 MiB request): one client keeps
sending a request over the limit, slapd drops each upstream connection
that carries one, and meanwhile other clients keep working on the same
backend.  The offender gets an answer for each request; everyone else's
operations succeed; C{ldaproute_backend_up} stays 1 throughout and the
backend is never logged down.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import SlapdFactory
from tests.integration.ds389 import DS389
from tests.integration.rawclient import RawClient
from tests.slapd import freePort

PEOPLE = "ou=people,dc=example,dc=com"
LIMIT = 64 * 1024


def addRequest(messageID: int, dn: str, size: int) -> bytes:
    """An AddRequest with a C{description} of C{size} bytes."""
    from ldaproute.wire import ber

    attribute = lambda name, value: ber.tlv(0x30, ber.tlv(0x04, name) + ber.tlv(0x31, ber.tlv(0x04, value)))  # noqa: E731
    attributes = (
        attribute(b"objectClass", b"inetOrgPerson")
        + attribute(b"cn", b"big")
        + attribute(b"sn", b"big")
        + attribute(b"description", b"x" * size)
    )
    return ber.message(messageID, ber.tlv(0x68, ber.tlv(0x04, dn.encode()) + ber.tlv(0x30, attributes)))


def backendUp(metricsPort: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metricsPort}/metrics", timeout=5) as response:
        body = response.read().decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "ldaproute_backend_up" and sample.labels.get("backend") == "b1":
                return sample.value
    raise AssertionError("no ldaproute_backend_up{backend=b1} sample")


def test_oversizedRequestDoesNotTakeSlapdDown(slapdFactory: SlapdFactory, proxyFactory: Any, record_property: Any) -> None:
    server = slapdFactory(entries=50, accessLog=True, maxIncoming=LIMIT)
    figures = isolation(proxyFactory, server.url, 2 * LIMIT)
    record_property("isolation", figures)
    print("ISOLATION FIGURES (slapd):", figures)
    # slapd really dropped the offender's upstream connections
    assert any("closed (connection lost" in line for line in server.logLines()), server.logLines()[-20:]


def test_oversizedRequestDoesNotTake389Down(ds389: DS389, proxyFactory: Any, record_property: Any) -> None:
    figures = isolation(proxyFactory, ds389.url, 3 * 1024 * 1024)
    record_property("isolation389", figures)
    print("ISOLATION FIGURES (389 DS):", figures)
    tooBig = [line for line in ds389.errorLines() if "Incoming BER Element was" in line]
    assert len(tooBig) >= OFFENCES, ds389.errorLines()[-20:]


OFFENCES = 8


def isolation(proxyFactory: Any, url: str, oversize: int) -> str:
    """
    Four clients loop searches (new sessions every 20) on the proxy's one
    backend at C{url} (389 DS's sample data has no such users: an empty
    success is as good) while an offender sends L{OFFENCES} requests of
    C{oversize} bytes, each on a fresh session; returns the figures.
    """
    metricsPort = freePort()
    proxy = proxyFactory(
        f"metrics = tcp:{metricsPort}:interface=127.0.0.1\n"
        f"[backend:b1]\nurl = {url}\n"
        "[pool:p]\nbackends = b1\nhealth_interval = 200ms\nhealth_timeout = 1s\nhealth_rise = 2\nhealth_fall = 2\n"
        "[route:all]\npool = p\n"
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            assert backendUp(metricsPort) == 1
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    stop = threading.Event()
    lock = threading.Lock()
    stats = {"sent": 0, "ok": 0, "errors": 0}
    codes: dict[int, int] = {}
    offences: list[tuple[int, str]] = []
    upSamples: list[float] = []
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            while not stop.is_set():
                client = RawClient("127.0.0.1", proxy.port)  # new sessions too: each one picks a backend
                for i in range(20):
                    code, _ = client.search(PEOPLE, f"user{(k * 7 + i) % 50}")
                    with lock:
                        stats["sent"] += 1
                        stats["ok" if code == 0 else "errors"] += 1
                        codes[code] = codes.get(code, 0) + 1
                client.close()
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    def offender() -> None:
        try:
            for n in range(OFFENCES):
                client = RawClient("127.0.0.1", proxy.port)
                assert client.search(PEOPLE, "user1")[0] == 0  # the upstream connection is open
                offences.append(client.call(addRequest, f"cn=big{n},{PEOPLE}", oversize))
                client.sock.close()
                time.sleep(0.25)
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    def watcher() -> None:
        try:
            while not stop.is_set():
                upSamples.append(backendUp(metricsPort))
                time.sleep(0.05)
        except BaseException as e:  # noqa: B036 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=watcher))
    bad = threading.Thread(target=offender)
    for thread in threads:
        thread.start()
    bad.start()
    bad.join(120)
    time.sleep(0.5)  # one more round of probes after the last offence
    stop.set()
    for thread in threads:
        thread.join(60)

    assert not failures, failures
    figures = (
        f"others: sent={stats['sent']} ok={stats['ok']} errors={stats['errors']}; "
        f"offences={len(offences)} codes={sorted({code for code, _ in offences})}; "
        f"backend_up samples={len(upSamples)} min={min(upSamples)}"
    )
    assert len(offences) == OFFENCES and all(code == 52 for code, _ in offences), offences
    assert stats["sent"] > 100 and stats["errors"] == 0, codes
    assert upSamples and min(upSamples) == 1
    downs = [e for e in proxy.events() if e.get("backend") == "b1" and e.get("health") == "down"]
    assert downs == []
    # the health checker was asked to look at once
    assert any("not marked down, probing" in str(e.get("log_format", "")) for e in proxy.events())
    return figures
