"""
Hostile clients with real sockets against the proxy (a real process) in
front of a real slapd: each gets the RFC 4511 answer or a clean close, and
after each, another client is still served and no file descriptor is left
behind.

Deeply nested filters are checked by the proxy (L{ldaproute.core.limits}): slapd
drops the connection without an answer on filters a few thousand levels
deep, which would cost the client its whole upstream connection.
"""

from __future__ import annotations

import resource
import socket
import time
from typing import Iterator

import pytest
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from tests import pdus
from tests.integration.proxy import ProxyProcess, singleBackendConfig
from tests.integration.rawldap import RawClient, runningProxy, servedAnonymously, stillHealthy
from tests.slapd import Slapd

PEOPLE = "ou=people,dc=example,dc=com"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    instance = Slapd(str(tmp_path_factory.mktemp("slapd")), entries=2000)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def proxy(backend: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    yield from runningProxy(str(tmp_path_factory.mktemp("proxy")), singleBackendConfig(backend.url, "max_connections_per_address = off  ; the idle-connections test opens 2000 from 127.0.0.1\n"))


@pytest.fixture
def healthy(proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    """The proxy, checked after the test: still serving, no descriptor leaked."""
    yield from stillHealthy(proxy)


def searchWithFilter(messageID: int, filterBytes: bytes, base: bytes = b"dc=example,dc=com") -> bytes:
    body = (
        ber.tlv(0x04, base)
        + ber.tlv(0x0A, b"\x00")
        + ber.tlv(0x0A, b"\x00")
        + ber.tlv(0x02, b"\x00")
        + ber.tlv(0x02, b"\x00")
        + ber.tlv(0x01, b"\x00")
        + filterBytes
        + ber.tlv(0x30, b"")
    )
    return ber.message(messageID, ber.tlv(ber.SEARCH_REQUEST, body))


def nestedFilter(depth: int, tag: int = 0xA0) -> bytes:
    f = ber.tlv(0x87, b"objectClass")
    for _ in range(depth):
        f = ber.tlv(tag, f)
    return f


def noticeCode(client: RawClient) -> int:
    return client.expectNoticeAndClose().value.resultCode


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), id="tls-hello"),
        pytest.param(b"\x30\x80\x02\x01\x01\x42\x00\x00\x00", id="indefinite-length"),
        pytest.param(b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01", id="absurd-length-2GB"),
        pytest.param(b"\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00", id="absurd-length-octets"),
        pytest.param(b"\x30\x05\x02\x01\x01\x99\x00", id="unknown-operation"),
        pytest.param(b"\x30\x03\x04\x01\x01", id="no-messageID"),
        pytest.param(b"\x30\x06\x02\x01\xff\x42\x00\x00", id="negative-messageID"),
        pytest.param(pdus.search(messageID=0), id="messageID-0"),
    ],
)
def test_garbageGetsNoticeOfDisconnection(healthy: ProxyProcess, data: bytes) -> None:
    client = RawClient(healthy.port)
    client.send(data)
    assert noticeCode(client) == ber.PROTOCOL_ERROR


