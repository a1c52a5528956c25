# -*- test-case-name: tests.test_sasllayer -*-
"""
Detecting a SASL security layer (signing or sealing) on a client session,
so the proxy can stop reading LDAP and relay the session's bytes opaquely.

After a successful SASL bind that negotiated integrity or confidentiality
(RFC 4422 section 3.7; AD's GSS-SPNEGO/NTLM sign and seal, GSSAPI,
DIGEST-MD5), every later byte in both directions is a SASL buffer: a
4-octet big-endian length and a wrapped token (RFC 4513 section 5.2.1.5),
no longer a BER LDAPMessage.  Whether a layer was negotiated is inside the
mechanism's opaque tokens, so the proxy detects it from the bytes instead:

  1. a bind request with a SASL mechanism that can negotiate a layer
     (L{LAYER_MECHANISMS}) is noted with the upstream link it went to;
  2. when that bind's final response is success (0), the session is
     I{armed}: the next client bytes decide;
  3. if those bytes, at a PDU boundary, do not start with 0x30 (the BER
     SEQUENCE tag of every LDAPMessage), they are a SASL buffer: a length
     prefix starting with 0x30 would announce a buffer of 768 MiB or more,
     which no mechanism allows.  The session switches to an opaque relay
     pinned to the link (same backend) that completed the bind; other links
     of the session are closed.  If they do start with 0x30, no layer was
     negotiated and the session stays LDAP.

Pure: no transports; L{ldaproute.listeners.frontend} calls it.
"""

from __future__ import annotations

from typing import Any, Final

#: SASL mechanisms that can negotiate a security layer.
LAYER_MECHANISMS: Final = frozenset({b"GSSAPI", b"GSS-SPNEGO", b"DIGEST-MD5"})

_SEQUENCE: Final = 0x30


class SecurityLayerWatch:
    """The per-session state of the detection described in the module."""

    def __init__(self) -> None:
        self._binds: dict[int, Any] = {}
        self.armed: Any = None  # the link to pin, after a successful layer-capable bind
        self.mechanism: bytes | None = None
        self._mechanisms: dict[int, bytes] = {}

    def bindSent(self, messageID: int, mechanism: bytes | None, link: Any) -> None:
        """A bind went upstream; C{mechanism} is L{None} for simple binds."""
        self.armed = None
        if mechanism is not None and mechanism.upper() in LAYER_MECHANISMS:
            self._binds[messageID] = link
            self._mechanisms[messageID] = mechanism.upper()

    def bindAnswered(self, messageID: int, resultCode: int) -> None:
        """The final response (or a SASL step, 14) to a bind arrived."""
        link = self._binds.pop(messageID, None)
        mechanism = self._mechanisms.pop(messageID, None)
        if link is not None and resultCode == 0:
            self.armed = link
            self.mechanism = mechanism

    def check(self, data: bytes, atBoundary: bool) -> Any:
        """
        Client bytes arrived: the link to pin the session to when they are
        a SASL buffer, else L{None}.  Only the first bytes after the bind
        decide; the watch disarms either way.
        """
        if self.armed is None or not data:
            return None
        link, self.armed = self.armed, None
        if atBoundary and data[0] != _SEQUENCE:
            return link
        return None
