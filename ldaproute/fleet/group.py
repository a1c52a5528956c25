# -*- test-case-name: tests.test_fleet_group -*-
"""
One worker group (C{workers = N} on one host) seen as one proxy.

Worker 0 runs a L{GroupHub} on a private Unix socket; workers 1..N-1 join
it with a L{GroupMember}.  The channel carries JSON messages in netstrings
(L{GroupChannel}), in both directions:

 - C{fail} (member to hub): a bind failure; the hub counts it in its
   sliding windows and sends the key's failure times (C{view}) to every
   worker, itself included, so that C{workers = N} alone no longer
   multiplies the guesses (L{HubThrottleStore}, L{MemberThrottleStore}).
   On one host this costs a Unix socket write after a failed bind and
   nothing on any bind's path.
 - C{ask}/C{answer} (hub to member and back): the member's metrics, as
   plain samples, and its readiness, so that worker 0 serves one
   C{/metrics} summing the group (L{ldaproute.fleet.groupmetrics.mergeFamilies}) and
   C{/healthz}, C{/readyz} for the group (L{ldaproute.fleet.groupweb}).

Nothing here labels a sample by worker: the group is one proxy.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import NetstringReceiver
from zope.interface import implementer

from ldaproute.core.policy import SlidingWindow
from ldaproute.fleet.redisstore import Reconnector
from ldaproute.fleet.groupmetrics import familiesToData
from ldaproute.fleet.throttle import IThrottleStore, StoreHealth, ThrottleExchange

#: How long worker 0 waits for a worker's metrics or readiness, seconds.
ASK_TIMEOUT = 2.0
#: The largest message on the channel (a worker's metrics), bytes.
MAX_MESSAGE = 32 * 1024 * 1024
#: Failures a member keeps for the hub while it is not connected, at most.
MAX_PENDING = 10_000

# --- the channel ------------------------------------------------------------------


class GroupChannel(NetstringReceiver):
    """One end of the worker channel: JSON objects in netstrings."""

    MAX_LENGTH = MAX_MESSAGE
    _log = Logger()

    def __init__(
        self,
        receive: Callable[[GroupChannel, dict[str, Any]], None],
        lost: Callable[[GroupChannel], None],
        made: Callable[[GroupChannel], None] | None = None,
    ) -> None:
        self._receive = receive
        self._lost = lost
        self._made = made
        self._disconnected: list[Deferred[GroupChannel]] = []
        #: the worker index a member said hello with (hub side)
        self.worker: int | None = None

    def connectionMade(self) -> None:
        if self._made is not None:
            self._made(self)

    def whenDisconnected(self) -> Deferred[GroupChannel]:
        """Fires with this channel when its connection is lost."""
        d: Deferred[GroupChannel] = Deferred()
        self._disconnected.append(d)
        return d

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            self.sendString(json.dumps(message, separators=(",", ":")).encode("utf-8"))

    def stringReceived(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            self._log.warn("Worker channel: a message that is not JSON; closing the channel")
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if isinstance(message, dict):
            self._receive(self, message)

    def connectionLost(self, reason: Any = None) -> None:
        self._lost(self)
        waiting, self._disconnected = self._disconnected, []
        for d in waiting:
            d.callback(self)


class _ChannelFactory(Factory):
    noisy = False

    def __init__(
        self,
        receive: Callable[[GroupChannel, dict[str, Any]], None],
        lost: Callable[[GroupChannel], None],
        made: Callable[[GroupChannel], None] | None = None,
    ) -> None:
        self._receive = receive
        self._lost = lost
        self._made = made

    def buildProtocol(self, addr: Any) -> GroupChannel:
        protocol = GroupChannel(self._receive, self._lost, self._made)
        protocol.factory = self
        return protocol


# --- worker 0 -------------------------------------------------------------------------


class GroupHub(Service):
    """
    Worker 0's end: accepts the members, counts their bind failures for
    the whole group, and asks them for metrics and readiness.

    @ivar workers: the number of processes in the group, worker 0 included.
    """

    _log = Logger()

    def __init__(self, socketPath: str, workers: int, exchange: ThrottleExchange, reactor: Any) -> None:
        self.socketPath = socketPath
        self.workers = workers
        self._exchange = exchange
        self._reactor = reactor
        self.members: dict[int, GroupChannel] = {}
        self._windows: dict[str, SlidingWindow] = {}
        self._asked: dict[int, Deferred[Any]] = {}
        self._nextID = 0
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = UNIXServerEndpoint(self._reactor, self.socketPath, mode=0o600, wantPID=False)
        d = endpoint.listen(_ChannelFactory(self._received, self._lost))
        d.addCallback(self._listening)
        d.addErrback(lambda f: self._log.failure("Cannot open the worker channel {path}", f, path=self.socketPath))

    def _listening(self, port: IListeningPort) -> None:
        self._port = port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        for channel in list(self.members.values()):
            channel.transport.loseConnection()  # type: ignore[union-attr]
        if self._port is not None:
            return defer.maybeDeferred(self._port.stopListening)  # type: ignore[call-overload]
        return None

    def _received(self, channel: GroupChannel, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "hello":
            index = int(message.get("worker", 0))
            channel.worker = index
            self.members[index] = channel
            self._log.info("Worker {index} joined the worker channel", index=index)
        elif kind == "fail":
            self.failed(str(message["l"]), str(message["d"]), float(message["at"]), float(message["w"]))
            if "id" in message:
                channel.send({"t": "counted", "id": message["id"]})
        elif kind == "count":
            listener = str(message["l"])
            counts = self._windows.get(listener)
            now = self._reactor.seconds()
            views = {str(d): (counts.times(str(d), now) if counts is not None else []) for d in message["d"]}
            channel.send({"t": "counts", "id": message.get("id"), "l": listener, "views": views})
        elif kind == "answer":
            d = self._asked.pop(int(message.get("id", -1)), None)
            if d is not None and not d.called:
                d.callback(message.get("body"))

    def _lost(self, channel: GroupChannel) -> None:
        if channel.worker is not None and self.members.get(channel.worker) is channel:
            del self.members[channel.worker]
            if self.running:
                self._log.info("Worker {index} left the worker channel", index=channel.worker)

    # --- throttle ---------------------------------------------------------------

    def failed(self, listener: str, digest: str, at: float, window: float) -> None:
        """A failure anywhere in the group: count it, tell every worker."""
        counts = self._windows.get(listener)
        if counts is None:
            counts = self._windows[listener] = SlidingWindow(window)
        counts.add(digest, at)
        times = counts.times(digest, self._reactor.seconds())
        self._exchange.observed(listener, digest, times)
        message = {"t": "view", "l": listener, "d": digest, "times": times}
        for channel in list(self.members.values()):
            channel.send(message)

    # --- questions to the members --------------------------------------------------

    def _unanswered(self, failure: Any, questionID: int) -> None:
        """No answer in time (or the channel went): L{None} for that member."""
        self._asked.pop(questionID, None)

    def ask(self, question: str) -> Deferred[dict[int, Any]]:
        """Each connected member's answer to C{question} (L{None}: no answer in time)."""
        pending = []
        for index, channel in sorted(self.members.items()):
            self._nextID += 1
            questionID = self._nextID
            d: Deferred[Any] = Deferred()
            self._asked[questionID] = d
            channel.send({"t": "ask", "id": questionID, "q": question})
            d.addTimeout(ASK_TIMEOUT, self._reactor)
            d.addErrback(self._unanswered, questionID)
            d.addCallback(_pairedWith, index)
            pending.append(d)
        gathered: Deferred[Any] = defer.gatherResults(pending)
        gathered.addCallback(dict)
        return gathered


