# -*- test-case-name: tests.test_session -*-
"""
The values of a client session (L{ldaproute.core.session}): what it keeps
(L{Identity}, L{Outstanding}) and what it decides about a request (what
L{ldaproute.core.session.Session.request} returns besides the L{Route} of
a plain forward, which is returned as it is).  Decisions are frozen
values, compared by value in the trace tests; the ones without fields are
shared constants, so the common decisions allocate nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import attrs

from ldaproute.core.dn import DN, parseDNBytes
from ldaproute.core.fanout import Plan, SubSearch
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.config import Route
    from ldaproute.core.secrets import Secret


class SessionLink(Protocol):
    """
    What the session needs of a link (L{ldaproute.backends.interfaces.IBackendLink}
    provides it): the identity version it carries, and being told that an
    operation ended.
    """

    boundVersion: int

    def operationEnded(self, messageID: int) -> None: ...


L = TypeVar("L", bound=SessionLink)


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

    @classmethod
    def ofBind(cls, pdu: bytes, envelope: ber.Envelope) -> Identity:
        """
        The identity a bind request asks for (the session takes it on
        success).  Per RFC 4511 4.2.1, the connection is anonymous while
        a bind is in progress.
        """
        choice, credential = envelope.bindAuthentication(pdu)
        name = envelope.targetDN(pdu) or b""
        if choice == ber.SIMPLE_AUTH_TAG:
            if not name and not credential:
                return ANONYMOUS
            return cls("simple", name, credential)
        return cls("sasl", name)

    @property
    def replayable(self) -> bool:
        return self.kind != "sasl"

    @property
    def dn(self) -> DN | None:
        """The bound DN, parsed, or L{None} for anonymous or unparsable."""
        if self.kind == "anonymous" or not self.name:
            return None
        try:
            return parseDNBytes(self.name)
        except ValueError:
            return None


ANONYMOUS = Identity("anonymous")


@attrs.define
class Outstanding(Generic[L]):
    """An operation sent upstream and not yet answered."""

    messageID: int
    opTag: int
    link: L
    startedAt: float
    route: str
    pending: Identity | None = None  # for binds: the identity on success
    summary: object = None  # for the access log: accesslog.RequestSummary
    #: the route (a L{ldaproute.config.Route}) and the PDU as sent (after
    #: its rewrite), to send it again if its link is lost (L{ldaproute.core.replay})
    rule: Route | None = None
    #: (never in a repr: a bind's PDU carries its password)
    sent: bytes = attrs.field(default=b"", repr=False)
    replays: int = 0


# --- decisions ------------------------------------------------------------


@attrs.frozen
class Answer:
    """
    The proxy answers the request itself with C{resultCode}.

    @ivar route: the route that decided (C{""} when none did), for metrics.
    @ivar refusal: for a bind refused by policy, the event name to log
        (C{"cleartext simple bind refused"}, L{THROTTLED}); once such an
        answer is written, L{Session.answered} leaves the session
        anonymous (RFC 4511 4.2.1).
    @ivar secret: for a request refused for carrying a password over a
        cleartext connection (confidentialityRequired, 13), what it carried
        (L{ldaproute.core.secrets.Secret}: logged and counted, never the
        secret itself); a bind refused so leaves the session anonymous too.
    """

    resultCode: int
    message: str
    route: str = ""
    refusal: str | None = None
    secret: Secret | None = None


@attrs.frozen
class Close:
    """
    The stream cannot go on: Notice of Disconnection with C{resultCode},
    then close.  C{reason} is a L{ber.FramingError} reason word.
    """

    resultCode: int
    message: str
    reason: str


@attrs.frozen
class StartTLS:
    """Answer StartTLS with success and start the TLS handshake here."""


@attrs.frozen
class PassStartTLS:
    """Forward StartTLS to C{route}'s pool; its success pins that link."""

    route: Route


@attrs.frozen
class SpanSearch:
    """
    Serve a search with a L{ldaproute.core.fanout.FanOut} over the
    sub-searches C{subs} (one link per sub-search's pool is needed).
    """

    plan: Plan
    subs: list[SubSearch]
    sizeLimit: int


@attrs.frozen
class Abandon:
    """The client abandons its operation C{messageID}."""

    messageID: int


@attrs.frozen
class Unbind:
    """The client ends the session (no answer; links closed with Unbind)."""


@attrs.frozen
class CheckFleet:
    """
    A bind the throttle lets through, when throttling is shared with other
    processes: ask the fleet for its latest counts first, then let the
    session decide again (with C{Session.fleetChecked} set).
    """


START_TLS: Final = StartTLS()
CHECK_FLEET: Final = CheckFleet()
UNBIND: Final = Unbind()

#: L{Answer.refusal} for a bind the throttle refused.
THROTTLED: Final = "bind throttled"

#: The answer when an operation needs an upstream connection that cannot
#: carry the client's (SASL) identity.
IDENTITY_LOST: Final = Answer(
    ber.OPERATIONS_ERROR,
    "this operation needs a new upstream connection and a SASL bind cannot be replayed: bind again",
)
