# -*- test-case-name: tests.test_lifecycle -*-
"""
The process's life: reload on SIGHUP, drain on shutdown, worker processes.

L{ProxyService} is the top service that C{makeService} returns.  Stopping
it (SIGTERM or SIGINT under twistd) drains: C{/readyz} turns unready, the
listeners close, each client connection is sent a Notice of Disconnection
as soon as it has no operation in flight, and when C{drain_timeout} runs
out the remaining ones get it too; then the metrics site stops and the
process exits 0.

SIGUSR1 reopens the access log file (after log rotation); SIGHUP does too.

L{ProxyService.reload} (SIGHUP) reads routes.ini again: a valid file takes
effect for new operations, an invalid one is refused with a log event and
the running configuration stays.  Changes to what was bound at start-up
(listeners, the metrics endpoint, workers) are refused too: they need a
restart; C{log_format} is read at start-up only.

With C{workers = N}, the first process (worker 0) starts N-1 more
processes running the same file with C{--worker-index K}; every worker
binds the listeners with C{SO_REUSEPORT} and the kernel spreads
connections between them.  Worker 0 serves one metrics endpoint for the
group (L{ldaproute.fleet.group}); with C{metrics_per_worker = on} each
worker serves its own on the configured port plus its index.  A reload of
worker 0 (SIGHUP, or C{watch_config}) reaches the workers only once worker
0 has accepted the new file.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, Logger, jsonFileLogObserver
from twisted.python.failure import Failure
from twisted.protocols.haproxy import proxyEndpoint
from zope.interface import implementer

from ldaproute.config import Config, ConfigError
from ldaproute.ops.healthsite import Readiness

if TYPE_CHECKING:  # the runtime is above this layer: named for annotations only
    from ldaproute.runtime import Runtime

#: How often the drain looks for connections that became idle, seconds.
DRAIN_POLL = 0.05
#: How long the drain waits for noticed connections to close, seconds.
CLOSE_WAIT = 2.0
#: Restarting a worker that died: the first delay, and the longest one for a
#: worker that keeps dying within RESTART_QUICK seconds of its start.
RESTART_DELAY = 0.5
RESTART_MAX = 30.0
RESTART_QUICK = 10.0

_RESTART_ONLY = (
    ("listeners", "listeners"),
    ("metrics", "metrics"),
    ("workers", "workers"),
    ("cldapEndpoints", "cldap"),
    ("throttleStore", "throttle_store"),
    ("throttleStoreCAFile", "throttle_store_ca_file"),
    ("throttleStorePassword", "throttle_store_password_file"),
    ("metricsPerWorker", "metrics_per_worker"),
    ("watchConfig", "watch_config"),
)


def restartOnlyChanges(old: Config, new: Config) -> list[str]:
    """The keys whose change a reload cannot apply."""
    return [key for attribute, key in _RESTART_ONLY if getattr(old, attribute) != getattr(new, attribute)]


class ProxyService(MultiService):
    """
    The whole proxy: listener services, the metrics site, worker processes.

    @ivar runtime: the configuration in force.
    @ivar readiness: what C{/readyz} answers.
    """

    _log = Logger()

    def __init__(self, runtime: Runtime, reactor: Any, installSignals: bool = True) -> None:
        super().__init__()
        self.runtime = runtime
        self._reactor = reactor
        self._installSignals = installSignals
        self.readiness = Readiness(runtime, lambda: bool(self.running) and not self.readiness.draining)
        self.workers: WorkerSupervisor | None = None
        self._previousHUP: Any = None
        self._previousUSR1: Any = None

    # --- starting ---------------------------------------------------------

    def setServiceParent(self, parent: Any) -> None:
        """Under twistd, choose the log observer (C{log_format = json})."""
        super().setServiceParent(parent)
        if self.runtime.config.logFormat == "json" and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, jsonLogObserver())

    def startService(self) -> None:
        super().startService()
        self.runtime.observer.metrics.configLoaded.set(self._reactor.seconds())
        if self._installSignals:
            self._previousHUP = signal.signal(signal.SIGHUP, self._onHUP)
            self._previousUSR1 = signal.signal(signal.SIGUSR1, self._onUSR1)
            self._reactor.callWhenRunning(self._takeSIGTERM)

    def _onHUP(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)

    def _onUSR1(self, signum: int, frame: Any) -> None:
        """Log rotation: the access log file is opened again."""
        self._reactor.callFromThread(self.runtime.observer.reopenAccessLog)

    def _takeSIGTERM(self) -> None:
        """
        SIGTERM is the orderly way out (Kubernetes, systemd): stop, which
        drains, and exit 0, rather than Twisted's re-raised signal.
        """
        signal.signal(signal.SIGTERM, self._onTERM)

    def _onTERM(self, signum: int, frame: Any) -> None:
        self._log.info("Received SIGTERM: draining, then exiting")
        self._reactor.callFromThread(self._reactor.stop)

    # --- reload -----------------------------------------------------------

    def reload(self) -> bool:
        """Read routes.ini again; returns whether the new file is in force."""
        old = self.runtime.config
        metrics = self.runtime.observer.metrics
        now = self._reactor.seconds()
        self.runtime.observer.reopenAccessLog()  # SIGHUP also follows log rotation
        try:
            new = Config.fromFile(old.path)
        except ConfigError as e:
            self._log.error(
                "Reload refused, the running configuration stays: {reason}", reason=str(e), path=old.path
            )
            metrics.reloaded("invalid", now)
            return False
        new = attrs.evolve(new, logFormat=old.logFormat)  # chosen at start-up only
        changed = restartOnlyChanges(old, new)
        if changed:
            self._log.error(
                "Reload refused, the running configuration stays: {keys} changed, which needs a restart",
                keys=", ".join(changed),
                path=old.path,
            )
            metrics.reloaded("refused", now)
            return False
        self.runtime.apply(new)
        self._reconcile()
        metrics.reloaded("success", now)
        if self.workers is not None:
            # only a file worker 0 accepted reaches the workers: a bad one
            # is refused everywhere, and every worker keeps the same config
            self.workers.signalAll(signal.SIGHUP)
        self._log.info(
            "Reloaded {path}: {routes} route(s), {pools} pool(s), {backends} backend(s)",
            path=old.path,
            routes=len(new.routes),
            pools=len(new.pools),
            backends=len(new.backends),
        )
        return True

    def _reconcile(self) -> None:
        """
        After a reload: health checks and SRV discovery follow the new pools,
        and listener certificates are re-read from disk (new handshakes use
        them; open connections keep theirs).
        """
        for name in ("health", "discovery"):
            try:
                service = self.getServiceNamed(name)
            except KeyError:
                continue
            service.reconcile()
        for context in getattr(self, "serverTLS", {}).values():
            context.reload()

    # --- drain ------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Drain, then stop everything else."""
        self.readiness.draining = True
        self.runtime.observer.metrics.draining.set(1)
        if self._installSignals and self._previousHUP is not None:
            signal.signal(signal.SIGHUP, self._previousHUP)
            signal.signal(signal.SIGUSR1, self._previousUSR1)
        Service.stopService(self)
        listeners = [service for service in self if (service.name or "").startswith("listener:")]
        others = [service for service in reversed(list(self)) if service not in listeners]
        self._log.info(
            "Draining: listeners closed, waiting up to {timeout}s for {inFlight} operation(s) in flight",
            timeout=self.runtime.config.drainTimeout,
            inFlight=self.runtime.observer.inFlight(),
        )
        d: Deferred[Any] = defer.DeferredList([defer.maybeDeferred(s.stopService) for s in listeners])
        d.addCallback(lambda _: Drain(self.runtime.observer, self._reactor, self.runtime.config.drainTimeout).run())
        d.addCallback(lambda _: defer.DeferredList([defer.maybeDeferred(s.stopService) for s in others]))
        d.addCallback(lambda _: self.runtime.observer.flush())
        d.addCallback(lambda _: None)
        return d


