# -*- test-case-name: tests.test_health -*-
"""
Active health checks: an LDAP-level probe of every backend of every pool,
every C{health_interval}, deciding L{BackendState.up} with C{health_rise}
and C{health_fall} thresholds.

A probe opens a short-lived connection, optionally binds as the pool's
monitor identity (C{health_bind_dn}/C{health_bind_password}), reads the
rootDSE with a base search, and unbinds.  It succeeds only when every
answer is success (0) within C{health_timeout}.  A backend that accepts TCP
and never answers fails by timeout.  The PDUs are built with L{ber}'s
helpers and answers read at the byte level: no ldaptor on this path.

A backend that closes a connection under a client's operations is not
marked down for that (one client's oversized request can do it, see
L{BackendState.connectionDropped}); it is probed at once instead
(L{HealthService.probeNow}), at most once per C{health_interval} beyond
the regular probes, so that a client repeating it cannot multiply them.

Probes run on the injected reactor (tests pass a
L{twisted.internet.task.Clock} or a memory reactor); L{HealthService} is the
C{twisted.application} service that runs them while the proxy runs.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.backends.connecting import endpointFor
from ldaproute.wire import ber
from ldaproute.wire.pdu import rootDSESearchRequest
from ldaproute.wire.results import readResponse

_BIND_ID = 1
_SEARCH_ID = 2


def _tcp(transport: ITransport) -> ITCPTransport:
    """A probe's transport, which is TCP (or TLS over TCP): it can be aborted."""
    return cast(ITCPTransport, transport)


