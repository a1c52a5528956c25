# -*- test-case-name: tests.test_frontend -*-
"""
Riding out a backend's absence for one connection (C{retry_budget}).

When no candidate of a pool takes a connection while operations wait for
it, the connection (L{ldaproute.backends.connecting.Connector}) does not
give up: it goes through the candidates again after a pause that starts at
L{FIRST_BACKOFF} and doubles up to the pool's C{retry_backoff_max}.
L{Reconnecting} keeps the books of that: which operations wait and since
when, the timer of each one's budget, the rounds and their pause, the wait
times the pool's L{ldaproute.backends.pool.PoolFaults} count, and the two
events an operator sees per sequence (it began; it was served or given up),
never one per attempt.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ldaproute.backends.pool import PoolState

#: the first pause between reconnect rounds, seconds (then doubling)
FIRST_BACKOFF = 0.01


class Reconnecting:
    """
    The waiting operations and reconnect rounds of one connection.

    @ivar waiting: upstream messageID -> (when it began waiting, the timer
        of its budget); the same dict for the connection's life, so that
        its holder may keep a reference for a cheap emptiness test.
    @ivar rounds: reconnect rounds of the sequence in progress (0: none).
    @ivar lastRounds: the rounds the last sequence took before it was
        served (0: it was not, or there was none).
    """

    _log = Logger()

    def __init__(self, reactor: IReactorTime, pool: PoolState, peer: str) -> None:
        self._reactor = reactor
        self._pool = pool
        self._peer = peer
        self.waiting: dict[int, tuple[float, IDelayedCall]] = {}
        self.rounds = 0
        self.lastRounds = 0
        self._started = 0.0
        self._backoff = 0.0
        self._call: IDelayedCall | None = None

    def wait(self, upstreamID: int, budget: float, spent: Callable[[int, float], None]) -> None:
        """An operation waits, C{budget} seconds at most; then C{spent(upstreamID, budget)}."""
        self.forget(upstreamID)
        self.waiting[upstreamID] = (self._reactor.seconds(), self._reactor.callLater(budget, spent, upstreamID, budget))

    def forget(self, upstreamID: int) -> tuple[float, IDelayedCall] | None:
        """The operation no longer waits (ended, abandoned, budget spent): what it was."""
        waited = self.waiting.pop(upstreamID, None)
        if waited is not None and waited[1].active():
            waited[1].cancel()
        return waited

    def spent(self, waited: tuple[float, IDelayedCall] | None) -> None:
        """An operation's budget ran out: counted, with how long it waited."""
        faults = self._pool.faults
        faults.budgetSpent += 1
        if waited is not None:
            faults.wait(self._reactor.seconds() - waited[0])

    def later(self, retry: Callable[[], None], reason: str) -> None:
        """Every candidate failed (C{reason}): C{retry} after the next pause."""
        pool = self._pool.pool
        if not self.rounds:
            self._started = self._reactor.seconds()
            self._log.warn(
                "No backend of pool {pool} takes a connection ({reason}); {waiting} operation(s) wait up to "
                "retry_budget {budget:g}s while the proxy reconnects",
                pool=pool.name, reason=reason, waiting=len(self.waiting), budget=pool.retryBudget, peer=self._peer,
            )  # fmt: skip
        self.rounds += 1
        self._backoff = min(self._backoff * 2 or FIRST_BACKOFF, pool.retryBackoffMax)
        self._call = self._reactor.callLater(self._backoff, self._fire, retry)

    def _fire(self, retry: Callable[[], None]) -> None:
        self._call = None
        retry()

    def served(self, backend: str) -> None:
        """The connection is ready: the waiting operations go out (their waits counted when rounds ran)."""
        now = self._reactor.seconds()
        faults = self._pool.faults
        for since, timer in self.waiting.values():
            if timer.active():
                timer.cancel()
            if self.rounds:
                faults.wait(now - since)
        self.waiting.clear()
        if self.rounds:
            self._ended(f"reconnected to backend {backend}", backend)
            self.lastRounds, self.rounds, self._backoff = self.rounds, 0, 0.0

    def gaveUp(self) -> None:
        """Nothing waits any more and no backend took the connection: the sequence ends."""
        if self.rounds:
            self._ended("gave up reconnecting", None)
        self.lastRounds, self.rounds, self._backoff = 0, 0, 0.0

    def _ended(self, outcome: str, backend: str | None) -> None:
        self._log.info(
            "Pool {pool}: {outcome} after {rounds} reconnect round(s) in {seconds:.3f}s",
            pool=self._pool.name, outcome=outcome, backend=backend, rounds=self.rounds,
            seconds=self._reactor.seconds() - self._started, peer=self._peer,
        )  # fmt: skip

    def stop(self) -> None:
        """The connection is closed or failed: no more rounds, no budget timers."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for _, timer in self.waiting.values():
            if timer.active():
                timer.cancel()
        self.waiting.clear()
