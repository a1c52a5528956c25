"""
Shared mode, no head-of-line blocking, bounded memory (issue #15 item 4),
against a real slapd with 50,000 entries and a real ldaproute process.

All clients share one backend connection (C{shared_connections = 1}).
Eight fast clients run base-object searches back to back; their latencies
are measured alone and while a crawling reader (a raw socket that reads 4
KB every 50 ms) has a whole-subtree search of the 50,000 entries (about 12
MB) outstanding on the same connection, in two interleaved rounds of 3 s
each (a new crawler each round).  The proxy never pauses
the shared connection for the crawler: once C{client_buffer_max} (the
default, 2 MiB) waits for it, its search is abandoned upstream and answered
adminLimitExceeded (11), so the fast clients keep their latency and the
proxy's VmRSS stays bounded.

Stated bounds: the fast clients' p99 with the crawler is at most twice
their p99 without it; the proxy's VmRSS, sampled every 10 ms and after
the crawlers read the rest, grows by less than 6 MiB (client_buffer_max,
Twisted's copy when it joins its write buffer, the allocator's slack).
Without the bound (client_buffer_max = 1GiB) the same run grew it by
10.6 MiB at its peak and 20 MiB after, each crawler's whole 12 MB result
held in the proxy.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import pdus
from tests.integration.proxy import ProxyProcess
from tests.integration.rawldap import rssKiB
from tests.slapd import Slapd

ENTRIES = 50_000
FAST_CLIENTS = 8
PHASE_SECONDS = 3.0
ROUNDS = 2
CRAWL_READ = 4096
CRAWL_PAUSE = 0.05
RSS_GROWTH_BOUND_KIB = 6 * 1024
ADMIN_LIMIT_EXCEEDED = 11
SEARCH_RESULT_DONE = 0x65


@pytest.fixture(scope="module")
def bigBackend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    instance = Slapd(str(tmp_path_factory.mktemp("slapd50k")), entries=ENTRIES, startTimeout=120)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def proxy(bigBackend: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    config = (
        "[ldaproute]\nlisten = tcp:{port}:interface=127.0.0.1\nmode = shared\n"
        f"[backend:slapd]\nurl = {bigBackend.url}\n"
        "[pool:main]\nbackends = slapd\nhealth_check = no\n"
        "shared_connections = 1\nbind_connections = 1\n"
        # the rootdn may assert any identity in its own database (README, shared mode)
        f"service_bind_dn = {bigBackend.rootDN}\nservice_bind_password = {bigBackend.rootPW}\n"
        "[route:all]\npool = main\n"
    )
    process = ProxyProcess(str(tmp_path_factory.mktemp("proxy")), config).start()
    try:
        yield process
    finally:
        process.stop()


def pdusIn(data: bytes) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """
    C{(messageID, protocolOp tag, PDU)} of the whole LDAPMessages in
    C{data} and the unparsed tail, with a minimal walker of its own (not
    the proxy's codec).
    """
    found = []
    pos, end = 0, len(data)
    while pos + 2 <= end:
        first = data[pos + 1]
        if first < 0x80:
            start, length = pos + 2, first
        else:
            n = first & 0x7F
            if pos + 2 + n > end:
                break
            start, length = pos + 2 + n, int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        if start + length > end:
            break
        idLength = data[start + 1]
        messageID = int.from_bytes(data[start + 2 : start + 2 + idLength], "big")
        found.append((messageID, data[start + 2 + idLength], data[pos : start + length]))
        pos = start + length
    return found, data[pos:]


def resultCodeOf(pdu: bytes) -> int:
    """The resultCode of a SearchResultDone: the first element (an ENUMERATED) of its protocolOp."""
    pos = 2 + (pdu[1] & 0x7F if pdu[1] & 0x80 else 0)  # the messageID INTEGER
    pos += 2 + pdu[pos + 1]  # the protocolOp's tag
    pos += 2 + (pdu[pos + 1] & 0x7F if pdu[pos + 1] & 0x80 else 0)  # its ENUMERATED
    assert pdu[pos : pos + 2] == b"\x0a\x01", pdu[:32]
    return pdu[pos + 2]


class FastClient:
    """Base-object searches of one user entry, one at a time, timed."""

    def __init__(self, port: int, index: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(30)
        self.base = f"uid=user{index},ou=people,dc=example,dc=com"
        self.messageID = 0
        self.latencies: list[float] = []
        self.until = 0.0
        self.failures: list[str] = []

    def searchOnce(self) -> float:
        self.messageID += 1
        request = pdus.search(self.base, self.messageID, scope=0)
        started = time.perf_counter()
        self.sock.sendall(request)
        buffered = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the proxy closed a fast client's connection")
            found, buffered = pdusIn(buffered + data)
            for messageID, tag, pdu in found:
                if tag == SEARCH_RESULT_DONE and messageID == self.messageID:
                    if resultCodeOf(pdu) != 0:
                        self.failures.append(f"resultCode {resultCodeOf(pdu)}")
                    return time.perf_counter() - started

    def run(self) -> None:
        while time.monotonic() < self.until:
            self.latencies.append(self.searchOnce())


def runPhase(clients: list[FastClient], seconds: float) -> list[float]:
    """Every fast client searching for C{seconds}, each in a thread; all their latencies, in seconds."""
    until = time.monotonic() + seconds
    threads = []
    for client in clients:
        client.latencies = []
        client.until = until
        thread = threading.Thread(target=client.run, daemon=True)
        threads.append(thread)
        thread.start()
    latencies: list[float] = []
    for client, thread in zip(clients, threads):
        thread.join(seconds + 30)
        assert not thread.is_alive(), "a fast client hung"
        assert not client.failures, client.failures
        latencies.extend(client.latencies)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Crawler(threading.Thread):
    """A whole-subtree search read 4 KB at a time, 50 ms apart, until told to stop."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(30)
        self.stop = threading.Event()
        self.received: list[bytes] = []

    def run(self) -> None:
        self.sock.sendall(pdus.search("ou=people,dc=example,dc=com", 1))
        while not self.stop.is_set():
            self.received.append(self.sock.recv(CRAWL_READ))
            time.sleep(CRAWL_PAUSE)

    def readRest(self) -> tuple[int, int]:
        """Read everything left, fast: C{(entries, resultCode)} of the search."""
        entries = 0
        buffered = b"".join(self.received)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found, buffered = pdusIn(buffered)
            for _, tag, pdu in found:
                if tag == 0x64:
                    entries += 1
                elif tag == SEARCH_RESULT_DONE:
                    return entries, resultCodeOf(pdu)
            data = self.sock.recv(1 << 20)
            if not data:
                raise AssertionError("the proxy closed the crawler's connection")
            buffered += data
        raise AssertionError("the crawler's search got no final result")


def crawled(port: int, pid: int, clients: list[FastClient], peak: list[int]) -> tuple[list[float], dict[str, int]]:
    """
    One phase with a new crawler: the fast clients' latencies, and what the
    crawler got; C{peak[0]} follows the proxy's VmRSS, sampled every 10 ms.
    """
    crawler = Crawler(port)
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rssKiB(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    crawler.start()
    try:
        time.sleep(0.05)  # the crawler's search is under way
        latencies = runPhase(clients, PHASE_SECONDS)
    finally:
        crawler.stop.set()
        crawler.join(10)
        sampling.set()
        sampler.join(10)
    read = sum(len(chunk) for chunk in crawler.received)
    entries, resultCode = crawler.readRest()
    crawler.sock.close()
    return latencies, {"bytes_read_crawling": read, "entries": entries, "result": resultCode}


def test_crawlerNeitherBlocksOthersNorGrowsTheProxy(proxy: ProxyProcess, record_property: Any) -> None:
    assert proxy.process is not None
    pid = proxy.process.pid
    clients = [FastClient(proxy.port, i) for i in range(FAST_CLIENTS)]
    runPhase(clients, 0.5)  # warm: the shared connection is open and bound
    before = rssKiB(pid)
    peak = [before]
    without: list[float] = []
    withCrawler: list[float] = []
    crawls = []
    for _ in range(ROUNDS):  # interleaved, so that the machine's other load falls on both alike
        without.extend(runPhase(clients, PHASE_SECONDS))
        latencies, crawl = crawled(proxy.port, pid, clients, peak)
        withCrawler.extend(latencies)
        crawls.append(crawl)
    after = rssKiB(pid)
    peak[0] = max(peak[0], after)
    for client in clients:
        client.sock.close()

    figures = {
        "fast_ops_without": len(without),
        "fast_ops_with": len(withCrawler),
        "p50_ms_without": round(statistics.median(without) * 1000, 3),
        "p99_ms_without": round(percentile(without, 0.99) * 1000, 3),
        "p50_ms_with": round(statistics.median(withCrawler) * 1000, 3),
        "p99_ms_with": round(percentile(withCrawler, 0.99) * 1000, 3),
        "max_ms_without": round(max(without) * 1000, 3),
        "max_ms_with": round(max(withCrawler) * 1000, 3),
        "rss_kib_before": before,
        "rss_kib_peak": peak[0],
        "rss_kib_after": after,
        "crawls": crawls,
    }
    print(f"slow reader in shared mode: {figures}")
    record_property("slowreader", figures)
    for crawl in crawls:
        assert crawl["result"] == ADMIN_LIMIT_EXCEEDED, figures
        assert 0 < crawl["entries"] < ENTRIES, figures
    assert figures["p99_ms_with"] <= 2 * figures["p99_ms_without"], figures
    assert peak[0] - before < RSS_GROWTH_BOUND_KIB, figures
