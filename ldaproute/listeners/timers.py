# -*- test-case-name: tests.test_frontend -*-
"""
The timers of one client connection: C{idle_timeout} (a connection with
nothing outstanding and nothing said closes) and C{pdu_timeout} (a PDU
once started must be completed in time: the slow-loris defence).

They only schedule; what a timeout means is the connection's to decide,
through the callbacks it passes in.  Everything takes the reactor, so
tests drive time with a C{Clock}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class ClientTimers:
    """
    @ivar idle: the idle timer running, or L{None}; the connection resets
        it on every read (kept as an attribute: that is the hot path).
    @ivar pdu: the PDU timer running, or L{None}.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        idleTimeout: float | None,
        pduTimeout: float | None,
        idled: Callable[[], None],
        pduTimedOut: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self.idleTimeout = idleTimeout
        self._pduTimeout = pduTimeout
        self._idled = idled
        self._pduTimedOut = pduTimedOut
        self.idle: IDelayedCall | None = None
        self.pdu: IDelayedCall | None = None

    def startIdle(self) -> None:
        """(Re)start the idle timer, if the listener has one."""
        if self.idleTimeout is not None:
            self.idle = self._reactor.callLater(self.idleTimeout, self._idleFired)

    def _idleFired(self) -> None:
        self.idle = None
        self._idled()

    def framed(self, buffered: int, completed: bool) -> None:
        """
        The framer holds C{buffered} bytes of an unfinished PDU after a read
        that C{completed} at least one PDU (or not): start, restart or stop
        the PDU timer.
        """
        timeout = self._pduTimeout
        if timeout is None:
            return
        if buffered == 0:
            self.cancelPDU()
        elif self.pdu is None:
            self.pdu = self._reactor.callLater(timeout, self._pduFired)
        elif completed:
            self.pdu.reset(timeout)

    def _pduFired(self) -> None:
        self.pdu = None
        self._pduTimedOut()

    def cancelPDU(self) -> None:
        timer, self.pdu = self.pdu, None
        if timer is not None and timer.active():
            timer.cancel()

    def cancel(self) -> None:
        """Stop both timers: the connection is gone."""
        self.cancelPDU()
        timer, self.idle = self.idle, None
        if timer is not None and timer.active():
            timer.cancel()
