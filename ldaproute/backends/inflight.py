# -*- test-case-name: tests.test_connection -*-
"""
The operations in flight on one backend connection: the middle layer of
L{ldaproute.backends.connection.BackendConnection}, between reaching the
backend (L{ldaproute.backends.connecting.Connector}) and carrying bytes.

Operations are kept by upstream messageID with what routes their
responses, counted against the backend while the connection is counted
(C{strategy = least-outstanding} orders by that count), timed out after
C{operation_timeout} and then abandoned upstream (or taken out of the
queue when they never went out), and abandoned on request: binds are
never abandoned (RFC 4511 4.11), and the late responses of an abandoned
operation are dropped.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall

from ldaproute.backends import responses
from ldaproute.backends.connecting import ABANDON_ID, Connector
from ldaproute.wire import ber
from ldaproute.wire.pdu import messageIDOf

__all__ = ["InFlight"]

_ABSENT: Any = object()


class InFlight(Connector):
    """A backend connection's operations in flight (see the module docstring)."""

    # what L{ldaproute.backends.connection.BackendConnection} sets up
    timers: dict[int, IDelayedCall]
    receiver: responses.Receiver
    counted: bool

    def operationStarted(
        self, upstreamID: int, timeout: float | None = None, budget: float = 0.0, entry: Any = None
    ) -> None:
        """
        An operation is on this connection: count it against the backend,
        and abandon it after C{timeout} seconds.  Until the connection is
        ready it may wait C{budget} seconds for a backend to take it
        (L{waitFor}).
        """
        ops = self.ops
        dropped = self.receiver.dropped
        if dropped:
            dropped.discard(upstreamID)
        if upstreamID in ops:
            self.cancelTimer(upstreamID)
        elif self.counted:
            self.backend.inFlight += 1  # type: ignore[union-attr]
        ops[upstreamID] = entry
        if timeout is not None:
            self.timers[upstreamID] = self.reactor.callLater(timeout, self._timedOut, upstreamID, timeout)
        if budget and self.state != "ready":
            self.waitFor(upstreamID, budget)

    def operationEnded(self, upstreamID: int) -> Any:
        """An operation got its final result (or was abandoned); returns its entry."""
        entry = self.ops.pop(upstreamID, _ABSENT)
        if entry is _ABSENT:
            return None
        if self.timers:
            self.cancelTimer(upstreamID)
        if self.waiting:
            self.reconnecting.forget(upstreamID)
        if self.counted:
            self.backend.inFlight -= 1  # type: ignore[union-attr]
        return entry

    def cancelTimer(self, upstreamID: int) -> None:
        timer = self.timers.pop(upstreamID, None)
        if timer is not None and timer.active():
            timer.cancel()

    def abandon(self, upstreamID: int) -> None:
        """Abandon an operation upstream; its late responses are dropped."""
        if upstreamID not in self.ops:
            return
        entry = self.operationEnded(upstreamID)
        self.receiver.drop(upstreamID)
        tag = entry[2] if entry is not None else None
        if tag != ber.BIND_REQUEST and self.state == "ready":  # binds cannot be abandoned (RFC 4511 4.11)
            self._send(ber.abandonRequest(self._ownID(ABANDON_ID), upstreamID))

    def _ownID(self, relayed: int) -> int:
        """The messageID of a request that gets no response (Abandon, Unbind)."""
        return self.allocateID() if self._demux else relayed

    def _timedOut(self, upstreamID: int, timeout: float) -> None:
        self.timers.pop(upstreamID, None)
        if upstreamID not in self.ops or self.state == "closed":
            return
        entry = self.ops[upstreamID]
        if self._protocol is None:
            self._unqueue(upstreamID)  # still connecting
        else:
            self.abandon(upstreamID)
        self.owner.connectionOperationTimedOut(self, upstreamID, entry, timeout)

    def _unqueue(self, upstreamID: int) -> None:
        self.operationEnded(upstreamID)
        self._queue = [pdu for pdu in self._queue if messageIDOf(pdu) != upstreamID]

    def entriesReturned(self, messageID: int) -> int:
        """Search result entries relayed for C{messageID} (counted once)."""
        return self.receiver.entries.pop(messageID, 0)
