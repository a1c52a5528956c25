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

import ipaddress
from collections import OrderedDict, deque
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

    def count(self, key: Any, now: float) -> int:
        events = self._prune(key, now)
        return 0 if events is None else len(events)

    def retryAfter(self, key: Any, now: float) -> float:
        """Seconds until the oldest event of C{key} leaves the window."""
        events = self._prune(key, now)
        return 0.0 if events is None else max(0.0, events[0] + self.window - now)

    def __len__(self) -> int:
        return len(self._events)


def normaliseBindDN(name: bytes) -> bytes:
    """A cheap canonical form of a bind DN for counting: case and spaces."""
    return b",".join(part.strip() for part in name.lower().split(b","))


class BindThrottle:
    """
    Failed binds (invalidCredentials) counted per client address and per
    bind DN in a sliding window; at C{failures} failures within C{window}
    seconds, further binds from that address or to that DN are refused
    until enough failures age out.  A successful bind does not reset the
    counts: guessing the right password after many wrong ones must not
    buy more guesses.
    """

    def __init__(self, failures: int, window: float) -> None:
        self.failures = failures
        self.window = window
        self._byAddress = SlidingWindow(window)
        self._byDN = SlidingWindow(window)

    def refusal(self, address: str | None, bindDN: bytes, now: float) -> str | None:
        """
        Why a bind must be refused now, or L{None} to let it through.
        Anonymous binds (empty DN) are counted by address only.
        """
        if address is not None and self._byAddress.count(address, now) >= self.failures:
            wait = self._byAddress.retryAfter(address, now)
            return f"too many failed binds from this address; try again in {wait:.0f}s"
        key = normaliseBindDN(bindDN)
        if key and self._byDN.count(key, now) >= self.failures:
            wait = self._byDN.retryAfter(key, now)
            return f"too many failed binds for this DN; try again in {wait:.0f}s"
        return None

    def failed(self, address: str | None, bindDN: bytes, now: float) -> None:
        """A bind from C{address} as C{bindDN} got invalidCredentials."""
        if address is not None:
            self._byAddress.add(address, now)
        key = normaliseBindDN(bindDN)
        if key:
            self._byDN.add(key, now)


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
