# -*- test-case-name: tests.test_sequences -*-
"""
Stateful sequences in shared mode: what they are, when they start and end.

A directory server keeps some state per connection, not per operation:
slapd holds one paged-results sequence per connection (a second client's
paged search on the same connection invalidates the first one's cookie:
53 "paged results cookie is invalid or old"), and its sssvlv overlay keeps
sort and virtual-list-view contexts per connection.  Shared mode therefore
gives each such sequence a backend connection of its own
(L{ldaproute.backends.sharedpool.SharedPool.claim}), from its first request

  - paged results: until a page comes back with an empty cookie (the last
    page, an error, or the answer to a zero-size page, which is how a
    client gives a sequence up), the client abandons a page, unbinds or
    disconnects, or the sequence sits idle past C{paged_idle_timeout};
  - virtual list view: until the client unbinds or disconnects, abandons
    it, a request of the view fails, or it sits idle past
    C{paged_idle_timeout} (the view has no last page);
  - server-side sort alone: for the one search it sorts.

Other, stateless operations still share that connection.  This module is
the pure part: classifying a request, and reading the cookie that ends or
continues a sequence from the responses; the link
(L{ldaproute.backends.shared.SharedLink}) does the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ldaproute.wire import ber
from ldaproute.wire.controls import (
    PAGED_RESULTS_OID,
    SORT_REQUEST_OID,
    VLV_REQUEST_OID,
    controlValue,
    pagedControl,
    pagedValue,
)
from ldaproute.wire.pdu import opSpan

if TYPE_CHECKING:
    from ldaproute.backends.connection import BackendConnection

PAGED = "paged"
VLV = "vlv"
SORT = "sort"


def mayBeStateful(controls: bytes) -> bool:
    """
    Whether a search's controls (the bytes after its protocolOp) may hold
    a stateful control: a substring test, cheap enough for every search.
    """
    return PAGED_RESULTS_OID in controls or SORT_REQUEST_OID in controls or VLV_REQUEST_OID in controls


def classify(controls: bytes) -> tuple[str, int, bytes] | None:
    """
    C{(kind, page size, cookie)} of a search request that starts or
    continues a stateful sequence (size and cookie only for L{PAGED}), or
    L{None}.  A VLV search that is also sorted (as VLV requires) is a
    L{VLV} sequence; a paged and sorted one is L{PAGED}.

    @raise ber.FramingError: a malformed control.
    """
    if VLV_REQUEST_OID in controls and controlValue(controls, VLV_REQUEST_OID) is not None:
        return (VLV, 0, b"")
    if PAGED_RESULTS_OID in controls:
        value = controlValue(controls, PAGED_RESULTS_OID)
        if value is not None:
            size, cookie = pagedValue(value)
            return (PAGED, size, cookie)
    if SORT_REQUEST_OID in controls and controlValue(controls, SORT_REQUEST_OID) is not None:
        return (SORT, 0, b"")
    return None


def doneCookie(data: bytes, clientID: int) -> bytes:
    """
    The paged-results cookie of the SearchResultDone for C{clientID} among
    the whole response PDUs C{data} (C{b""}: none, the sequence is over).
    """
    pos = 0
    end = len(data)
    while pos < end:
        _, _, stop = ber.readTLV(data, pos, end)
        pdu = data[pos:stop]
        messageID, opStart, opEnd = opSpan(pdu)
        if messageID == clientID and pdu[opStart] == ber.SEARCH_RESULT_DONE:
            value = controlValue(pdu[opEnd:], PAGED_RESULTS_OID)
            return pagedValue(value)[1] if value is not None else b""
        pos = stop
    return b""


#: a page of a sequence whose connection was lost meanwhile
LOST = "the backend connection that held this paged or virtual list view sequence was lost: start it again"


def unknownCookie(idleTimeout: float) -> str:
    """The diagnostic for a page of a sequence the link does not hold."""
    return (
        "paged results cookie is invalid or old: the sequence ended, or sat idle longer than "
        f"the paged_idle_timeout of {idleTimeout:g}s"
    )


def busy(pool: str, timeout: float) -> str:
    """The diagnostic for a new sequence that found no connection in time."""
    return (
        f"every connection to pool {pool!r} held a paged, sorted or virtual list view search "
        f"for {timeout:g}s and no backend could take another (max_connections): try again later"
    )


def endedSequenceDone(messageID: int) -> bytes:
    """
    The answer to a zero-size page of a sequence the proxy already ended
    (the client gives up what is given up already): success, empty cookie.
    """
    result = ber.tlv(ber.ENUMERATED, b"\x00") + ber.tlv(ber.OCTET_STRING, b"") + ber.tlv(ber.OCTET_STRING, b"")
    return ber.message(
        messageID, ber.tlv(ber.SEARCH_RESULT_DONE, result), ber.tlv(ber.CONTROLS_TAG, pagedControl(0, b""))
    )


class Sequence:
    """
    One stateful sequence of one client, and the connection it holds
    exclusively (L{None} once it ended).

    @ivar messageID: the client messageID of its request in flight, or
        L{None} between requests.
    @ivar cookie: the last cookie a page of a L{PAGED} sequence returned.
    @ivar idle: the C{paged_idle_timeout} timer while no request is in flight.
    """

    __slots__ = ("kind", "connection", "messageID", "cookie", "idle")

    def __init__(self, kind: str, connection: BackendConnection) -> None:
        self.kind = kind
        self.connection: BackendConnection | None = connection
        self.messageID: int | None = None
        self.cookie = b""
        self.idle: IDelayedCall | None = None

    def stopIdle(self) -> None:
        idle, self.idle = self.idle, None
        if idle is not None and idle.active():
            idle.cancel()


class SequenceBook:
    """
    One client link's stateful sequences: which connection each holds, by
    the request in flight or, for paged ones between pages, by the last
    cookie; the client's one virtual list view; their idle timers.  Ending
    a sequence gives its connection back to the pool (C{release}).
    """

    def __init__(self, release: Callable[[BackendConnection], None], reactor: IReactorTime, idleTimeout: float) -> None:
        self._release = release
        self._reactor = reactor
        self.idleTimeout = idleTimeout
        #: by the client messageID of the request in flight
        self.inFlight: dict[int, Sequence] = {}
        self._paged: dict[bytes, Sequence] = {}
        self._vlv: Sequence | None = None

    def continued(self, kind: str, cookie: bytes) -> Sequence | None:
        """
        The sequence a request continues: a paged one by its cookie (taken
        out of the idle ones), the client's view; L{None} if none.
        """
        if kind == PAGED:
            return self._paged.pop(cookie, None)
        if kind == VLV:
            return self._vlv
        return None

    def start(self, kind: str, connection: BackendConnection) -> Sequence:
        """A new sequence, holding C{connection} (a new view ends the old one)."""
        sequence = Sequence(kind, connection)
        if kind == VLV:
            if self._vlv is not None:
                self.end(self._vlv)
            self._vlv = sequence
        return sequence

    def sent(self, sequence: Sequence, messageID: int) -> None:
        """A request of C{sequence} went out as C{messageID}."""
        sequence.stopIdle()
        self.inFlight[messageID] = sequence
        sequence.messageID = messageID

    def answered(self, clientID: int, data: bytes, resultCode: int) -> None:
        """
        The final response to C{clientID} (among C{data}) arrived: the
        sequence ends, or waits for its next request, idle.
        """
        sequence = self.inFlight.pop(clientID, None)
        if sequence is None:
            return
        sequence.messageID = None
        if sequence.kind == PAGED:
            cookie = b""
            if resultCode == ber.SUCCESS:
                try:
                    cookie = doneCookie(data, clientID)
                except ber.FramingError:
                    cookie = b""
            if cookie:
                sequence.cookie = cookie
                self._paged[cookie] = sequence
                self._idleFrom(sequence)
                return
        elif sequence.kind == VLV and resultCode == ber.SUCCESS:
            self._idleFrom(sequence)
            return
        self.end(sequence)

    def endFor(self, clientID: int) -> None:
        """The request C{clientID} failed, timed out or was abandoned: its sequence is over."""
        sequence = self.inFlight.get(clientID)
        if sequence is not None:
            self.end(sequence)

    def end(self, sequence: Sequence) -> None:
        """C{sequence} is over: its connection goes back to the pool."""
        sequence.stopIdle()
        if sequence.messageID is not None:
            self.inFlight.pop(sequence.messageID, None)
            sequence.messageID = None
        if sequence.cookie and self._paged.get(sequence.cookie) is sequence:
            del self._paged[sequence.cookie]
        if self._vlv is sequence:
            self._vlv = None
        connection, sequence.connection = sequence.connection, None
        if connection is not None:
            self._release(connection)

    def endAll(self) -> None:
        """The client left or unbound."""
        held = set(self.inFlight.values()) | set(self._paged.values())
        if self._vlv is not None:
            held.add(self._vlv)
        for sequence in held:
            self.end(sequence)

    def _idleFrom(self, sequence: Sequence) -> None:
        sequence.idle = self._reactor.callLater(self.idleTimeout, self._idledOut, sequence)

    def _idledOut(self, sequence: Sequence) -> None:
        sequence.idle = None
        if sequence.messageID is None:
            self.end(sequence)
