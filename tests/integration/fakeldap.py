"""
A hostile LDAP backend on a raw socket, for fault tests: a thread that
accepts connections and misbehaves according to the base DN of each search
(C{ou=MODE,dc=fake}), answering binds and everything else politely.  It
records what happened (abandons seen, connections closed) so tests can
check the proxy cleaned up.
"""

from __future__ import annotations

import socket
import threading
import time

from ldaproute.wire import ber
from tests import pdus

SUFFIX = "dc=fake"


class FakeLDAPServer:
    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.events: list[tuple[str, int]] = []
        self.open = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def record(self, event: str, messageID: int = 0) -> None:
        with self._lock:
            self.events.append((event, messageID))

    def waitFor(self, event: tuple[str, int], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while event not in self.events:
            if time.monotonic() > deadline:
                raise AssertionError(f"{event} not seen; events: {self.events}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.open += 1
        framer = ber.Framer(1 << 24)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                for pdu in framer.feed(data):
                    if not self._answer(conn, pdu):
                        return
        except OSError:
            pass
        finally:
            with self._lock:
                self.open -= 1
            self.record("closed")
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, conn: socket.socket, pdu: bytes) -> bool:
        """Answer one request; False to close the connection."""
        envelope = ber.Envelope.fromBytes(pdu)
        messageID = envelope.messageID
        if envelope.opTag == ber.ABANDON_REQUEST:
            self.record("abandon", envelope.abandonedID(pdu))
            return True
        if envelope.opTag == ber.UNBIND_REQUEST:
            self.record("unbind")
            return False
        if envelope.opTag != ber.SEARCH_REQUEST:
            answer = ber.resultFor(envelope, 0, "")
            if answer:
                conn.sendall(answer)
            return True
        base = (envelope.targetDN(pdu) or b"").decode()
        mode = base.split(",")[0].partition("=")[2]
        self.record(mode, messageID)
        entry = pdus.searchEntry(f"cn=e,{base}", messageID, [("description", ["x" * 100])])
        done = pdus.searchDone(messageID)
        if mode == "garbage":
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        elif mode == "unknownid":
            conn.sendall(pdus.searchEntry("cn=stray", messageID + 1000) + pdus.searchDone(messageID + 1000) + entry + done)
        elif mode == "oversized":
            conn.sendall(b"\x30\x84\x05\x00\x00\x00\x02\x01" + bytes((messageID & 0x7F,)) + b"\x64")
        elif mode == "midentry":
            conn.sendall(entry + entry[: len(entry) // 2])
            time.sleep(0.05)
            return False
        elif mode == "stall":
            conn.sendall(entry)
        elif mode == "notice":
            conn.sendall(ber.noticeOfDisconnection(ber.UNAVAILABLE, "going away"))
        elif mode == "negativeid":
            conn.sendall(b"\x30\x08\x02\x01\xff\x65\x03\x0a\x01\x00")
        else:
            conn.sendall(entry + done)
        return True