def _pairedWith(body: Any, index: int) -> tuple[int, Any]:
    return index, body


@implementer(IThrottleStore)
class HubThrottleStore:
    """Worker 0's throttle store when the group shares counts without Redis."""

    def __init__(self, hub: GroupHub) -> None:
        self._hub = hub
        self.health = StoreHealth("workers", hub.socketPath)
        self.health.reachable()

    def record(self, listener: str, digest: str, at: float, window: float) -> Deferred[None] | None:
        self._hub.failed(listener, digest, at, window)
        return None  # counted, and the views are written to the members

    def query(self, listener: str, digests: list[str], window: float) -> Deferred[None] | None:
        return None  # worker 0's views are the hub's counts, up to date

    def families(self) -> Iterator[Metric]:
        return self.health.families(0)


# --- workers 1..N-1 ---------------------------------------------------------------


@implementer(IThrottleStore)
class GroupMember(Service):
    """
    A worker's end of the channel: joins the hub (reconnecting if the
    channel drops), answers its questions, and, without Redis, is the
    worker's throttle store (failures to the hub, views from it).

    @param metrics: the worker's registry (what C{metrics} answers with).
    @param readiness: C{() -> (ok, body)}, what C{ready} answers with.
    """

    _log = Logger()

    def __init__(
        self,
        socketPath: str,
        index: int,
        exchange: ThrottleExchange,
        registry: CollectorRegistry,
        readiness: Callable[[], tuple[bool, dict[str, Any]]],
        reactor: Any,
    ) -> None:
        self.socketPath = socketPath
        self.index = index
        self._exchange = exchange
        self._registry = registry
        self._readiness = readiness
        self._reactor = reactor
        self._channel: GroupChannel | None = None
        self._connector: Reconnector | None = None
        self._pending: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING)
        self.health = StoreHealth("workers", socketPath)
        self._nextID = 0
        #: failures sent to the hub and not yet acknowledged, by id
        self._counting: dict[int, Deferred[None]] = {}

    def startService(self) -> None:
        super().startService()
        factory = _ChannelFactory(self._received, self._lost, self.joined)
        self._connector = Reconnector(UNIXClientEndpoint(self._reactor, self.socketPath), factory, self._reactor)
        self._connector.failed = self.health.unreachable
        self._connector.start()

    def stopService(self) -> None:
        super().stopService()
        if self._connector is not None:
            self._connector.stop()

    def joined(self, channel: GroupChannel) -> None:
        self._channel = channel
        channel.send({"t": "hello", "worker": self.index, "pid": os.getpid()})
        self.health.reachable()
        pending, self._pending = self._pending, deque(maxlen=MAX_PENDING)
        for message in pending:
            channel.send(message)

    def _lost(self, channel: GroupChannel) -> None:
        if self._channel is channel:
            self._channel = None
            counting, self._counting = self._counting, {}
            for d in counting.values():
                d.callback(None)  # nothing more to wait for
            if self.running:
                self.health.unreachable("worker channel closed")

    def _received(self, channel: GroupChannel, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "view":
            self._exchange.observed(str(message["l"]), str(message["d"]), [float(t) for t in message["times"]])
        elif kind in ("counted", "counts"):
            for digest, times in (message.get("views") or {}).items():
                self._exchange.observed(str(message["l"]), str(digest), [float(t) for t in times])
            d = self._counting.pop(int(message.get("id", -1)), None)
            if d is not None:
                d.callback(None)
        elif kind == "ask":
            question = message.get("q")
            body: Any = None
            if question == "metrics":
                body = familiesToData(self._registry.collect())
            elif question == "ready":
                ok, status = self._readiness()
                body = {"ok": ok, "body": status}
            channel.send({"t": "answer", "id": message.get("id"), "body": body})

    # IThrottleStore

    def record(self, listener: str, digest: str, at: float, window: float) -> Deferred[None] | None:
        message: dict[str, Any] = {"t": "fail", "l": listener, "d": digest, "at": at, "w": window}
        if self._channel is None:
            self._pending.append(message)
            return None
        self._nextID += 1
        message["id"] = self._nextID
        d: Deferred[None] = Deferred()
        self._counting[self._nextID] = d
        self._channel.send(message)
        return d

    def query(self, listener: str, digests: list[str], window: float) -> Deferred[None] | None:
        if self._channel is None:
            return None
        self._nextID += 1
        d: Deferred[None] = Deferred()
        self._counting[self._nextID] = d
        self._channel.send({"t": "count", "id": self._nextID, "l": listener, "d": digests})
        return d

    def families(self) -> Iterator[Metric]:
        return self.health.families(len(self._pending))


__all__ = [
    "GroupHub",
    "GroupMember",
    "HubThrottleStore",
    "GroupChannel",
]
