# -*- test-case-name: tests.test_session -*-
"""
Where a client session stands with TLS and with SASL security layers: the
named phases of L{TLSPhase} and their transitions (L{TLSState}), one part
of L{ldaproute.core.session.Session}.  Pure, no Twisted imports.
"""

from __future__ import annotations

import enum
from typing import Final, Generic, TypeVar

from ldaproute.core.decisions import START_TLS, Answer, StartTLS
from ldaproute.core.sasllayer import SecurityLayerWatch
from ldaproute.wire import ber

#: a link, as the session's owner knows it (compared by identity only)
L = TypeVar("L")


class TLSPhase(enum.Enum):
    """
    Where a session stands with TLS.

    C{PLAIN} -> C{HANDSHAKING} (StartTLS terminated here, answered, the
    handshake running) -> C{SECURE} (handshake done; ldaps connections
    start here).  C{PLAIN} -> C{STARTTLS_PENDING} (StartTLS passed to a
    backend, its answer awaited) -> C{OPAQUE} on success, back to C{PLAIN}
    on failure or when its link is lost.  C{OPAQUE} is also where a
    negotiated SASL security layer leads: no LDAP is read any more, bytes
    are relayed to one pinned link.
    """

    PLAIN = "plain"
    STARTTLS_PENDING = "starttls-pending"
    HANDSHAKING = "handshaking"
    SECURE = "secure"
    OPAQUE = "opaque"


#: Phases in which the client's bytes travel inside TLS (for policy): from
#: the StartTLS answer on, every byte is.
_SECURE_PHASES: Final = frozenset({TLSPhase.HANDSHAKING, TLSPhase.SECURE, TLSPhase.OPAQUE})

_IN_PROGRESS: Final = Answer(ber.OPERATIONS_ERROR, "StartTLS is in progress: wait for its response")
_OFF: Final = Answer(ber.PROTOCOL_ERROR, "StartTLS is not offered on this listener")
_ALREADY: Final = Answer(ber.OPERATIONS_ERROR, "TLS is already established on this connection")
_OUTSTANDING: Final = Answer(ber.OPERATIONS_ERROR, "StartTLS is refused while operations are outstanding")
_NO_CERTIFICATE: Final = Answer(ber.UNAVAILABLE, "StartTLS is not available: no certificate loaded")


class TLSState(Generic[L]):
    """
    The TLS phase of one session, the StartTLS passed through (if one is
    awaited), and the watch for a SASL security layer.

    @ivar phase: the L{TLSPhase}.
    @ivar secure: whether the client's bytes travel inside TLS (for
        policy): an attribute, kept with C{phase}, as every request reads it.
    @ivar opaqueLink: in phase C{OPAQUE}, the link bytes are relayed to.
    @ivar layerWatch: the L{SecurityLayerWatch} of the session's binds.
    """

    def __init__(self, mode: str, secure: bool, canTerminate: bool) -> None:
        self._mode = mode
        self._canTerminate = canTerminate
        self.phase = TLSPhase.PLAIN
        self.secure = False
        self._enter(TLSPhase.SECURE if secure else TLSPhase.PLAIN)
        self.opaqueLink: L | None = None
        self.layerWatch = SecurityLayerWatch()
        #: the messageID of the StartTLS passed through and not yet answered
        self.passthroughID: int | None = None

    def _enter(self, phase: TLSPhase) -> None:
        self.phase = phase
        self.secure = phase in _SECURE_PHASES

    def refusal(self) -> Answer | None:
        """Whether any request must wait: one does while StartTLS is passed through."""
        return _IN_PROGRESS if self.passthroughID is not None else None

    def startTLS(self, outstanding: int) -> Answer | StartTLS | None:
        """
        The StartTLS extended request (RFC 4511 4.14, RFC 4513 3) with
        C{outstanding} other operations: an answer, L{START_TLS}
        (terminated here, the phase is C{HANDSHAKING} now), or L{None} to
        pass it through (see L{passing}).
        """
        if self._mode == "off":
            return _OFF
        if self.phase is not TLSPhase.PLAIN:
            return _ALREADY
        if outstanding:
            return _OUTSTANDING
        if self._mode == "passthrough":
            return None
        if not self._canTerminate:
            return _NO_CERTIFICATE
        self._enter(TLSPhase.HANDSHAKING)  # every byte from now on is inside TLS
        return START_TLS

    def passing(self, messageID: int) -> None:
        """StartTLS C{messageID} went to a backend."""
        self.passthroughID = messageID
        self._enter(TLSPhase.STARTTLS_PENDING)

    def answered(self, messageID: int, resultCode: int, link: L) -> None:
        """
        The final response to the StartTLS passed through arrived on
        C{link}: on success the session is pinned to it.
        """
        self.passthroughID = None
        if resultCode == ber.SUCCESS:
            self._enter(TLSPhase.OPAQUE)
            self.opaqueLink = link
        else:
            self._enter(TLSPhase.PLAIN)  # the session stays cleartext and usable

    def linkLost(self, pendingLink: L | None, link: L) -> None:
        """
        C{link} is gone; C{pendingLink} holds the StartTLS passed through
        (L{None}: answered already).  The session stays cleartext.
        """
        if self.passthroughID is not None and (pendingLink is None or pendingLink is link):
            self.passthroughID = None
            self._enter(TLSPhase.PLAIN)

    def handshakeCompleted(self) -> bool:
        """The client finished a TLS handshake; C{True} when it was StartTLS's."""
        if self.phase is TLSPhase.HANDSHAKING:
            self._enter(TLSPhase.SECURE)
            return True
        return False

    def clientBytes(self, data: bytes, atBoundary: bool) -> L | None:
        """
        Bytes from the client while opaque or watching for a SASL layer:
        the link to relay them to as they are, or L{None} when they are
        LDAP (see L{ldaproute.core.sasllayer}).
        """
        if self.opaqueLink is not None:
            return self.opaqueLink
        link: L | None = self.layerWatch.check(data, atBoundary)
        if link is not None:
            self._enter(TLSPhase.OPAQUE)
            self.opaqueLink = link
        return link
