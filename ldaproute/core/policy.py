# -*- test-case-name: tests.test_policy -*-
"""
Per-listener security policy that outlives one connection, free of
transports: bind throttling and connection limits.

Everything takes the time as an argument, so tests drive it with plain
numbers and the frontend passes C{reactor.seconds()}.  Memory is bounded:
a key whose window has passed is forgotten, and the number of keys
tracked is capped (the oldest are dropped first).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from ldaproute.config import Listener
from ldaproute.core.secrets import SecretPolicy

#: How many addresses and DNs a throttle remembers at most.
MAX_TRACKED_KEYS = 100_000


class SlidingWindow:
    """Event times per key, counted over the last C{window} seconds."""

    def __init__(self, window: float, maxKeys: int = MAX_TRACKED_KEYS) -> None:
        self.window = window
        self.maxKeys = maxKeys
        self._events: OrderedDict[Any, deque[float]] = OrderedDict()

    def _prune(self, key: Any, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = now - self.window
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def add(self, key: Any, now: float) -> None:
        events = self._prune(key, now)
        if events is None:
            events = self._events[key] = deque()
            while len(self._events) > self.maxKeys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        events.append(now)

    def replace(self, key: Any, times: Iterable[float], now: float) -> None:
        """
        Make C{times} the events of C{key}: another process's view of the
        same key, which supersedes what was known of it.
        """
        self._events.pop(key, None)
        horizon = now - self.window
        kept = deque(sorted(t for t in times if t > horizon))
        if kept:
            self._events[key] = kept
            while len(self._events) > self.maxKeys:
                self._events.popitem(last=False)

    def count(self, key: Any, now: float) -> int:
        events = self._prune(key, now)
        return 0 if events is None else len(events)

    def times(self, key: Any, now: float) -> list[float]:
        """The event times of C{key} still in the window, oldest first."""
        events = self._prune(key, now)
        return [] if events is None else list(events)

    def retryAfter(self, key: Any, now: float) -> float:
        """Seconds until the oldest event of C{key} leaves the window."""
        events = self._prune(key, now)
        return 0.0 if events is None else max(0.0, events[0] + self.window - now)

    def __len__(self) -> int:
        return len(self._events)


def normaliseBindDN(name: bytes) -> bytes:
    """A cheap canonical form of a bind DN for counting: case and spaces."""
    return b",".join(part.strip() for part in name.lower().split(b","))


#: What L{BindThrottle.shareWith} is given: C{(kind, digest, now)} for each
#: failure, kind C{"address"} or C{"dn"}; what it returns (the fleet's
#: acknowledgement, when it has one) L{BindThrottle.failed} returns.
ShareFailure = Callable[[str, str, float], object]
#: What L{BindThrottle.askFleet} calls: the digests of a bind's keys, to
#: get the fleet's latest counts for them; returns the pending answer, or
#: L{None} when there is nothing to wait for.
AskFleet = Callable[[list[str]], object]


def throttleDigest(kind: str, key: str | bytes) -> str:
    """
    The name a throttle key has between processes: a digest, so that the
    shared store (Redis) and the worker channel never hold client addresses
    or DNs, and every process derives the same name.
    """
    raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    return hashlib.sha256(kind.encode("ascii") + b"\0" + raw).hexdigest()[:32]


class BindThrottle:
    """
    Failed binds (invalidCredentials) counted per client address and per
    bind DN in a sliding window; at C{failures} failures within C{window}
    seconds, further binds from that address or to that DN are refused
    until enough failures age out.  A successful bind does not reset the
    counts: guessing the right password after many wrong ones must not
    buy more guesses.

    Across processes (L{ldaproute.fleet.throttle}): each failure is also
    handed to the callable given to L{shareWith}, and the fleet's view of
    a key comes back through L{observe}.  A bind is refused when either
    this process's own count or the fleet's count reaches C{failures}, so
    the decision is always immediate and never weaker than this process
    alone would make it, whatever happens to the shared store.
    """

    def __init__(self, failures: int, window: float) -> None:
        self.failures = failures
        self.window = window
        self._byAddress = SlidingWindow(window)
        self._byDN = SlidingWindow(window)
        #: the fleet's counts, by L{throttleDigest}
        self._fleet = SlidingWindow(window)
        self._share: ShareFailure | None = None
        self._ask: AskFleet | None = None

    def shareWith(self, share: ShareFailure, ask: AskFleet | None = None) -> None:
        """
        Hand every failure from now on to C{share} as well; C{ask} fetches
        the fleet's latest counts before a bind is let through.
        """
        self._share = share
        self._ask = ask

    @property
    def shared(self) -> bool:
        """Whether failures are shared with other processes (L{shareWith})."""
        return self._share is not None

    def askFleet(self, address: str | None, bindDN: bytes) -> object:
        """
        Before letting a bind through: ask the fleet for its latest counts
        of the bind's keys (they arrive through L{observe}).  Returns what
        the ask callable returned (the answer to wait for, briefly), or
        L{None}: not shared, or nothing to wait for.
        """
        if self._ask is None:
            return None
        digests = []
        if address is not None:
            digests.append(throttleDigest("address", address))
        key = normaliseBindDN(bindDN)
        if key:
            digests.append(throttleDigest("dn", key))
        return self._ask(digests) if digests else None

    def observe(self, digest: str, times: Iterable[float], now: float) -> None:
        """The fleet's failure times for one key (see L{throttleDigest})."""
        self._fleet.replace(digest, times, now)

    def _fleetRefusal(self, kind: str, key: str | bytes, now: float) -> float | None:
        digest = throttleDigest(kind, key)
        if self._fleet.count(digest, now) >= self.failures:
            return self._fleet.retryAfter(digest, now)
        return None

    def refusal(self, address: str | None, bindDN: bytes, now: float) -> str | None:
        """
        Why a bind must be refused now, or L{None} to let it through.
        Anonymous binds (empty DN) are counted by address only.
        """
        fleetKnown = len(self._fleet) > 0  # nothing heard from the fleet: no digest to compute
        if address is not None:
            wait = None
            if self._byAddress.count(address, now) >= self.failures:
                wait = self._byAddress.retryAfter(address, now)
            elif fleetKnown:
                wait = self._fleetRefusal("address", address, now)
            if wait is not None:
                return f"too many failed binds from this address; try again in {wait:.0f}s"
        key = normaliseBindDN(bindDN)
        if key:
            wait = None
            if self._byDN.count(key, now) >= self.failures:
                wait = self._byDN.retryAfter(key, now)
            elif fleetKnown:
                wait = self._fleetRefusal("dn", key, now)
            if wait is not None:
                return f"too many failed binds for this DN; try again in {wait:.0f}s"
        return None

    def failed(self, address: str | None, bindDN: bytes, now: float) -> list[object]:
        """
        A bind from C{address} as C{bindDN} got invalidCredentials.

        @return: what the share callable returned for each key counted (the
            fleet's acknowledgements); empty when not shared.
        """
        share = self._share
        acknowledgements: list[object] = []
        if address is not None:
            self._byAddress.add(address, now)
            if share is not None:
                acknowledgements.append(self._shareOne(share, throttleDigest("address", address), "address", now))
        key = normaliseBindDN(bindDN)
        if key:
            self._byDN.add(key, now)
            if share is not None:
                acknowledgements.append(self._shareOne(share, throttleDigest("dn", key), "dn", now))
        return acknowledgements

    def _shareOne(self, share: ShareFailure, digest: str, kind: str, now: float) -> object:
        # the fleet view counts this failure at once: until the store's
        # next view of the key replaces it (which includes this failure),
        # it is what was last heard from the fleet plus what happened here
        # since, which is also what holds through a store outage
        self._fleet.add(digest, now)
        return share(kind, digest, now)


