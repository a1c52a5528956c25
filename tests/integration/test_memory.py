"""
A slow reader does not make the proxy buffer the result: a 5,000-entry
search of about 20 MB (far more than the kernel's socket buffers between
slapd, the proxy and the client can hold) read 4 KB every 10 ms; the proxy's
VmRSS, sampled every 10 ms, must not grow with the result.  Without flow
control the proxy would have to hold most of the result (ldaptor's
ProxyBase grows by about 34 MB on the same stream).  bench/memory.py runs
the same measurement and the 10,000 idle connections one.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from ldaptor.protocols import pureldap

from tests import pdus
from tests.integration.proxy import ProxyProcess, singleBackendConfig
from tests.slapd import Slapd

ENTRIES = 5000
DEVICES = pureldap.LDAPFilter_equalityMatch(
    attributeDesc=pureldap.LDAPAttributeDescription("objectClass"),
    assertionValue=pureldap.LDAPAssertionValue("device"),
)
BLOB = 4000


class BigEntriesSlapd(Slapd):
    """The usual data set plus C{ENTRIES} devices of C{BLOB} bytes each under ou=system."""

    def writeLDIF(self, path: str) -> None:
        super().writeLDIF(path)
        with open(path, "a") as f:
            for i in range(ENTRIES):
                f.write(f"dn: cn=blob{i},{self.systemDN}\nobjectClass: device\ncn: blob{i}\n"
                        f"description: {'x' * BLOB}\n\n")


@pytest.fixture(scope="module")
def bigSlapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    instance = BigEntriesSlapd(str(tmp_path_factory.mktemp("slapd")), entries=10)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def rssKB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def readSearch(port: int, pid: int, chunk: int, pause: float, slowFor: float) -> dict[str, int]:
    """
    Run the blob search; read C{chunk} bytes every C{pause} s for C{slowFor}
    s, then the rest at once.  Returns entries, bytes, bytes read slowly and
    the proxy's RSS growth at its peak (kB).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    before = rssKB(pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rssKB(pid))
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    total = slow = entries = 0
    buf = bytearray()
    done = False
    started = time.monotonic()
    try:
        sock.sendall(pdus.search("ou=system,dc=example,dc=com", messageID=3, filter=DEVICES))
        while not done:
            assert time.monotonic() - started < 120, "search not finished after 120 s"
            data = sock.recv(chunk)
            assert data, "the proxy closed the connection mid-search"
            total += len(data)
            buf += data
            pos = 0
            while len(buf) - pos >= 2:
                lb = buf[pos + 1]
                hdr, length = (2, lb) if lb < 0x80 else (2 + (lb & 0x7F), int.from_bytes(buf[pos + 2:pos + 2 + (lb & 0x7F)], "big"))
                if len(buf) - pos < hdr + length:
                    break
                body = pos + hdr
                tag = buf[body + 2 + buf[body + 1]]
                entries += tag == 0x64
                done = done or tag == 0x65
                pos += hdr + length
            del buf[:pos]
            if chunk < 65536:
                if time.monotonic() - started > slowFor:
                    slow, chunk = total, 262144
                else:
                    time.sleep(pause)
    finally:
        stop.set()
        sampler.join()
        sock.close()
    return {"entries": entries, "bytes": total, "slow": slow or total, "growthKB": peak[0] - before}


def test_slowReaderDoesNotGrowTheProxy(bigSlapd: Slapd, tmp_path: object) -> None:
    process = ProxyProcess(str(tmp_path), singleBackendConfig(bigSlapd.url)).start()
    try:
        pid = process.process.pid  # type: ignore[union-attr]
        fast = readSearch(process.port, pid, 262144, 0, 0)  # warms up the proxy
        assert fast["entries"] == ENTRIES
        assert fast["bytes"] > ENTRIES * BLOB
        slow = readSearch(process.port, pid, 4096, 0.01, 3.0)
        assert slow["entries"] == ENTRIES
        # the slow phase read a small part of the result: the rest was held
        # back by slapd, not by the proxy
        assert slow["slow"] < slow["bytes"] / 4, slow
        assert slow["growthKB"] * 1024 < 0.05 * slow["bytes"], (slow, fast)
    finally:
        assert process.stop() == 0, process.log()
