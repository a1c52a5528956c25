"""
A raw-socket LDAP client for hostile-input tests: it sends whatever bytes a
test gives it and reads PDUs back with ldaptor's decoder (not our framer),
so a misbehaving proxy cannot hide behind its own codec.  Also the process
figures the reliability tests assert on: RSS and open file descriptors of a
process from /proc.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from ldaptor.protocols import pureber, pureldap

from tests import pdus

NOTICE_OF_DISCONNECTION = b"1.3.6.1.4.1.1466.20036"


def rssKiB(pid: int) -> int:
    """Resident set size of C{pid} in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fdCount(pid: int) -> int:
    """How many file descriptors C{pid} has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _decoder() -> Any:
    return pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )


class RawClient:
    """One TCP connection to the proxy."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self._buffer = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _decodeOne(self) -> Any | None:
        if not self._buffer:
            return None
        try:
            decoded, used = pureber.berDecodeObject(_decoder(), self._buffer)
        except pureber.BERExceptionInsufficientData:
            return None
        if decoded is None:
            return None
        self._buffer = self._buffer[used:]
        return decoded

    def receive(self, timeout: float | None = None) -> Any | None:
        """
        The next LDAPMessage, or L{None} when the proxy closed the connection.

        @raise TimeoutError: nothing complete arrived in time.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            message = self._decodeOne()
            if message is not None:
                return message
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete PDU; {len(self._buffer)} bytes buffered")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no complete PDU; {len(self._buffer)} bytes buffered") from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
            self._buffer += data

    def finalFor(self, messageID: int, timeout: float | None = None) -> Any:
        """Read until the final response of C{messageID}; the messages before it are dropped."""
        while True:
            message = self.receive(timeout)
            if message is None:
                raise AssertionError(f"connection closed before the answer to {messageID}")
            if message.id == messageID and not isinstance(
                message.value, (pureldap.LDAPSearchResultEntry, pureldap.LDAPSearchResultReference)
            ):
                return message

    def expectNoticeAndClose(self, timeout: float | None = None) -> Any:
        """The Notice of Disconnection, then end of stream; returns the notice."""
        notice = None
        while True:
            message = self.receive(timeout)
            if message is None:
                break
            if message.id == 0:
                notice = message
        assert notice is not None, "the proxy closed without a Notice of Disconnection"
        assert isinstance(notice.value, pureldap.LDAPExtendedResponse)
        assert notice.value.responseName == NOTICE_OF_DISCONNECTION
        return notice

    def expectClose(self, timeout: float | None = None) -> list[Any]:
        """Read to end of stream; every message that came before it."""
        messages = []
        while True:
            message = self.receive(timeout)
            if message is None:
                return messages
            messages.append(message)

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def servedAnonymously(port: int) -> None:
    """A fresh client gets a base-object search of the suffix answered (the proxy is healthy)."""
    client = RawClient(port)
    try:
        client.send(pdus.search("dc=example,dc=com", 1, scope=0))
        done = client.finalFor(1)
        assert isinstance(done.value, pureldap.LDAPSearchResultDone), done
        assert done.value.resultCode == 0, done.value
    finally:
        client.close()


def runningProxy(directory: str, config: str) -> Iterator[Any]:
    """
    A generator for fixtures: an ldaproute process serving C{config}, stopped
    afterwards, whose log must show no unhandled error.
    """
    from tests.integration.proxy import ProxyProcess

    process = ProxyProcess(directory, config).start()
    try:
        yield process
    finally:
        process.stop()
    log = process.log()
    assert "Traceback" not in log and "Unhandled" not in log, log


def stillHealthy(proxy: Any) -> Iterator[Any]:
    """
    A generator for fixtures: the proxy, checked after the test: still
    serving, and holding no more file descriptors than before it.
    """
    assert proxy.process is not None
    pid = proxy.process.pid
    servedAnonymously(proxy.port)
    before = fdCount(pid)
    yield proxy
    servedAnonymously(proxy.port)
    deadline = time.monotonic() + 10
    while fdCount(pid) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fdCount(pid) <= before, f"proxy holds {fdCount(pid)} descriptors, {before} before the test"
