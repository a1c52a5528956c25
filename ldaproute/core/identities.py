# -*- test-case-name: tests.test_session -*-
"""
Who a client is, as far as its session knows: the identity its last bind
established, a version that changes with every bind (and StartTLS), and
what a link carrying an older version must do before it serves the next
operation (replay the simple bind, or make the client bind again).

L{Identities} is the base of L{ldaproute.core.lostlinks.LostLinks} and so
of L{ldaproute.core.session.Session}; no Twisted imports.
"""

from __future__ import annotations

from typing import Generic

from ldaproute.core.decisions import ANONYMOUS, IDENTITY_LOST, Answer, Identity, L, Outstanding
from ldaproute.wire import ber


class Identities(Generic[L]):
    """
    A session's identity and its version (a mixin; see the module docstring).

    @ivar identity: the identity the last completed bind established.
    @ivar identityVersion: bumped on every change; a link remembers the
        version it carries (C{boundVersion}).
    @ivar mustRebind: the identity was lost on the way to a new link: only
        a bind is served until the client binds again.
    """

    # what the session provides
    outstanding: dict[int, Outstanding[L]]

    def __init__(self) -> None:
        self.identity: Identity = ANONYMOUS
        self.identityVersion = 0
        self.mustRebind = False

    def replayFor(self, boundVersion: int | None, isBind: bool) -> tuple[bytes, bytes] | Answer | None:
        """
        How a link that carries identity version C{boundVersion} (L{None}:
        a link about to be opened) can serve the next operation: L{None}
        as it is, the C{(bindDN, password)} to replay first, or
        L{IDENTITY_LOST} when the identity cannot be carried.
        """
        identity = self.identity
        if boundVersion is not None and (isBind or boundVersion == self.identityVersion):
            return None
        if not isBind and not identity.replayable:
            self.identityLost()
            return IDENTITY_LOST
        if isBind or (boundVersion is None and identity.kind == "anonymous"):
            return None
        return (identity.name, identity.password)

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

    def bindIdentityLearned(self, messageID: int, identity: Identity) -> None:
        """
        Shared mode learned the identity a SASL bind in flight authorizes
        (Who Am I, before the bind's success is delivered): the session
        takes that identity, not the bind's name, on success.
        """
        operation = self.outstanding.get(messageID)
        if operation is not None and operation.opTag == ber.BIND_REQUEST:
            operation.pending = identity

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