class _ProbeProtocol(Protocol):
    """Sends the probe's requests and fires C{done} with C{None} or a reason."""

    def __init__(self, bind: tuple[bytes, bytes] | None) -> None:
        self._bind = bind
        self._framer = ber.Framer(1024 * 1024)
        self.done: Deferred[str | None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._bind is not None:
            self.transport.write(ber.simpleBindRequest(_BIND_ID, *self._bind))
        self.transport.write(rootDSESearchRequest(_SEARCH_ID))

    def dataReceived(self, data: bytes) -> None:
        try:
            for pdu in self._framer.feed(data):
                messageID, _, code = readResponse(pdu)[:3]
                if code == -1:
                    continue
                if code != ber.SUCCESS:
                    what = "bind" if messageID == _BIND_ID else "rootDSE search"
                    self._finish(f"{what} answered resultCode {code}")
                    return
                if messageID == _SEARCH_ID:
                    self._finish(None)
                    return
        except ber.FramingError as e:
            self._finish(f"malformed answer: {e}")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finish(f"connection closed before the answer: {reason.getErrorMessage() if reason else ''}")

    def _finish(self, outcome: str | None) -> None:
        if self.done.called:
            return
        self.done.callback(outcome)
        if self.transport is not None and self.transport.connected:  # type: ignore[attr-defined]
            if outcome is None:
                self.transport.write(ber.unbindRequest(3))
                self.transport.loseConnection()
            else:
                _tcp(self.transport).abortConnection()


def probe(reactor: Any, state: BackendState, pool: PoolState) -> Deferred[str | None]:
    """
    Probe one backend; fires with L{None} when healthy, else with a
    sentence saying why not.  Never fails.
    """
    config = pool.pool
    bind = None
    if config.healthBindDN is not None and config.healthBindPassword is not None:
        bind = (config.healthBindDN.encode("utf-8"), config.healthBindPassword.encode("utf-8"))
    protocol = _ProbeProtocol(bind)
    result: Deferred[str | None] = Deferred()

    def timedOut() -> None:
        if not result.called:
            result.callback(f"no answer within health_timeout {config.healthTimeout:g}s")
        if protocol.transport is not None:
            _tcp(protocol.transport).abortConnection()
        connecting.cancel()

    timer = reactor.callLater(config.healthTimeout, timedOut)

    def finished(outcome: str | None) -> None:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(outcome)

    def failed(reason: Failure) -> None:
        finished(f"cannot connect: {reason.getErrorMessage()}")

    endpoint = endpointFor(reactor, state, config.healthTimeout)
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False  # no "Starting factory" line every interval
    connecting = endpoint.connect(factory)
    connecting.addCallbacks(lambda _: protocol.done.addCallback(finished), failed)
    return result


class HealthService(Service):
    """
    Runs the probes of every health-checked pool of the runtime's
    configuration.  L{reconcile} starts and stops per-backend loops to match
    the pools now configured (call it after a reload).
    """

    _log = Logger()

    def __init__(self, runtime: Any, reactor: Any) -> None:
        self._runtime = runtime
        self._reactor = reactor
        self._loops: dict[tuple[str, str], LoopingCall] = {}
        self._probing: set[tuple[str, str]] = set()
        #: when each backend's last on-demand probe started
        self._onDemand: dict[tuple[str, str], float] = {}
        #: the states whose prober is ours
        self._states: dict[tuple[str, str], BackendState] = {}

    def startService(self) -> None:
        super().startService()
        self.reconcile()

    def stopService(self) -> None:
        super().stopService()
        for loop in self._loops.values():
            if loop.running:
                loop.stop()
        self._loops.clear()
        for state in self._states.values():
            state.setProber(None)
        self._states.clear()

    def reconcile(self) -> None:
        """Match the running loops to the pools and backends in force."""
        if not self.running:
            return
        wanted: dict[tuple[str, str], tuple[PoolState, BackendState]] = {}
        for pool in self._runtime.backends.pools.values():
            if not pool.pool.healthCheck:
                continue
            for state in pool.backends:
                wanted[(pool.name, state.name)] = (pool, state)
        for key in list(self._loops):
            if key not in wanted:
                loop = self._loops.pop(key)
                if loop.running:
                    loop.stop()
                self._unwatch(key)
        for key, (pool, state) in wanted.items():
            if key in self._loops:
                if self._states.get(key) is not state:  # replaced by a reload
                    self._unwatch(key)
                    self._watch(key, state)
                continue
            state.checked = True
            self._watch(key, state)
            loop = LoopingCall(self._probeOnce, key)
            loop.clock = self._reactor
            self._loops[key] = loop
            loop.start(pool.pool.healthInterval, now=True)

    def _watch(self, key: tuple[str, str], state: BackendState) -> None:
        self._states[key] = state
        state.setProber(lambda: self.probeNow(key))

    def _unwatch(self, key: tuple[str, str]) -> None:
        state = self._states.pop(key, None)
        self._onDemand.pop(key, None)
        if state is None:
            return
        # a backend in two pools stays watched through the other one
        other = next((k for k, s in self._states.items() if s is state), None)
        if other is None:
            state.setProber(None)
        else:
            self._watch(other, state)

    def probeNow(self, key: tuple[str, str]) -> None:
        """
        Probe the backend C{(pool name, backend name)} now, outside its
        schedule (a connection to it was dropped under a client's
        operations): unless it is not checked, a probe of it is running, or
        an on-demand probe started less than C{health_interval} ago.
        """
        if key not in self._loops or key in self._probing:
            return
        pool = self._runtime.backends.pools.get(key[0])
        if pool is None:
            return
        now = self._reactor.seconds()
        last = self._onDemand.get(key)
        if last is not None and now - last < pool.pool.healthInterval:
            return
        self._onDemand[key] = now
        self._probeOnce(key)

    def _probeOnce(self, key: tuple[str, str]) -> None:
        if key in self._probing:
            return  # the previous probe is still running (timeout > interval)
        poolName, backendName = key
        pool = self._runtime.backends.pools.get(poolName)
        state = None
        if pool is not None:
            state = next((s for s in pool.backends if s.name == backendName), None)
        if pool is None or state is None:
            return
        self._probing.add(key)
        started = self._reactor.seconds()

        def done(reason: str | None) -> None:
            self._probing.discard(key)
            self._runtime.observer.metrics.healthChecked(backendName, reason is None, self._reactor.seconds() - started)
            config = pool.pool
            state.probed(reason is None, reason or "probe succeeded", config.healthRise, config.healthFall, poolName)

        probe(self._reactor, state, pool).addCallback(done)
