"""Write-through on plain TCP transports: sent at once when nothing is buffered, else Twisted's buffer."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.testing import MemoryReactor, StringTransport

from ldaproute.wire.fastwrite import writerFor


def connectionPair() -> tuple[tcp.Connection, socket.socket, MemoryReactor]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    reactor = MemoryReactor()
    connection = tcp.Connection(ours, None, reactor=reactor)
    connection.connected = True
    return connection, theirs, reactor


def drain(peer: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_sentAtOnceWithoutRegisteringForWrites() -> None:
    connection, peer, reactor = connectionPair()
    write = writerFor(connection)
    write(b"\x30\x03\x02\x01\x01")
    assert drain(peer) == b"\x30\x03\x02\x01\x01"
    assert connection not in reactor.getWriters()
    assert not connection._tempDataBuffer


def test_whatTheKernelRefusesIsBufferedInOrder() -> None:
    connection, peer, reactor = connectionPair()
    write = writerFor(connection)
    big = bytes(range(256)) * 40000  # ~10 MB: more than a socket buffer
    write(big)
    assert connection._tempDataBuffer  # the rest waits in Twisted's buffer
    assert connection in reactor.getWriters()
    write(b"after")  # must queue behind, not jump ahead
    received = drain(peer)
    while connection._tempDataBuffer or connection.offset != len(connection.dataBuffer):
        connection.doWrite()
        received += drain(peer)
    assert received == big + b"after"


def test_tlsAndOtherTransportsUseTheirOwnWrite() -> None:
    connection, peer, _ = connectionPair()
    connection.TLS = True
    calls: list[bytes] = []
    connection.write = calls.append  # type: ignore[method-assign]
    writerFor(connection)(b"x")
    assert calls == [b"x"] and drain(peer) == b""
    memory = StringTransport()
    assert writerFor(memory) == memory.write