def test_truncatedPDUThenHalfClose(healthy: ProxyProcess) -> None:
    client = RawClient(healthy.port)
    request = pdus.search(PEOPLE, 1)
    client.send(request[: len(request) // 2])
    client.sock.shutdown(socket.SHUT_WR)
    assert client.expectClose() == []


def test_truncatedPDUThenSilence(healthy: ProxyProcess) -> None:
    """A half-sent PDU holds nothing but its bytes; the connection stays usable for others."""
    client = RawClient(healthy.port)
    request = pdus.search(PEOPLE, 1)
    client.send(request[:10])
    servedAnonymously(healthy.port)
    client.send(request[10:])
    assert client.finalFor(1).value.resultCode == 0
    client.close()


def test_tenMegabytePasswordIsRefusedBeforeBuffering(healthy: ProxyProcess) -> None:
    client = RawClient(healthy.port)
    request = pdus.bind("uid=user1," + PEOPLE, "x" * (10 * 1024 * 1024), 1)
    try:
        client.send(request)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the proxy closed before reading it all: the notice may be lost to the RST
    else:
        assert noticeCode(client) == ber.PROTOCOL_ERROR


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_deeplyNestedFilterIsRefused(healthy: ProxyProcess, depth: int) -> None:
    client = RawClient(healthy.port)
    client.send(searchWithFilter(1, nestedFilter(depth, 0xA2 if depth == 5000 else 0xA0)))
    done = client.finalFor(1)
    assert isinstance(done.value, pureldap.LDAPSearchResultDone)
    assert done.value.resultCode == 11, done.value
    assert b"nested deeper than 64" in done.value.errorMessage
    # the connection is still usable
    client.send(pdus.search(PEOPLE, 2, scope=0))
    assert client.finalFor(2).value.resultCode == 0
    client.close()


def test_nestedFilterWithinTheLimitIsForwarded(healthy: ProxyProcess) -> None:
    client = RawClient(healthy.port)
    client.send(searchWithFilter(1, nestedFilter(60, 0xA1)))
    done = client.finalFor(1)
    assert done.value.resultCode == 0
    client.close()


def test_hugeNumberOfAttributes(healthy: ProxyProcess) -> None:
    """
    50,000 requested attributes (~640 kB): slapd drops an anonymous client's
    PDU over its 256 kB limit; the client gets unavailable (52) from the
    proxy, or slapd's own answer, never silence.
    """
    client = RawClient(healthy.port)
    names = [f"attr{i}" for i in range(50_000)]
    client.send(pdus.search(PEOPLE, 1, scope=0, attributes=names))
    done = client.finalFor(1, timeout=30)
    assert isinstance(done.value, pureldap.LDAPSearchResultDone)
    assert done.value.resultCode in (0, 52), done.value
    client.close()


def test_hugeNumberOfAttributesBound(healthy: ProxyProcess, backend: Slapd) -> None:
    client = RawClient(healthy.port)
    client.send(pdus.bind(backend.rootDN, backend.rootPW, 1))
    assert client.finalFor(1).value.resultCode == 0
    names = [f"attr{i}" for i in range(50_000)]
    client.send(pdus.search(PEOPLE, 2, scope=0, attributes=names))
    done = client.finalFor(2, timeout=30)
    assert isinstance(done.value, pureldap.LDAPSearchResultDone)
    assert done.value.resultCode == 0, done.value
    client.close()


def test_requestThenReset(healthy: ProxyProcess) -> None:
    for i in range(20):
        client = RawClient(healthy.port)
        client.send(pdus.search(PEOPLE, 1))
        if i % 2:
            time.sleep(0.01)
        client.reset()


def test_abandonOfUnknownIDs(healthy: ProxyProcess) -> None:
    client = RawClient(healthy.port)
    for messageID, abandoned in ((1, 99), (2, 0), (3, 0x7FFFFFFF), (4, 4)):
        client.send(pdus.message(pureldap.LDAPAbandonRequest(id=abandoned), messageID))
    client.send(pdus.search(PEOPLE, 5, scope=0))
    assert client.finalFor(5).value.resultCode == 0
    client.close()


def test_duplicateMessageIDInFlight(healthy: ProxyProcess) -> None:
    """RFC 4511 4.1.1.1: a client MUST NOT reuse an outstanding messageID; the stream is not trustworthy."""
    client = RawClient(healthy.port)
    client.send(pdus.search(PEOPLE, 7) + pdus.search(PEOPLE, 7))
    messages = client.expectClose()
    notices = [m for m in messages if m.id == 0]
    assert len(notices) == 1 and notices[0].value.resultCode == ber.PROTOCOL_ERROR


def test_unbindWithOperationsInFlight(healthy: ProxyProcess) -> None:
    client = RawClient(healthy.port)
    client.send(b"".join(pdus.search(PEOPLE, i) for i in range(1, 6)) + pdus.message(pureldap.LDAPUnbindRequest(), 6))
    client.expectClose()


def test_slowReaderUnbindsWithAFullBuffer(healthy: ProxyProcess) -> None:
    """
    Regression: a client whose transport buffer was full (producer paused)
    sent an unbind; once it read everything, Twisted resumed the producer
    instead of closing, and the connection stayed open for ever.
    """
    client = RawClient(healthy.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.send(pdus.search(PEOPLE, 1))
    time.sleep(1.0)  # the proxy's buffer to this client fills; it pauses the backend
    client.send(pdus.message(pureldap.LDAPUnbindRequest(), 2))
    time.sleep(0.3)
    client.expectClose(timeout=10)


def test_thousandsOfIdleConnections(healthy: ProxyProcess) -> None:
    count = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 500), hard))
    clients = []
    try:
        for _ in range(count):
            clients.append(RawClient(healthy.port))
        servedAnonymously(healthy.port)
        # every one of them is still served
        for client in clients[:: count // 20]:
            client.send(pdus.search(PEOPLE, 1, scope=0))
            assert client.finalFor(1).value.resultCode == 0
    finally:
        for client in clients:
            client.close()
