# -*- test-case-name: tests.test_session -*-
"""
Per-client state, free of transports: who the client is bound as, which
operations are outstanding, and whether an upstream connection carries the
client's current identity.

Identity changes only through binds.  Each completed bind bumps
C{identityVersion}; an upstream connection remembers the version it was
bound at, so a connection opened later (a second pool, or a reconnect after
a backend died) knows it must replay the client's simple bind first, or,
for a SASL identity that cannot be replayed, that the client must bind
again.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from ldaproute.wire import ber
from ldaproute.core.dn import DN, parseDNBytes


@attrs.frozen
class Identity:
    """
    The bound identity of a session.

    @ivar kind: C{"anonymous"}, C{"simple"} or C{"sasl"}.
    @ivar name: the bind DN as the client sent it.
    @ivar password: for simple binds only, kept in memory for replay on
        other upstream connections and never logged (C{repr=False}).
    """

    kind: str
    name: bytes = b""
    password: bytes = attrs.field(default=b"", repr=False)

    @property
    def replayable(self) -> bool:
        return self.kind != "sasl"

    @functools.cached_property
    def dn(self) -> DN | None:
        """The bound DN, parsed (once: routing reads it per operation), or
        L{None} for anonymous or unparsable."""
        if self.kind == "anonymous" or not self.name:
            return None
        try:
            return parseDNBytes(self.name)
        except ValueError:
            return None


ANONYMOUS = Identity("anonymous")


@attrs.define
class Outstanding:
    """An operation sent upstream and not yet answered."""

    messageID: int
    opTag: int
    link: Any
    startedAt: float
    route: str
    pending: Identity | None = None  # for binds: the identity on success
    summary: Any = None  # for the access log: accesslog.RequestSummary


class Session:
    """
    The state of one client connection.

    @ivar outstanding: operations by messageID.
    """

    def __init__(self, peer: str, listener: str) -> None:
        self.peer = peer
        self.listener = listener
        self.identity: Identity = ANONYMOUS
        self.identityVersion = 0
        self.outstanding: dict[int, Outstanding] = {}
        self.mustRebind = False

    def bindStarted(self, pdu: bytes, envelope: ber.Envelope) -> Identity:
        """
        A bind request is going upstream: the identity it asks for (taken
        on success).  Per RFC 4511 4.2.1, the connection is anonymous while
        a bind is in progress.
        """
        choice, credential = envelope.bindAuthentication(pdu)
        name = envelope.targetDN(pdu) or b""
        if choice == ber.SIMPLE_AUTH_TAG:
            if not name and not credential:
                return ANONYMOUS
            return Identity("simple", name, credential)
        return Identity("sasl", name)

    def bindCompleted(self, pending: Identity | None, resultCode: int) -> bool:
        """
        The backend answered a bind; returns whether the identity changed
        (a new version).  A SASL step (14) changes nothing yet.
        """
        if resultCode == ber.SASL_BIND_IN_PROGRESS:
            return False
        if resultCode == ber.SUCCESS and pending is not None:
            self.identity = pending
        else:
            self.identity = ANONYMOUS
        self.identityVersion += 1
        self.mustRebind = False
        return True

    def tlsStarted(self) -> None:
        """
        TLS was established on the connection (StartTLS): as slapd does,
        the session goes on anonymous, so an identity bound in cleartext is
        not carried into TLS (README, "StartTLS and TLS").  Links bound as
        the old identity are rebound anonymously before their next use.
        """
        if self.identity is not ANONYMOUS:
            self.identity = ANONYMOUS
            self.identityVersion += 1
        self.mustRebind = False

    def identityLost(self) -> None:
        """
        The identity could not be carried to a new upstream connection; the
        client has to bind again before anything else.
        """
        self.identity = ANONYMOUS
        self.identityVersion += 1
        self.mustRebind = True
