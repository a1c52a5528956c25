# -*- test-case-name: tests.test_shared -*-
"""
Shared connections held exclusively: a stateful sequence (paged results,
sort, virtual list view: L{ldaproute.backends.sequences}) holds one shared
connection, on which other clients' stateless operations still go out; a
bind holds one bind connection alone (slapd abandons every operation
outstanding on a connection when a bind arrives).  Who holds which, who
waits for one, and when another is opened for them.

L{Holds} is the base of L{ldaproute.backends.sharedpool.SharedPool}, which
owns the connections themselves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ldaproute.backends.connection import BackendConnection

if TYPE_CHECKING:
    from ldaproute.backends.pool import PoolState

KINDS = ("shared", "anonymous", "bind", "sequence", "anonsequence")

#: the kind a request claims (L{Holds.claim}) that a connection serves
CLAIMED_AS = {"shared": "shared", "sequence": "shared", "anonymous": "anonymous", "anonsequence": "anonymous", "bind": "bind"}
#: the kind opened for a claim while every connection of its kind is held
OVERFLOW = {"shared": "sequence", "anonymous": "anonsequence", "bind": "bind"}
#: connections of one sequence, closed when it ends
SINGLE_USE = frozenset({"sequence", "anonsequence"})
#: C{claim} callbacks: C{(connection, "")} when one is free, or C{(None,
#: reason)}; each says whether it took the connection.
Claimant = Callable[[BackendConnection | None, str], bool]


class Holds:
    """
    Which connections of a pool are held, and the claims waiting for one
    (a mixin; see the module docstring).

    @ivar held: connections held by a stateful sequence or a bind (L{claim}).
    """

    # what the pool provides
    poolState: PoolState
    connections: dict[str, list[BackendConnection]]
    ready: dict[str, list[BackendConnection]]
    _kinds: dict[BackendConnection, str]

    def __init__(self) -> None:
        self.held: set[BackendConnection] = set()
        self._claimants: dict[str, deque[Claimant]] = {kind: deque() for kind in OVERFLOW}

    def _open(self, kind: str) -> None:
        raise NotImplementedError

    def _forget(self, connection: BackendConnection, reason: str) -> None:
        raise NotImplementedError

    def wanted(self, kind: str) -> int:
        pool = self.poolState.pool
        perBackend = pool.bindConnections if kind == "bind" else pool.sharedConnections
        return perBackend * max(1, len(self.poolState.backends))

    def claim(self, kind: str) -> BackendConnection | None:
        """
        A ready connection of C{kind} that nobody holds (the least busy),
        held from now on until L{release}; L{None} if there is none (then
        L{whenFree}).  C{"shared"}: for a stateful sequence, which other
        clients' stateless operations may still share; C{"bind"}: for one
        bind, alone on its connection.
        """
        for _ in range(self.wanted(kind) - len(self.connections[kind])):
            self._open(kind)
        held = self.held
        best = None
        for connection in self.ready[kind]:
            if connection not in held and (best is None or len(connection.ops) < len(best.ops)):
                best = connection
                if not connection.ops:
                    break  # idle: as good as it gets (every bind connection is, when free)
        if best is not None:
            held.add(best)
        return best

    def whenFree(self, kind: str, claimant: Claimant) -> None:
        """
        Call C{claimant} with a connection of C{kind} held for it when one
        is free (released, or newly open), or with C{(None, reason)} when
        no connection of the pool can be opened.  Opens another unless
        enough are on their way: for sequences a connection of their own
        (kind C{"sequence"}, closed when the sequence ends); for binds one
        more bind connection, up to C{max_bind_connections} per backend;
        never past the backends' C{max_connections}.
        """
        claimants = self._claimants[kind]
        claimants.append(claimant)
        opens = OVERFLOW[kind]
        opening = sum(
            1
            for k in {kind, opens}
            for connection in self.connections[k]
            if connection not in self.ready[k] and connection not in self.held
        )
        if len(claimants) <= opening or self.poolState.allAtCapacity():
            return
        if kind == "bind" and len(self.connections["bind"]) >= self.maxBindConnections():
            return
        self._open(opens)

    def stopClaiming(self, kind: str, claimant: Claimant) -> None:
        """A claim given up (its budget spent, answered, closed) no longer waits for a connection."""
        try:
            self._claimants[kind].remove(claimant)
        except ValueError:
            pass

    def canConnect(self, kind: str) -> bool:
        """Whether a connection that serves claims of C{kind} is ready (held or not)."""
        return any(self.ready[k] for k in KINDS if CLAIMED_AS[k] == kind)

    def maxBindConnections(self) -> int:
        pool = self.poolState.pool
        return max(pool.bindConnections, pool.maxBindConnections) * max(1, len(self.poolState.backends))

    def release(self, connection: BackendConnection) -> None:
        """Its sequence or bind ended: the next one waiting gets the connection."""
        if connection not in self.held:
            return
        self.held.discard(connection)
        kind = self._kinds.get(connection)
        if kind is None:
            return  # forgotten meanwhile
        if connection.state == "ready" and self._claimants[CLAIMED_AS[kind]] and self._grant(connection):
            return
        if kind in SINGLE_USE:
            # a connection of its own for one sequence: not kept
            self._forget(connection, "")
            connection.close(unbind=True)

    def retire(self, connection: BackendConnection) -> None:
        """
        Close a connection that must carry nothing more (a bind on it timed
        out: it cannot be abandoned, and the next bind must not run beside it;
        a SASL exchange on it ended unfinished).  Binds waiting for one get a
        new connection in its place.
        """
        kind = self._kinds.get(connection)
        self._forget(connection, "")
        connection.close(abort=True)
        if kind == "bind" and self._claimants["bind"] and len(self.connections["bind"]) < self.wanted("bind"):
            self._open("bind")

    def _grant(self, connection: BackendConnection) -> bool:
        """Hold C{connection} for the first claimant of its kind that takes it."""
        kind = self._kinds.get(connection)
        if kind is None:
            return False
        claimants = self._claimants[CLAIMED_AS[kind]]
        while claimants:
            self.held.add(connection)
            if claimants.popleft()(connection, ""):
                return True
            self.held.discard(connection)
        return False
