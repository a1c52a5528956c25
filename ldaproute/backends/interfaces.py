# -*- test-case-name: tests.test_interfaces -*-
"""
The seam between a client connection and its backends.

A client connection (L{ldaproute.listeners.frontend}) holds one link per
pool it uses.  In C{session} mode a link is an exclusive upstream
connection; in C{shared} mode it multiplexes the client's operations over
pooled connections.  Both modes provide L{IBackendLink}, and report to
their owner through L{ILinkOwner}, so that nothing above this module needs
to know which mode is in force.

C{finals} below are C{(messageID, protocolOp tag, resultCode)} triples of
the final responses contained in C{data}, in order.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IBackendLink(Interface):
    """One client's path to one pool."""

    pool = Attribute("The L{ldaproute.backends.pool.PoolState} this link serves.")
    backend = Attribute(
        "The L{ldaproute.backends.pool.BackendState} this link is connected to, "
        "or L{None} (not connected yet, or shared mode, where operations spread)."
    )
    boundVersion = Attribute(
        "The session identity version this link carries (see L{ldaproute.core.session.Session}); "
        "the owner compares it with the session's to know when to replay a bind."
    )
    responseTransformer = Attribute(
        "L{None}, or a callable taking one whole response PDU and returning the bytes to "
        "relay instead (set by the owner for links that carry rewritten operations)."
    )
    transport = Attribute("The upstream transport, for flow control, or L{None}.")

    def send(pdu: bytes) -> None:
        """Send one whole request PDU (queued while connecting)."""

    def operationStarted(messageID: int, timeout: float | None = None, budget: float = 0.0) -> None:
        """
        An operation the client sent now waits for its final response
        (abandoned after C{timeout}; waiting at most C{budget} seconds for
        a backend to take it, see C{retry_budget}).
        """

    def progressOf(messageID: int) -> int:
        """
        How far an operation got before the link was lost, for the replay
        rule (L{ldaproute.core.replay}): L{ldaproute.core.replay.UNSENT},
        L{ldaproute.core.replay.SENT} (no response reached the client) or
        L{ldaproute.core.replay.ANSWERING} (part of its answer did).
        """

    def operationEnded(messageID: int) -> None:
        """The client's operation got its final response (or was answered by the proxy)."""

    def abandon(messageID: int, pdu: bytes) -> None:
        """
        The client abandoned C{messageID} with the AbandonRequest C{pdu}:
        send it after everything the client sent before it (queued or
        not), and relay none of that operation's late responses.
        """

    def entriesReturned(messageID: int) -> int:
        """How many search result entries were relayed for the operation so far."""

    def rebind(credentials: tuple[bytes, bytes]) -> None:
        """Replay the session's simple bind C{(dn, password)} before what comes next."""

    def pauseReading() -> None:
        """Stop delivering responses (the client cannot keep up)."""

    def resumeReading() -> None:
        """Deliver responses again."""

    def goOpaque() -> None:
        """From now on relay raw bytes both ways (SASL security layer, StartTLS passthrough)."""

    def writeRaw(data: bytes) -> None:
        """Write bytes upstream as they are (opaque mode only)."""

    def close(unbind: bool = False, abort: bool = False) -> None:
        """Close the link: politely with an Unbind, or abort the transport."""


class ILinkOwner(Interface):
    """What a link reports to: the client connection that holds it."""

    session = Attribute(
        "The client's L{ldaproute.core.session.Session}: shared mode asserts its current "
        "C{identity} on the client's operations (Proxied Authorization)."
    )
    transport = Attribute("The client's transport (shared mode pauses it while a backend pushes back).")

    def linkReceived(link: IBackendLink, data: bytes, finals: list[tuple[int, int, int]], message: str = "") -> None:
        """
        Complete response PDUs for the client, and the operations they end;
        C{message} is the proxy's own diagnostic when the link answered in
        the backend's place (the access log and status page show it).
        """

    def linkLost(link: IBackendLink, reason: str, resultCode: int) -> None:
        """The link cannot carry operations any more."""

    def linkOperationTimedOut(link: IBackendLink, messageID: int, reason: str) -> None:
        """An operation exceeded its time limit and was abandoned upstream."""

    def linkWaitedOut(link: IBackendLink, messageID: int, reason: str, resultCode: int) -> None:
        """
        An operation's retry budget was spent while no backend took it
        (C{resultCode}: unavailable, or busy when every backend is full).
        """

    def linkReplayFailed(link: IBackendLink, resultCode: int) -> None:
        """The bind replayed for the client was refused by the backend."""

    def linkReceivedRaw(link: IBackendLink, data: bytes) -> None:
        """Bytes from the backend of an opaque link, to relay as they are."""

    def linkConnected(link: IBackendLink) -> None:
        """The link's transport exists now (for flow control)."""

    def linkTLSHandshake(link: IBackendLink, outcome: str) -> None:
        """A TLS handshake towards the backend ended (C{success}, C{failure})."""


class IConnectionOwner(Interface):
    """
    What a L{ldaproute.backends.connection.BackendConnection} reports to: a
    session link (the connection is its own) or the shared pool (the
    connection carries many clients' operations).
    """

    def connectionAttempt(connection: object, backend: object) -> None:
        """The connection tries C{backend} (a L{ldaproute.backends.pool.BackendState}) now."""

    def connectionMadeTo(connection: object) -> None:
        """The connection's transport exists now (for flow control); not secured yet."""

    def connectionReady(connection: object) -> None:
        """The connection is secured and bound as asked: it carries operations now."""

    def connectionBindRefused(connection: object, resultCode: int) -> None:
        """
        The bind the connection carried for its owner was refused; unless
        the owner fails the connection, it goes on, unbound.
        """

    def connectionTLSHandshake(connection: object, outcome: str) -> None:
        """A TLS handshake towards the backend ended (C{success}, C{failure})."""

    def connectionLost(connection: object, reason: str, resultCode: int, operations: dict[int, object]) -> None:
        """
        The connection cannot carry operations any more (every candidate
        failed, the backend dropped or said goodbye, or sent garbage);
        C{operations} are those it carried, by upstream messageID.  Not
        called when the owner closed it.
        """

    def connectionOperationTimedOut(connection: object, messageID: int, operation: object, timeout: float) -> None:
        """An operation exceeded C{timeout} and was abandoned upstream (or taken out of the queue)."""

    def connectionWaitedOut(connection: object, messageID: int, operation: object, reason: str, resultCode: int) -> None:
        """
        An operation waited for the connection through its retry budget and
        no backend took it: it is out of the queue, answer it.
        """

    def connectionWritable(connection: object) -> None:
        """The backend's socket buffer drained (connections that are their transport's producer)."""

    def responsesReceived(connection: object, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        """Whole response PDUs of a relayed connection, and the operations they end."""

    def rawReceived(connection: object, data: bytes) -> None:
        """Bytes of an opaque connection, to relay as they are."""
