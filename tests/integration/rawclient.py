"""
A tiny blocking LDAP client for pool tests that need to see every PDU: it
sends binds and searches, and checks that each request gets exactly one
final response (and nothing for IDs it did not send).  Uses the proxy's
ber helpers to build requests, and reads of answers only their messageID,
tag and result code (L{ldaproute.wire.results.readResponse}).
"""

from __future__ import annotations

import socket
import time

from ldaproute.wire import ber
from ldaproute.wire.results import readResponse


def searchRequest(messageID: int, base: str, attribute: str, value: str) -> bytes:
    """A one-level equality search on C{base}, for C{(attribute=value)}."""
    content = (
        ber.tlv(0x04, base.encode())
        + ber.tlv(0x0A, b"\x02")  # wholeSubtree
        + ber.tlv(0x0A, b"\x00")
        + ber.tlv(0x02, b"\x00")
        + ber.tlv(0x02, b"\x00")
        + ber.tlv(0x01, b"\x00")
        + ber.tlv(0xA3, ber.tlv(0x04, attribute.encode()) + ber.tlv(0x04, value.encode()))
        + ber.tlv(0x30, ber.tlv(0x04, b"uid"))
    )
    return ber.message(messageID, ber.tlv(ber.SEARCH_REQUEST, content))


class ProtocolViolation(AssertionError):
    """The server answered an ID twice, or one we never sent."""


class RawClient:
    """One connection; L{call} sends one request and waits for its final result."""

    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.settimeout(timeout)
        self.framer = ber.Framer(16 * 1024 * 1024)
        self.nextID = 1
        self.answered: set[int] = set()
        self.pending: list[bytes] = []

    def call(self, makePDU, *args) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        """Send C{makePDU(messageID, *args)}; return C{(resultCode, diagnostic)}."""
        messageID = self.nextID
        self.nextID += 1
        self.sock.sendall(makePDU(messageID, *args))
        while True:
            while self.pending:
                pdu = self.pending.pop(0)
                gotID, tag, code = readResponse(pdu)[:3]
                if code == -1:
                    continue
                if gotID in self.answered or gotID > messageID or gotID == 0:
                    raise ProtocolViolation(f"unexpected final response for messageID {gotID}: {pdu!r}")
                self.answered.add(gotID)
                if gotID == messageID:
                    return code, _diagnostic(pdu)
                raise ProtocolViolation(f"late response for {gotID} while waiting for {messageID}")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("proxy closed the connection")
            self.pending.extend(self.framer.feed(data))

    def bind(self, dn: str, password: str) -> tuple[int, str]:
        return self.call(ber.simpleBindRequest, dn.encode(), password.encode())

    def search(self, base: str, uid: str) -> tuple[int, str]:
        return self.call(searchRequest, base, "uid", uid)

    def close(self) -> None:
        try:
            self.sock.sendall(ber.unbindRequest(self.nextID))
        except OSError:
            pass
        self.sock.close()


def _diagnostic(pdu: bytes) -> str:
    # good enough for assertions: the printable tail of the PDU
    return pdu[-200:].decode("utf-8", "replace")


def now() -> float:
    return time.monotonic()