class ConnectionLimits:
    """
    Open connections of one listener, in total and per client address, and
    its client network allowlist.
    """

    def __init__(
        self,
        maxConnections: int | None,
        maxPerAddress: int | None,
        networks: tuple[Any, ...] = (),
    ) -> None:
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
        self.networks = networks
        self.total = 0
        self._perAddress: dict[str, int] = {}

    def allowed(self, address: str | None) -> bool:
        """Whether a client from C{address} may connect at all (allowlist)."""
        if not self.networks:
            return True
        if address is None:
            return False  # unix sockets have no network to match
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == network.version and ip in network for network in self.networks)

    def admit(self, address: str | None) -> str | None:
        """
        Count a new connection, or say why it is refused (then it is not
        counted and L{release} must not be called for it).
        """
        if self.maxConnections is not None and self.total >= self.maxConnections:
            return f"this listener has reached its limit of {self.maxConnections} connections"
        key = address or ""
        current = self._perAddress.get(key, 0)
        if self.maxPerAddress is not None and current >= self.maxPerAddress:
            return f"this address has reached its limit of {self.maxPerAddress} connections"
        self.total += 1
        self._perAddress[key] = current + 1
        return None

    def release(self, address: str | None) -> None:
        """A connection counted by L{admit} has closed."""
        key = address or ""
        current = self._perAddress.get(key, 0)
        if current <= 1:
            self._perAddress.pop(key, None)
        else:
            self._perAddress[key] = current - 1
        self.total = max(0, self.total - 1)

    def connectionsFrom(self, address: str | None) -> int:
        return self._perAddress.get(address or "", 0)


class ListenerPolicy:
    """The state a listener's policy keeps across its connections."""

    def __init__(
        self, limits: ConnectionLimits, throttle: BindThrottle | None, secrets: SecretPolicy | None = None
    ) -> None:
        self.limits = limits
        self.throttle = throttle
        self.secrets = secrets if secrets is not None else SecretPolicy()

    @classmethod
    def fromListener(cls, listener: Listener) -> ListenerPolicy:
        limits = ConnectionLimits(
            listener.maxConnections, listener.maxConnectionsPerAddress, listener.clientNetworks
        )
        throttle = None
        if listener.bindThrottleFailures is not None:
            throttle = BindThrottle(listener.bindThrottleFailures, listener.bindThrottleWindow)
        return cls(limits, throttle, SecretPolicy(listener.secretAttributes))