class Drain:
    """
    Ends every client connection politely: each one gets a Notice of
    Disconnection once it has no operation in flight, or when the grace
    period is over.
    """

    _log = Logger()

    def __init__(self, observer: Any, reactor: Any, timeout: float) -> None:
        self._observer = observer
        self._reactor = reactor
        self._deadline = reactor.seconds() + timeout
        self._done: Deferred[None] = Deferred()
        self._closeDeadline = 0.0

    def run(self) -> Deferred[None]:
        self._poll()
        return self._done

    def _poll(self) -> None:
        now = self._reactor.seconds()
        connections = self._observer.connections
        expired = now >= self._deadline
        if self._closeDeadline:
            if not connections or now >= self._closeDeadline:
                self._done.callback(None)
                return
        else:
            for protocol in list(connections):
                if expired or not protocol.session.outstanding:
                    if expired and protocol.session.outstanding:
                        self._log.warn(
                            "Drain timeout: {peer} still had {count} operation(s) in flight",
                            peer=protocol.session.peer,
                            count=len(protocol.session.outstanding),
                        )
                    protocol.shutDown()
            if expired or not connections:
                self._closeDeadline = now + CLOSE_WAIT
                if not connections:
                    self._done.callback(None)
                    return
        self._reactor.callLater(DRAIN_POLL, self._poll)


