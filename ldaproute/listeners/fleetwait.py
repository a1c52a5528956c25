# -*- test-case-name: tests.test_fleet_frontend -*-
"""
A client connection's two waits for a shared throttle store
(L{ldaproute.fleet.throttle}), only when its listener's bind throttle is
shared with other processes:

  - a bind waits for the fleet's latest counts of its address and DN
    before the session decides on it, and whatever the client sends after
    it is parked behind it (the client's reading is paused meanwhile);
  - a failed bind's answer waits until the fleet has counted the failure,
    so that a next guess on another process or replica meets the shared
    count; what the links send meanwhile queues behind it.

Each wait lasts at most L{FLEET_WAIT}.  The session (pure) decides; this
holds the Deferreds and timers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ldaproute.backends.interfaces import IBackendLink
from ldaproute.core import limits
from ldaproute.core.policy import BindThrottle
from ldaproute.core.session import Session
from ldaproute.wire import ber

#: The longest a bind waits for the fleet's counts before it is decided on
#: this process's own, and a failed bind's answer for the fleet to count
#: the failure (Redis, or the worker group), seconds.  One store round
#: trip is typical.
FLEET_WAIT = 0.1

#: what a link delivered: C{(link, data, finals)}
Delivery = tuple[IBackendLink, bytes, list[tuple[int, int, int]]]


class FleetWaits:
    """
    @ivar parked: requests queued behind a bind that waits for the fleet's
        counts, or L{None}.
    @param request: handles one request PDU (the connection's).
    @param deliver: relays what a link delivered (the connection's).
    @param closing: whether the connection is closing.
    @param protocolError: ends the connection for a malformed request.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        session: Session[IBackendLink],
        throttle: BindThrottle,
        gate: limits.ReadGate,
        request: Callable[[bytes], None],
        deliver: Callable[[IBackendLink, bytes, list[tuple[int, int, int]]], None],
        closing: Callable[[], bool],
        protocolError: Callable[[ber.FramingError], None],
    ) -> None:
        self._reactor = reactor
        self._session = session
        self._throttle = throttle
        self._gate = gate
        self._request = request
        self._deliver = deliver
        self._closing = closing
        self._protocolError = protocolError
        self.parked: list[bytes] | None = None
        self._held: list[Delivery] | None = None
        self._releasing = False

    # --- a bind waits for the fleet's counts --------------------------

    def ask(self, pdu: bytes, name: bytes) -> bool:
        """
        Park the bind C{pdu} (and whatever the client sends after it) until
        the fleet's latest counts for its address and DN are in, at most
        L{FLEET_WAIT}; then the session decides again.  C{False} when
        there is nothing to wait for (store unreachable).
        """
        answer = self._throttle.askFleet(self._session.address, name)
        if not isinstance(answer, Deferred) or answer.called:
            return False
        self.parked = []
        self._gate.pause("fleet")
        timer = self._reactor.callLater(FLEET_WAIT, self._answered, pdu, None)
        answer.addBoth(lambda _: self._answered(pdu, timer))
        return True

    def _answered(self, pdu: bytes, timer: IDelayedCall | None) -> None:
        if self.parked is None or self._closing():
            return  # the timer or the answer came first, or the client left
        if timer is not None and timer.active():
            timer.cancel()
        parked, self.parked = self.parked, None
        self._gate.resume("fleet")
        session = self._session
        session.fleetChecked = True
        try:
            for index, next in enumerate([pdu, *parked]):
                if self._closing():
                    return
                if self.parked is not None:  # parked again by a later bind
                    self.parked.extend(parked[index - 1 :])
                    return
                self._request(next)
                session.fleetChecked = False  # only ever for the bind that waited
        except ber.FramingError as e:
            self._protocolError(e)

    # --- a failed bind's answer waits for the fleet to count it --------

    def hold(self, link: IBackendLink, data: bytes, finals: list[tuple[int, int, int]]) -> bool:
        """
        What C{link} delivered, before it is relayed: C{True} when it waits
        (behind a failed bind the fleet has not counted yet).
        """
        if self._held is not None:
            self._held.append((link, data, finals))
            return True
        if finals and not self._releasing:
            acknowledged: list[Deferred[Any]] = [
                ack
                for ack in self._session.countBindFailures(finals)
                if isinstance(ack, Deferred) and not ack.called
            ]
            if acknowledged:
                self._held = [(link, data, finals)]
                timer = self._reactor.callLater(FLEET_WAIT, self._release)
                gatherResults(acknowledged, consumeErrors=True).addBoth(lambda _: self._release(timer))
                return True
        return False

    def _release(self, timer: IDelayedCall | None = None) -> None:
        held, self._held = self._held, None
        if timer is not None and timer.active():
            timer.cancel()
        if held is None or self._closing():
            return
        first, *rest = held
        self._releasing = True  # its failures are counted already
        try:
            self._deliver(*first)
        finally:
            self._releasing = False
        for later in rest:  # may hold again; what follows queues behind it
            self._deliver(*later)
