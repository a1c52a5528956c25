"""
Flow control against a real slapd with 50,000 entries: clients that read a
whole-subtree search at a crawl must not make the proxy buffer the result.
The proxy pauses its upstream connection while a client's transport buffer
is full (the client transport's producer), so its memory stays flat while
slapd holds the rest.

Stated bound: two crawling clients of a ~12 MB result each (24 MB in all)
grow the proxy's RSS by less than 8 MiB.
"""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from tests import pdus
from tests.integration.proxy import ProxyProcess, singleBackendConfig
from tests.integration.rawldap import rssKiB
from tests.slapd import Slapd

ENTRIES = 50_000
RSS_GROWTH_BOUND_KIB = 8 * 1024
CRAWL_SECONDS = 6.0


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
    process = ProxyProcess(str(tmp_path_factory.mktemp("proxy")), singleBackendConfig(bigBackend.url)).start()
    try:
        yield process
    finally:
        process.stop()


def countPDUs(data: bytes) -> tuple[dict[int, int], bytes]:
    """
    Count LDAPMessages by protocolOp tag with a minimal walker of its own
    (not the proxy's codec); returns the counts and the unparsed tail.
    """
    counts: dict[int, int] = {}
    pos = 0
    end = len(data)
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
        tag = data[start + 2 + idLength]
        counts[tag] = counts.get(tag, 0) + 1
        pos = start + length
    return counts, data[pos:]


def test_crawlingReadersDoNotMakeTheProxyBuffer(proxy: ProxyProcess) -> None:
    assert proxy.process is not None
    pid = proxy.process.pid
    clients = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        clients.append(sock)
    time.sleep(0.3)
    before = rssKiB(pid)
    for messageID, sock in enumerate(clients, 1):
        sock.sendall(pdus.search("ou=people,dc=example,dc=com", messageID))
    peak = before
    received = [b"" for _ in clients]
    deadline = time.monotonic() + CRAWL_SECONDS
    while time.monotonic() < deadline:
        for i, sock in enumerate(clients):
            received[i] += sock.recv(4096)
        peak = max(peak, rssKiB(pid))
        time.sleep(0.02)
    crawled = sum(len(r) for r in received)
    # now read everything: the whole result arrives, nothing was lost
    counts = []
    for i, sock in enumerate(clients):
        sock.settimeout(60)
        data = received[i]
        tail = b""
        total: dict[int, int] = {}
        chunks = [data]
        while True:
            more = sock.recv(1 << 20)
            if not more:
                raise AssertionError("proxy closed the connection")
            chunks.append(more)
            if b"\x65\x07\x0a\x01\x00\x04\x00\x04\x00" in more[-16:] or len(chunks) % 64 == 0:
                got, tail = countPDUs(tail + b"".join(chunks))
                chunks = []
                for tag, n in got.items():
                    total[tag] = total.get(tag, 0) + n
                if total.get(0x65):
                    break
        counts.append(total)
        sock.close()
    growth = peak - before
    print(f"flow control: RSS {before} KiB before, peak {peak} KiB (+{growth} KiB) while {crawled} bytes were read")
    for total in counts:
        assert total.get(0x64) == ENTRIES + 1, total  # the users and ou=people itself
        assert total.get(0x65) == 1, total
    assert growth < RSS_GROWTH_BOUND_KIB, f"the proxy's RSS grew by {growth} KiB while clients crawled"
