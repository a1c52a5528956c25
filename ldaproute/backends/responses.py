# -*- test-case-name: tests.test_connection -*-
"""
What a L{ldaproute.backends.connection.BackendConnection} does with the
backend's bytes.

L{Relay} (session mode): whole PDUs go to the one owner as the backend sent
them, with the final responses they contain; the proxy's own requests'
answers, abandoned operations' late responses and a Notice of Disconnection
are taken out.  L{Demux} (shared mode): each PDU goes to the client link
whose operation it answers, under that client's messageID, in one pass over
the bytes.  L{Opaque}: bytes, untouched (SASL security layer, StartTLS
passthrough).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ldaproute.wire import ber
from ldaproute.wire.pdu import messageIDOf, messageIDSpan

if TYPE_CHECKING:
    from ldaproute.backends.connection import BackendConnection

#: Largest PDU accepted from a backend: a search entry with big binary
#: values is legitimately large; a corrupt length is not.
MAX_BACKEND_PDU_BYTES = 64 * 1024 * 1024

#: Operations whose late responses a relayed connection drops at most: an
#: abandoned operation often never gets a final response that would end
#: its entry (slapd sends none), and the client may abandon many.
MAX_DROPPED = 64

#: Abandoned operations whose messageIDs a demultiplexed connection keeps
#: out of use while clients' requests keep their own messageIDs.
MAX_KEPT_DROPPED = 1024


class Receiver:
    """
    The common surface: C{feed} bytes; C{entries} counts search result
    entries by messageID (relayed connections); C{dropped} holds operations
    abandoned by the proxy whose late responses are dropped.
    """

    def __init__(self, connection: BackendConnection) -> None:
        self._connection = connection
        self.entries: dict[int, int] = {}
        self.dropped: set[int] = set()
        #: whether clients' requests may keep their own messageIDs upstream
        #: (L{ldaproute.backends.securing.Securing.upstreamIDFor})
        self.keepsIDs = True

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def drop(self, messageID: int) -> None:
        """Late responses to C{messageID} are not for anyone any more."""

    def reset(self) -> None:
        """A new transport (or none): forget partial input."""
        self.dropped.clear()
        self.keepsIDs = True


class Relay(Receiver):
    """Session mode: relay whole PDUs as they are."""

    def __init__(self, connection: BackendConnection) -> None:
        super().__init__(connection)
        self._scanner = ber.ResponseScanner(MAX_BACKEND_PDU_BYTES)
        self.entries = self._scanner.entries

    def feed(self, data: bytes) -> None:
        connection = self._connection
        try:
            complete, finals = self._scanner.feed(data)
        except ber.FramingError as e:
            connection.protocolFailed(f"backend sent a malformed response: {e}")
            return
        if not complete:
            return
        notice = None
        scanner = self._scanner
        if connection.internal or self.dropped or scanner.unsolicited:
            scanner.unsolicited = False
            complete, finals, notice = self._filterOwn(complete, finals)
        if complete:
            connection.owner.responsesReceived(connection, complete, finals)
        if notice is not None:
            connection.noticeReceived(notice)

    def drop(self, messageID: int) -> None:
        dropped = self.dropped
        if len(dropped) >= MAX_DROPPED:
            # operations the backend abandoned without a word: forget them
            # (a late response is allowed, RFC 4511 4.11) rather than grow
            dropped.clear()
        dropped.add(messageID)

    def answering(self, messageID: int) -> bool:
        """Whether any response to C{messageID} was relayed (entries, references, intermediates)."""
        return messageID in self.entries or messageID in self._scanner.partial

    def reset(self) -> None:
        super().reset()
        partial = self._scanner.partial
        self._scanner = ber.ResponseScanner(MAX_BACKEND_PDU_BYTES)
        self._scanner.entries = self.entries
        self._scanner.partial = partial

    def _filterOwn(
        self, data: bytes, finals: list[tuple[int, int, int]]
    ) -> tuple[bytes, list[tuple[int, int, int]], bytes | None]:
        """
        Take out answers to the proxy's own requests (StartTLS, bind
        replay), late responses of dropped operations and unsolicited
        notifications, which are about this connection, not the client's.
        """
        internal = self._connection.internal
        dropped = self.dropped
        keep: list[bytes] = []
        keptFinals: list[tuple[int, int, int]] = []
        finalCodes = {messageID: code for messageID, _, code in finals}
        finalTags = {messageID: tag for messageID, tag, _ in finals}
        for pdu in ber.Framer(MAX_BACKEND_PDU_BYTES).feed(data):
            messageID = messageIDOf(pdu)
            answered = internal.get(messageID)
            if answered is not None:
                if messageID in finalCodes:
                    del internal[messageID]
                    answered(finalCodes[messageID])
                continue
            if messageID in dropped:
                # its final ends the dropping, not an entry before it in the same read
                if messageID in finalCodes and pdu[messageIDSpan(pdu)[2]] in ber.FINAL_RESPONSES:
                    dropped.discard(messageID)
                continue
            if messageID == 0:
                # the connection ends here: what came before it is relayed first
                return b"".join(keep), keptFinals, pdu
            keep.append(pdu)
            if messageID in finalCodes:
                keptFinals.append((messageID, finalTags[messageID], finalCodes[messageID]))
        return b"".join(keep), keptFinals, None


class Demux(Receiver):
    """
    Shared mode: the connection's C{ops} map an upstream messageID to
    C{(link, client messageID, request tag, the client's messageID INTEGER
    element)}; each response goes to its link under the client's messageID,
    never decoded: as it came when the request kept the client's messageID
    upstream (L{ldaproute.backends.securing.Securing.upstreamIDFor}; a
    read's PDUs for one link then go in one slice, most often the read
    itself), else rewritten at byte level (the INTEGER and the outer length).
    """

    def __init__(self, connection: BackendConnection) -> None:
        super().__init__(connection)
        self._buffer = b""

    def reset(self) -> None:
        super().reset()
        self._buffer = b""

    def drop(self, messageID: int) -> None:
        """
        An abandoned operation's late responses may still come under
        C{messageID}: no new operation takes it on this connection.  Past
        L{MAX_KEPT_DROPPED} of them, every upstream messageID is allocated
        from beyond all of them instead (they are forgotten).
        """
        dropped = self.dropped
        dropped.add(messageID)
        if len(dropped) > MAX_KEPT_DROPPED:
            self.keepsIDs = False
            self._connection.allocateFrom(max(dropped) + 1)
            dropped.clear()

    def feed(self, data: bytes) -> None:
        connection = self._connection
        buf = self._buffer + data if self._buffer else data
        end = len(buf)
        pos = 0
        ops = connection.ops
        out: dict[Any, list[bytes]] = {}
        finals: dict[Any, list[tuple[int, int, int]]] = {}
        serialEnded = False
        serialID = connection.serialInFlight
        timers = connection.timers
        counted = connection.counted
        backend = connection.backend
        #: PDUs relayed as they are to C{runLink}: C{buf[runStart:runEnd]}
        runLink: Any = None
        runStart = runEnd = 0
        try:
            while end - pos >= 2:
                if buf[pos] != 0x30:
                    raise ber.FramingError("not-ldap", f"backend sent tag 0x{buf[pos]:02x}, not an LDAPMessage")
                first = buf[pos + 1]
                if first < 0x80:
                    bodyStart = pos + 2
                    total = 2 + first
                else:
                    count = first & 0x7F
                    if count == 0 or count > 4:
                        raise ber.FramingError("malformed", "bad BER length from backend")
                    if end - pos < 2 + count:
                        break
                    bodyStart = pos + 2 + count
                    total = 2 + count + int.from_bytes(buf[pos + 2 : bodyStart], "big")
                    if total > MAX_BACKEND_PDU_BYTES:
                        raise ber.FramingError("oversized", f"backend PDU of {total} bytes")
                if end - pos < total:
                    break
                pduEnd = pos + total
                if buf[bodyStart] != 0x02:
                    raise ber.FramingError("malformed", "backend PDU without a messageID")
                idLength = buf[bodyStart + 1]
                idEnd = bodyStart + 2 + idLength
                if not 1 <= idLength <= 4 or idEnd >= pduEnd:
                    raise ber.FramingError("malformed", "backend PDU with a bad messageID")
                upstreamID = int.from_bytes(buf[bodyStart + 2 : idEnd], "big")
                tag = buf[idEnd]
                entry = ops.get(upstreamID)
                if entry is None:
                    if upstreamID == 0:
                        self._buffer = b""
                        if runLink is not None:
                            self._keep(out, runLink, buf[runStart:runEnd])
                        self._deliver(out, finals)
                        connection.noticeReceived(buf[pos:pduEnd])
                        return
                    answered = connection.internal.get(upstreamID)
                    if answered is not None and tag in ber.FINAL_RESPONSES:
                        del connection.internal[upstreamID]
                        answered(ber.resultCodeAt(buf, idEnd, pduEnd))
                    elif tag in ber.FINAL_RESPONSES and self.dropped:
                        self.dropped.discard(upstreamID)  # nothing more can come under it
                    pos = pduEnd
                    continue  # abandoned: dropped
                link, clientID, _, idElement, _ = entry
                if clientID == upstreamID:
                    # the client's own messageID: relayed as it is, in one
                    # slice with the PDUs before it that went to the same
                    # link as they were
                    if runLink is not link or runEnd != pos:
                        if runLink is not None:
                            self._keep(out, runLink, buf[runStart:runEnd])
                        runLink = link
                        runStart = pos
                    runEnd = pduEnd
                else:
                    if runLink is not None:
                        self._keep(out, runLink, buf[runStart:runEnd])
                        runLink = None
                    pieces = out.get(link)
                    if pieces is None:
                        pieces = out[link] = []
                    if len(idElement) == idEnd - bodyStart:
                        # same length: only the INTEGER changes, lengths stay
                        pieces.append(buf[pos:bodyStart])
                        pieces.append(idElement)
                    else:
                        bodyLength = pduEnd - idEnd + len(idElement)
                        if bodyLength < 0x80:
                            pieces.append(bytes((0x30, bodyLength)))
                        else:
                            pieces.append(b"\x30" + ber.encodeLength(bodyLength))
                        pieces.append(idElement)
                    pieces.append(buf[idEnd:pduEnd])
                if tag == ber.SEARCH_RESULT_ENTRY:
                    link.entries[clientID] = link.entries.get(clientID, 0) + 1
                elif tag == ber.SEARCH_RESULT_REFERENCE or tag == ber.INTERMEDIATE_RESPONSE:
                    link.entries.setdefault(clientID, 0)  # part of its answer relayed: no replay
                elif tag in ber.FINAL_RESPONSES:
                    # L{BackendConnection.operationEnded}, inline
                    del ops[upstreamID]
                    if timers:
                        connection.cancelTimer(upstreamID)
                    if counted:
                        backend.inFlight -= 1  # type: ignore[union-attr]
                    if upstreamID == serialID:
                        serialEnded = True
                    code = ber.resultCodeAt(buf, idEnd, pduEnd)
                    link.ended(clientID)
                    linkFinals = finals.get(link)
                    if linkFinals is None:
                        finals[link] = [(clientID, tag, code)]
                    else:
                        linkFinals.append((clientID, tag, code))
                pos = pduEnd
        except ber.FramingError as e:
            self._buffer = b""
            if runLink is not None:
                self._keep(out, runLink, buf[runStart:runEnd])
            self._deliver(out, finals)
            connection.protocolFailed(f"backend sent a malformed response: {e}")
            return
        self._buffer = buf[pos:] if pos < end else b""
        if runLink is not None:
            self._keep(out, runLink, buf[runStart:runEnd])
        if serialEnded and connection.state == "ready":
            connection.serialEnded()
        self._deliver(out, finals)

    @staticmethod
    def _keep(out: dict[Any, list[bytes]], link: Any, data: bytes) -> None:
        pieces = out.get(link)
        if pieces is None:
            out[link] = [data]
        else:
            pieces.append(data)

    def _deliver(self, out: dict[Any, list[bytes]], finals: dict[Any, list[tuple[int, int, int]]]) -> None:
        connection = self._connection
        for link, pieces in out.items():
            link.deliver(connection, b"".join(pieces), finals.get(link, []))


class Opaque(Receiver):
    """After a SASL security layer or a StartTLS passthrough: bytes, untouched."""

    def feed(self, data: bytes) -> None:
        connection = self._connection
        connection.owner.rawReceived(connection, data)
