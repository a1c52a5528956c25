# -*- test-case-name: tests.test_secrets -*-
"""
Which requests carry a reusable secret, and which kind: the one place the
proxy decides what must never cross a cleartext client connection.

A request carries a secret when it is

  - a simple bind with a password (an empty password is an anonymous or
    unauthenticated bind, RFC 4513 5.1.2, and carries none);
  - a SASL bind with a mechanism in L{CLEARTEXT_MECHANISMS}, whatever its
    credentials: LOGIN sends the password in a later step, so the first
    request is judged by its mechanism alone;
  - the Password Modify extended operation (RFC 3062), whatever it holds:
    the old and new passwords travel in the request, and a request without
    a new one makes the server generate one and return it in the clear;
  - an add or modify carrying at least one value of an attribute in the
    listener's secret attributes (a modify's delete with values names the
    old password, which is how Active Directory changes one);
  - a compare against such an attribute (applications that check
    passwords with compare send the candidate password).

Search filters are not judged: reading every filter of every search is the
hot path, and a filter that matches on a password attribute is refused by
any directory's access rules.  Controls carry no credentials in the
controls the proxy knows of.

Attribute types compare case-insensitively, with their options removed
(C{userPassword;binary} is C{userPassword}), and by numeric OID for the
well-known password attributes (C{2.5.4.35} is C{userPassword}).

No Twisted here: the frontend calls L{SecretPolicy.secretIn} before
routing, and tests call it with PDUs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import attrs

from ldaproute.wire import ber
from ldaproute.wire.attributes import valuedAttributes, withoutValues

if TYPE_CHECKING:
    from ldaproute.config import Config

#: SASL mechanisms whose exchange carries a reusable secret in the clear:
#: the password (PLAIN, RFC 4616; LOGIN, draft-murchison-sasl-login) or a
#: bearer token (OAUTHBEARER, RFC 7628, which itself requires TLS;
#: XOAUTH2, its predecessor).  Challenge-response mechanisms (SCRAM-*,
#: DIGEST-MD5, CRAM-MD5, NTLM, GSSAPI, GSS-SPNEGO) and EXTERNAL are not.
CLEARTEXT_MECHANISMS: Final = frozenset({b"PLAIN", b"LOGIN", b"OAUTHBEARER", b"XOAUTH2"})

#: The Password Modify extended operation (RFC 3062).
PASSWORD_MODIFY_OID: Final = b"1.3.6.1.4.1.4203.1.11.1"

#: C{secret_attributes} when the configuration does not say: the password
#: attributes of OpenLDAP, 389-ds and AD (C{unicodePwd}), RFC 3112's
#: C{authPassword}, and the hashes that authenticate as well as the
#: password does (Samba's NT/LM hashes, MIT Kerberos's keys).
DEFAULT_SECRET_ATTRIBUTES: Final = (
    "userPassword",
    "unicodePwd",
    "authPassword",
    "sambaNTPassword",
    "sambaLMPassword",
    "krbPrincipalKey",
)

#: Numeric OIDs clients may send instead of the attribute's name.
_ATTRIBUTE_OIDS: Final = {
    "userpassword": "2.5.4.35",
    "authpassword": "1.3.6.1.4.1.4203.1.3.4",
    "unicodepwd": "1.2.840.113556.1.4.90",
}

#: The only operations L{SecretPolicy.secretIn} looks into: callers test a
#: request's tag against it first, so a search (the hot path) costs one set
#: lookup and no call.
JUDGED_OPERATIONS: Final = frozenset(
    {ber.BIND_REQUEST, ber.EXTENDED_REQUEST, ber.ADD_REQUEST, ber.MODIFY_REQUEST, ber.COMPARE_REQUEST}
)

_SUPPORTED_SASL_MECHANISMS: Final = b"supportedSASLMechanisms"


@attrs.frozen
class Secret:
    """
    A secret found in a request: what the proxy logs and counts about it,
    never the secret itself.

    @ivar kind: the metric label: C{simple_bind}, C{sasl_bind},
        C{password_modify}, C{add}, C{modify} or C{compare}.
    @ivar mechanism: for SASL binds, the mechanism as sent.
    @ivar attribute: for add, modify and compare, the attribute type as sent.
    """

    kind: str
    mechanism: str | None = None
    attribute: str | None = None

    @property
    def refusal(self) -> str:
        """The diagnosticMessage of the confidentialityRequired answer."""
        return f"{self.description} needs TLS here: use StartTLS or ldaps"

    @property
    def description(self) -> str:
        """What the request is, in a few words, for messages and logs."""
        if self.kind == "simple_bind":
            return "a simple bind with a password"
        if self.kind == "sasl_bind":
            return f"a SASL {self.mechanism} bind (it sends the password in the clear)"
        if self.kind == "password_modify":
            return "the Password Modify operation"
        if self.kind == "compare":
            return f"a compare against {self.attribute}"
        if self.kind == "add":
            return f"an add writing {self.attribute}"
        return f"a modify writing {self.attribute}"


def attributeKey(name: str | bytes) -> str:
    """An attribute type reduced to what identifies it: lower case, no options."""
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    return text.split(";", 1)[0].strip().lower()


def refusesMechanism(mechanism: bytes) -> bool:
    """Whether a SASL mechanism carries a reusable secret in the clear."""
    return mechanism.strip().upper() in CLEARTEXT_MECHANISMS


class SecretPolicy:
    """
    The secret rules of one listener: the attributes that count as
    secrets, turned once into the set the scan compares against.
    """

    def __init__(self, secretAttributes: Iterable[str] = DEFAULT_SECRET_ATTRIBUTES) -> None:
        keys = set()
        for name in secretAttributes:
            key = attributeKey(name)
            keys.add(key.encode("utf-8"))
            oid = _ATTRIBUTE_OIDS.get(key)
            if oid is not None:
                keys.add(oid.encode("ascii"))
        self._attributes = frozenset(keys)

    def isSecretAttribute(self, name: bytes) -> bool:
        """Whether the attribute type C{name} (as sent) is a secret one."""
        return name.split(b";", 1)[0].strip().lower() in self._attributes

    def secretIn(self, pdu: bytes, envelope: ber.Envelope) -> Secret | None:
        """
        The secret the request C{pdu} carries, or L{None}.

        @raise ber.FramingError: the request is malformed where it was read.
        """
        tag = envelope.opTag
        if tag not in JUDGED_OPERATIONS:
            return None
        if tag == ber.BIND_REQUEST:
            choice, credential = envelope.bindAuthentication(pdu)
            if choice == ber.SIMPLE_AUTH_TAG:
                return Secret("simple_bind") if credential else None
            if choice == ber.SASL_AUTH_TAG and refusesMechanism(credential):
                return Secret("sasl_bind", mechanism=credential.decode("ascii", "replace"))
            return None
        if tag == ber.EXTENDED_REQUEST:
            return Secret("password_modify") if envelope.extendedName(pdu) == PASSWORD_MODIFY_OID else None
        for name in valuedAttributes(pdu, envelope):
            if self.isSecretAttribute(name):
                kind = "add" if tag == ber.ADD_REQUEST else "modify" if tag == ber.MODIFY_REQUEST else "compare"
                return Secret(kind, attribute=name.decode("utf-8", "replace"))
        return None


def cleartextRootDSE(pdu: bytes) -> bytes:
    """
    A root DSE entry PDU as a client without TLS may see it: without the
    C{supportedSASLMechanisms} values it would be refused for
    (L{CLEARTEXT_MECHANISMS}), so that a client picking the strongest
    mechanism advertised is not invited to send its password in the
    clear.  Any other PDU is returned as it is.
    """
    return withoutValues(pdu, _SUPPORTED_SASL_MECHANISMS, refusesMechanism)


def _offersTLS(endpoints: Iterable[str], starttls: str) -> bool:
    return starttls != "off" or any(
        description.startswith(("ssl:", "tls:", "haproxy:ssl:")) for description in endpoints
    )


def cleartextBackendWarnings(config: Config) -> list[str]:
    """
    What an operator should know about passwords and cleartext legs, one
    sentence each, for C{ldaproute check}:

      - a listener that accepts passwords without TLS
        (C{require_tls_for_passwords = off});
      - a backend reached without TLS while some listener takes TLS
        clients: their passwords cross the proxy's link to it in the clear,
        and a directory that offers PLAIN and LOGIN only over TLS (slapd's
        default) hides them from C{supportedSASLMechanisms} on that link and
        refuses them (48).  The proxy relays what the backend says rather
        than advertise mechanisms the backend refuses.
    """
    warnings = []
    tlsListeners = []
    for listener in config.listeners:
        if not listener.requireTLSForPasswords:
            warnings.append(
                f"listener {listener.name}: require_tls_for_passwords = off, so passwords "
                "(binds, Password Modify, writes of secret attributes) are accepted in cleartext"
            )
        if _offersTLS(listener.endpoints, listener.starttls):
            tlsListeners.append(listener.name)
    if not tlsListeners:
        return warnings
    for name, backend in sorted(config.backends.items()):
        if backend.tls == "none" and backend.url.scheme == "ldap":
            warnings.append(
                f"backend {name}: reached without TLS (tls = none), so passwords that clients of "
                f"listener {', '.join(tlsListeners)} send over TLS cross the proxy's link to it in cleartext, "
                "and a directory that offers SASL PLAIN and LOGIN only over TLS (slapd's default) hides them "
                "from supportedSASLMechanisms and refuses them there; set tls = starttls or ldaps"
            )
    return warnings