# --- workers -----------------------------------------------------------------


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP server endpoint that binds with C{SO_REUSEPORT}, for workers."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 50) -> None:
        self._reactor = reactor
        self._port = port
        self._interface = interface
        self._backlog = backlog

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return defer.execute(self._listen, factory)

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        family = socket.AF_INET6 if ":" in self._interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self._interface, self._port))
            sock.listen(self._backlog)
            sock.setblocking(False)
            return self._reactor.adoptStreamPort(sock.fileno(), family, factory)
        finally:
            sock.close()  # the reactor holds its own duplicate


def _tcpArguments(description: str) -> tuple[int, str, int]:
    """C{(port, interface, backlog)} of a C{tcp:} description."""
    parts = description.split(":")
    port = int(parts[1] if "=" not in parts[1] else parts[1].split("=", 1)[1])
    interface, backlog = "", 50
    for part in parts[2:]:
        key, _, value = part.partition("=")
        if key == "interface":
            interface = value
        elif key == "backlog":
            backlog = int(value)
        elif key == "port":
            port = int(value)
    return port, interface, backlog


def reusePortEndpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The worker endpoint for a C{tcp:} or C{haproxy:tcp:} listener.

    @raise ValueError: other kinds of endpoints cannot be shared.
    """
    if description.startswith("haproxy:"):
        return proxyEndpoint(reusePortEndpoint(reactor, description[len("haproxy:") :]))
    if not description.startswith("tcp:"):
        raise ValueError(f"workers > 1 needs tcp: or haproxy:tcp: listeners, not {description!r}")
    return ReusePortEndpoint(reactor, *_tcpArguments(description))


def workerMetricsEndpoint(description: str, index: int) -> str:
    """The metrics endpoint of worker C{index}: the configured port plus C{index}."""
    if index == 0:
        return description
    if not description.startswith("tcp:"):
        raise ValueError(f"workers > 1 needs a tcp: metrics endpoint, not {description!r}")
    parts = description.split(":")
    parts[1] = str(int(parts[1]) + index)
    return ":".join(parts)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self._supervisor = supervisor
        self.index = index

    def processEnded(self, reason: Failure) -> None:
        self._supervisor.workerEnded(self, reason)


class WorkerSupervisor(Service):
    """
    Worker 0's children: starts workers 1..N-1, restarts one that dies
    while the proxy runs, and on stop sends them SIGTERM (they drain on
    their own) and waits for them.
    """

    _log = Logger()

    def __init__(self, reactor: Any, configPath: str, count: int, extraArgs: list[str] | None = None) -> None:
        self._reactor = reactor
        self._configPath = configPath
        self._count = count
        self._extraArgs = extraArgs or []
        self._processes: dict[int, Any] = {}
        self._started: dict[int, float] = {}
        self._delays: dict[int, float] = {}
        self._stopping: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        for index in range(1, self._count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        args = [sys.executable, "-m", "twisted", "ldaproute", "-c", self._configPath, "--worker-index", str(index)]
        args += self._extraArgs
        protocol = _WorkerProtocol(self, index)
        self._started[index] = self._reactor.seconds()
        self._processes[index] = self._reactor.spawnProcess(
            protocol, sys.executable, args, env=os.environ.copy(), childFDs={0: "w", 1: 1, 2: 2}
        )
        self._log.info("Started worker {index} (pid {pid})", index=index, pid=self._processes[index].pid)

    def workerEnded(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        self._processes.pop(protocol.index, None)
        if not self.running:
            if not self._processes and self._stopping is not None:
                self._stopping.callback(None)
            return
        code = reason.value.exitCode if isinstance(reason.value, (ProcessDone, ProcessTerminated)) else None
        now = self._reactor.seconds()
        quick = now - self._started.get(protocol.index, 0.0) < RESTART_QUICK
        delay = min(self._delays.get(protocol.index, RESTART_DELAY) * 2, RESTART_MAX) if quick else RESTART_DELAY
        self._delays[protocol.index] = delay
        self._log.error(
            "Worker {index} ended (exit code {code}); restarting it in {delay}s",
            index=protocol.index,
            code=code,
            delay=delay,
        )
        self._reactor.callLater(delay, self._respawn, protocol.index)

    def _respawn(self, index: int) -> None:
        if self.running and index not in self._processes:
            self._spawn(index)

    def signalAll(self, signum: int) -> None:
        for process in list(self._processes.values()):
            try:
                process.signalProcess(signum)
            except Exception:  # already gone
                pass

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if not self._processes:
            return None
        self._stopping = Deferred()
        self.signalAll(signal.SIGTERM)
        return self._stopping


__all__ = ["ProxyService", "Drain", "WorkerSupervisor", "reusePortEndpoint", "restartOnlyChanges"]


def jsonLogObserver() -> ILogObserver:
    """
    For C{twistd --logger=ldaproute.service.jsonLogObserver} (also what
    C{log_format = json} installs): JSON lines on stdout.
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
