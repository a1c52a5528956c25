"""
The session core as traces: requests and backend events in, decisions and
completions out, with no transport (mitmproxy's layer tests are the model).

Each test reads as a trace: C{bind in -> Forward; bindResponse 49 in ->
throttle counted, identity anonymous}.
"""

from __future__ import annotations

import ast
import pathlib

import attrs
from ldaptor.protocols import pureldap

from ldaproute.config import Config, Route
from ldaproute.core import decisions, identities, lostlinks, replay, session as core, slowpath, tlsphase
from ldaproute.core.policy import ListenerPolicy
from ldaproute.core.routing import Router
from ldaproute.core.session import Session, TLSPhase
from ldaproute.wire import ber
from tests import pdus

BASE = """
[backend:a]
url = ldap://a.example:389
[backend:b]
url = ldap://b.example:389
[pool:main]
backends = a
[pool:other]
backends = b
[route:people]
suffix = ou=people,dc=example,dc=com
pool = other
[route:all]
pool = main
"""


class FakeLink:
    """A link as the session sees it: an identity version and ended operations."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.boundVersion = 0
        self.ended: list[int] = []

    def operationEnded(self, messageID: int) -> None:
        self.ended.append(messageID)

    def __repr__(self) -> str:
        return f"<link {self.name}>"


class Trace:
    """One session, the time, and what it completed."""

    def __init__(self, policy: str = "", secure: bool = False, canTerminateTLS: bool = False) -> None:
        self.config = Config.fromString("[ldaproute]\nlisten = tcp:389\nrequire_tls_for_passwords = off\n" + policy + BASE)
        listener = self.config.listeners[0]
        self.policy = ListenerPolicy.fromListener(listener)
        self.now = 1000.0
        self.completed: list[tuple[int, int, str]] = []
        self.session: Session[FakeLink] = Session(
            "192.0.2.1:5000", listener, self.policy, self._completed, lambda: self.now,
            "192.0.2.1", secure, canTerminateTLS,
        )  # fmt: skip

    def _completed(self, operation: core.Outstanding[FakeLink], resultCode: int, link: FakeLink, message: str) -> None:
        self.completed.append((operation.messageID, resultCode, link.name))

    def request(self, pdu: bytes) -> object:
        """A request PDU in: the decision out."""
        return self.session.request(ber.Envelope.fromBytes(pdu), pdu, _router(self), 64)

    def forward(self, pdu: bytes, link: FakeLink, startTLS: bool = False) -> Route:
        """A request in that the session forwards; sent on C{link}."""
        decision = self.request(pdu)
        route = decision.route if isinstance(decision, core.PassStartTLS) else decision
        assert isinstance(route, Route), decision
        self.session.forwarded(ber.Envelope.fromBytes(pdu), pdu, link, route, self.now, None, startTLS)
        return route

    def respond(self, link: FakeLink, *finals: tuple[int, int, int]) -> None:
        self.session.responded(link, list(finals))


def bind(messageID: int, dn: str = "uid=a,dc=example,dc=com", password: str = "secret") -> bytes:
    return pdus.bind(dn, password, messageID)


def saslBind(messageID: int, mechanism: bytes) -> bytes:
    return pureldap.LDAPMessage(
        pureldap.LDAPBindRequest(dn=b"", sasl=True, auth=(mechanism, b"token")), id=messageID
    ).toWire()


def startTLS(messageID: int) -> bytes:
    return pureldap.LDAPMessage(pureldap.LDAPStartTLSRequest(), id=messageID).toWire()


def search(messageID: int, base: str = "ou=groups,dc=example,dc=com") -> bytes:
    return pdus.search(base, messageID)


def test_plainSearchIsForwardedAsItsRoute() -> None:
    """search in -> the Route itself (no decision object on the hot path); searchDone in -> completed."""
    trace = Trace()
    link = FakeLink("main")
    route = trace.forward(search(1), link)
    assert route.name == "all" and list(trace.session.outstanding) == [1]
    trace.respond(link, (1, ber.SEARCH_RESULT_DONE, 0))
    assert trace.completed == [(1, 0, "main")] and link.ended == [1]
    assert trace.session.outstanding == {}


def test_targetDNChoosesTheRoute() -> None:
    """search below ou=people in -> route people."""
    trace = Trace()
    assert trace.request(search(1, "uid=x,ou=people,dc=example,dc=com")).name == "people"  # type: ignore[attr-defined]


def test_failedBindIsThrottledAndLeavesAnonymous() -> None:
    """bind in -> forward; bindResponse 49 in -> throttle counted, identity anonymous; next bind -> refused 53."""
    trace = Trace("bind_throttle_failures = 1\n")
    link = FakeLink("main")
    trace.forward(bind(1), link)
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.INVALID_CREDENTIALS))
    assert trace.session.identity == core.ANONYMOUS
    assert trace.completed == [(1, ber.INVALID_CREDENTIALS, "main")]
    answer = trace.request(bind(2))
    assert answer == core.Answer(ber.UNWILLING_TO_PERFORM, answer.message, refusal=core.THROTTLED)  # type: ignore[union-attr]
    trace.session.answered(ber.Envelope.fromBytes(bind(2)), answer)  # type: ignore[arg-type]
    assert trace.session.identity == core.ANONYMOUS and trace.session.outstanding == {}


def test_successfulBindSetsIdentityAndLinkVersion() -> None:
    """bind in -> forward; bindResponse 0 in -> identity simple, the link carries the new version."""
    trace = Trace()
    link = FakeLink("main")
    trace.forward(bind(1), link)
    assert trace.session.identity == core.ANONYMOUS  # anonymous while the bind runs
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.SUCCESS))
    identity = trace.session.identity
    assert (identity.kind, identity.name) == ("simple", b"uid=a,dc=example,dc=com")
    assert link.boundVersion == trace.session.identityVersion == 1
    assert "secret" not in repr(identity)


def test_secondPoolReplaysTheSimpleBind() -> None:
    """bound on main; a new link to other -> replay (dn, password); an existing stale link -> replay too."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(bind(1), main)
    trace.respond(main, (1, ber.BIND_RESPONSE, ber.SUCCESS))
    assert trace.session.replayFor(None, False) == (b"uid=a,dc=example,dc=com", b"secret")
    assert trace.session.replayFor(0, False) == (b"uid=a,dc=example,dc=com", b"secret")
    assert trace.session.replayFor(1, False) is None
    assert trace.session.replayFor(None, True) is None  # a bind brings its own identity


def test_saslIdentityCannotBeReplayed() -> None:
    """SASL bound; a new link -> identity lost (52-free: operationsError, bind again); anything but a bind -> refused."""
    trace = Trace()
    link = FakeLink("main")
    trace.forward(saslBind(1, b"EXTERNAL"), link)
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.SUCCESS))
    assert trace.session.identity.kind == "sasl"
    assert trace.session.replayFor(None, False) is core.IDENTITY_LOST
    assert trace.session.mustRebind
    answer = trace.request(search(2))
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.OPERATIONS_ERROR
    assert isinstance(trace.request(bind(3)), Route)


def test_saslStepKeepsIdentity() -> None:
    """bindResponse 14 (SASL in progress) in -> completed 14, identity version unchanged."""
    trace = Trace()
    link = FakeLink("main")
    trace.forward(saslBind(1, b"DIGEST-MD5"), link)
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.SASL_BIND_IN_PROGRESS))
    assert trace.session.identityVersion == 0 and trace.completed == [(1, 14, "main")]


def test_bindForgetsOperationsBeforeItOnTheSameLink() -> None:
    """search 1 on main, search 2 on other, bind 3 on main; bindResponse in -> 1 forgotten (no completion), 2 kept."""
    trace = Trace()
    main, other = FakeLink("main"), FakeLink("other")
    trace.forward(search(1), main)
    trace.forward(search(2, "uid=x,ou=people,dc=example,dc=com"), other)
    trace.forward(bind(3), main)
    trace.respond(main, (3, ber.BIND_RESPONSE, ber.SUCCESS))
    assert list(trace.session.outstanding) == [2]
    assert main.ended == [1, 3] and trace.completed == [(3, 0, "main")]


def test_lostLinkAnswersItsOperations() -> None:
    """search 1, bind 2 on main, search 3 on other; main lost -> 52 for 1 and 2, identity anonymous; 3 kept."""
    trace = Trace()
    main, other = FakeLink("main"), FakeLink("other")
    trace.forward(search(1), main)
    trace.forward(bind(2), main)
    trace.forward(search(3, "uid=x,ou=people,dc=example,dc=com"), other)
    answers, replays = trace.session.linkLost(main, ber.UNAVAILABLE, "backend gone")
    assert replays == []
    assert [(m.id, m.value.resultCode) for m in map(_decodeOne, answers)] == [(1, 52), (2, 52)]
    assert trace.completed == [(1, 52, "main"), (2, 52, "main")]
    assert list(trace.session.outstanding) == [3] and trace.session.identityVersion == 1


def _compare(messageID: int) -> bytes:
    return pdus.message(
        pureldap.LDAPCompareRequest(entry="cn=x,dc=example,dc=com", ava=pureldap.LDAPAttributeValueAssertion(
            pureldap.LDAPAttributeDescription("cn"), pureldap.LDAPAssertionValue("x"))),
        messageID,
    )  # fmt: skip


def _delete(messageID: int) -> bytes:
    return pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), messageID)


def test_lostLinkKeepsReadsToReplay() -> None:
    """
    bound; search 2, compare 3, delete 4 sent on main, search 5 not sent yet,
    delete 6 not sent yet; main lost -> 2, 3 and both unsent kept to send
    again (in order), the sent delete answered 52.
    """
    trace = Trace()
    main = FakeLink("main")
    trace.forward(bind(1), main)
    trace.respond(main, (1, ber.BIND_RESPONSE, 0))
    for pdu in (search(2), _compare(3), _delete(4), search(5), _delete(6)):
        trace.forward(pdu, main)
    progress = {2: replay.SENT, 3: replay.SENT, 4: replay.SENT, 5: replay.UNSENT, 6: replay.UNSENT}
    answers, replays = trace.session.linkLost(main, ber.UNAVAILABLE, "gone", progress.__getitem__)
    assert [op.messageID for op in replays] == [2, 3, 5, 6]
    assert replays[1].sent == _compare(3) and replays[0].rule is not None
    assert [(m.id, m.value.resultCode) for m in map(_decodeOne, answers)] == [(4, 52)]
    assert list(trace.session.outstanding) == [2, 3, 5, 6]
    assert trace.session.identity.kind == "simple"  # the identity stays: the link replays it


def test_outstandingBindKeepsItsPasswordOutOfItsRepr() -> None:
    """An operation kept for replay holds the PDU as sent: a bind's password must not reach a log through it."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(bind(1, password="s3cret-pw"), main)
    operation = trace.session.outstanding[1]
    assert b"s3cret-pw" in operation.sent
    assert "s3cret-pw" not in repr(operation) and "s3cret-pw" not in str(operation)


def test_lostLinkAnswersPartlyAnsweredSearch() -> None:
    """search 2 got entries before main was lost -> 52 (no duplicate entries); search 3 kept."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(search(2), main)
    trace.forward(search(3), main)
    progress = {2: replay.ANSWERING, 3: replay.SENT}
    answers, replays = trace.session.linkLost(main, ber.UNAVAILABLE, "gone", progress.__getitem__)
    assert [op.messageID for op in replays] == [3]
    assert [_decodeOne(a).id for a in answers] == [2]


def test_lostLinkWithBindInFlightReplaysNothing() -> None:
    """search 1, bind 2, search 3 sent; main lost -> all 52: what follows a bind depends on its outcome."""
    trace = Trace()
    main = FakeLink("main")
    for pdu in (search(1), bind(2), search(3)):
        trace.forward(pdu, main)
    answers, replays = trace.session.linkLost(main, ber.UNAVAILABLE, "gone", lambda messageID: replay.SENT)
    assert replays == [] and [_decodeOne(a).id for a in answers] == [1, 2, 3]


def test_lostLinkOfSASLIdentityReplaysNothing() -> None:
    """SASL-bound (cannot be replayed); search 2 lost -> 52."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(saslBind(1, b"EXTERNAL"), main)
    trace.respond(main, (1, ber.BIND_RESPONSE, 0))
    trace.forward(search(2), main)
    answers, replays = trace.session.linkLost(main, ber.UNAVAILABLE, "gone", lambda messageID: replay.SENT)
    assert replays == [] and [_decodeOne(a).id for a in answers] == [2]


def test_lostLinkReplaysAnOperationTwiceAtMost() -> None:
    """A search replayed twice already is answered 52 the third time its link is lost."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(search(1), main)
    trace.session.outstanding[1].replays = replay.MAX_REPLAYS
    answers, replays = trace.session.linkLost(main, ber.UNAVAILABLE, "gone", lambda messageID: replay.SENT)
    assert replays == [] and [_decodeOne(a).id for a in answers] == [1]


def test_waitedOutAnswersUnavailable() -> None:
    """search 1 waited through its retry budget -> its answer is 52, completed once."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(search(1), main)
    waited = trace.session.timedOut(1, "no backend", ber.UNAVAILABLE)
    assert waited is not None
    assert _decodeOne(waited[1]).value.resultCode == ber.UNAVAILABLE
    assert trace.session.outstanding == {}


def test_replayRefusedLosesIdentity() -> None:
    """bound; the replay on a new link refused 49 -> its operations answered 1, mustRebind."""
    trace = Trace()
    main = FakeLink("main")
    trace.forward(search(1), main)
    answers = trace.session.replayRefused(main, ber.INVALID_CREDENTIALS)
    [answer] = map(_decodeOne, answers)
    assert answer.value.resultCode == ber.OPERATIONS_ERROR and "bind again" in answer.value.errorMessage.decode()
    assert trace.session.mustRebind


def test_timeoutAnswersTimeLimitExceeded() -> None:
    """bind 1 outstanding; timeout -> answer 3, identity anonymous; a second timeout for it -> nothing."""
    trace = Trace()
    link = FakeLink("main")
    trace.forward(bind(1), link)
    timedOut = trace.session.timedOut(1, "operation_timeout reached")
    assert timedOut is not None
    operation, answer = timedOut
    assert operation.messageID == 1 and _decodeOne(answer).value.resultCode == ber.TIME_LIMIT_EXCEEDED
    assert trace.session.identityVersion == 1
    assert trace.session.timedOut(1, "again") is None


def test_protocolMistakesClose() -> None:
    """messageID 0 in -> Close; a messageID in use in -> Close (protocolError, reason malformed)."""
    trace = Trace()
    zero = trace.request(search(0))
    assert isinstance(zero, core.Close) and (zero.resultCode, zero.reason) == (ber.PROTOCOL_ERROR, "malformed")
    trace.forward(search(1), FakeLink("main"))
    again = trace.request(search(1))
    assert isinstance(again, core.Close) and "already in use" in again.message


def test_unbindAndAbandon() -> None:
    """unbind in -> UNBIND; abandon 1 in -> Abandon(1), the operation handed back once."""
    trace = Trace()
    assert trace.request(pureldap.LDAPMessage(pureldap.LDAPUnbindRequest(), id=5).toWire()) is core.UNBIND
    trace.forward(search(1), FakeLink("main"))
    abandon = trace.request(pureldap.LDAPMessage(pureldap.LDAPAbandonRequest(id=1), id=6).toWire())
    assert abandon == core.Abandon(1)
    operation = trace.session.abandon(1)
    assert operation is not None and operation.messageID == 1
    assert trace.session.abandon(1) is None


def test_maxOutstandingAnswersBusy() -> None:
    """max_outstanding = 1: search 1 forwarded; search 2 in -> busy (51)."""
    trace = Trace("max_outstanding = 1\n")
    trace.forward(search(1), FakeLink("main"))
    answer = trace.request(search(2))
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.BUSY


def test_cleartextSimpleBindRefused() -> None:
    """require_tls_for_passwords: bind with password in cleartext -> 13; over ldaps -> forwarded."""
    trace = Trace()
    listener = attrs.evolve(trace.config.listeners[0], requireTLSForPasswords=True)
    plain: Session[FakeLink] = Session("p", listener, trace.policy, trace._completed, lambda: trace.now)
    envelope = ber.Envelope.fromBytes(bind(1))
    router = _router(trace)
    answer = plain.request(envelope, bind(1), router, 64)
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.CONFIDENTIALITY_REQUIRED
    assert answer.secret is not None and answer.secret.kind == "simple_bind"
    plain.answered(envelope, answer)
    assert plain.identityVersion == 1  # RFC 4511 4.2.1: the failed bind leaves it anonymous
    secure: Session[FakeLink] = Session("p", listener, trace.policy, trace._completed, lambda: trace.now, None, True)
    assert isinstance(secure.request(envelope, bind(1), router, 64), Route)


def test_anonymousBindWithoutRouteIsAnsweredHere() -> None:
    """no route for binds; anonymous bind in -> success answered by the proxy; named bind -> 49."""
    trace = Trace()
    trace.config = Config.fromString(
        "[ldaproute]\nlisten = tcp:389\n" + BASE.replace("[route:all]\npool = main\n", "")
    )
    assert trace.request(bind(1, "", "")) == core.Answer(ber.SUCCESS, "")
    assert trace.session.identityVersion == 1
    answer = trace.request(bind(2))
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.INVALID_CREDENTIALS


def test_startTLSTerminated() -> None:
    """StartTLS in (terminate) -> START_TLS, phase handshaking, secure; handshake done -> secure; again -> refused."""
    trace = Trace()
    session = _withStartTLS(trace, "terminate", canTerminate=True)
    assert session.request(ber.Envelope.fromBytes(startTLS(1)), startTLS(1), _router(trace), 64) is core.START_TLS
    assert session.tls.phase is TLSPhase.HANDSHAKING and session.tls.secure
    assert session.tls.handshakeCompleted() and session.tls.phase is TLSPhase.SECURE
    again = session.request(ber.Envelope.fromBytes(startTLS(2)), startTLS(2), _router(trace), 64)
    assert isinstance(again, core.Answer) and again.resultCode == ber.OPERATIONS_ERROR


def test_startTLSWithoutCertificateOrWhileBusy() -> None:
    """StartTLS with no certificate -> 52; with an operation outstanding -> 1; off -> 2."""
    trace = Trace()
    noCert = _withStartTLS(trace, "terminate", canTerminate=False)
    answer = noCert.request(ber.Envelope.fromBytes(startTLS(1)), startTLS(1), _router(trace), 64)
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.UNAVAILABLE
    off = _withStartTLS(trace, "off", canTerminate=True)
    answer = off.request(ber.Envelope.fromBytes(startTLS(1)), startTLS(1), _router(trace), 64)
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.PROTOCOL_ERROR
    busy = _withStartTLS(trace, "terminate", canTerminate=True)
    busy.forwarded(ber.Envelope.fromBytes(search(1)), search(1), FakeLink("main"), _route(trace), 0.0, None)
    answer = busy.request(ber.Envelope.fromBytes(startTLS(2)), startTLS(2), _router(trace), 64)
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.OPERATIONS_ERROR
    assert busy.tls.phase is TLSPhase.PLAIN


def test_startTLSPassedThrough() -> None:
    """StartTLS in (passthrough) -> PassStartTLS(route), pending; search in -> 1 (wait); success in -> opaque, pinned."""
    trace = Trace()
    session = _withStartTLS(trace, "passthrough", canTerminate=False)
    link = FakeLink("main")
    decision = session.request(ber.Envelope.fromBytes(startTLS(1)), startTLS(1), _router(trace), 64)
    assert isinstance(decision, core.PassStartTLS) and decision.route.name == "all"
    session.forwarded(ber.Envelope.fromBytes(startTLS(1)), startTLS(1), link, decision.route, 0.0, None, True)
    assert session.tls.phase is TLSPhase.STARTTLS_PENDING
    waiting = session.request(ber.Envelope.fromBytes(search(2)), search(2), _router(trace), 64)
    assert isinstance(waiting, core.Answer) and "StartTLS is in progress" in waiting.message
    session.responded(link, [(1, ber.EXTENDED_RESPONSE, ber.SUCCESS)])
    assert session.tls.phase is TLSPhase.OPAQUE and session.tls.opaqueLink is link
    assert session.tls.clientBytes(b"\x16\x03\x01", True) is link


def test_startTLSPassthroughRefusedOrLost() -> None:
    """StartTLS passed through; answered 2 -> plain again; passed again and its link lost -> plain, answered 52."""
    trace = Trace()
    session = _withStartTLS(trace, "passthrough", canTerminate=False)
    link = FakeLink("main")
    route = _route(trace)
    session.forwarded(ber.Envelope.fromBytes(startTLS(1)), startTLS(1), link, route, 0.0, None, True)
    session.responded(link, [(1, ber.EXTENDED_RESPONSE, ber.PROTOCOL_ERROR)])
    assert session.tls.phase is TLSPhase.PLAIN and session.tls.opaqueLink is None
    session.forwarded(ber.Envelope.fromBytes(startTLS(2)), startTLS(2), link, route, 0.0, None, True)
    [answer], _ = session.linkLost(link, ber.UNAVAILABLE, "gone")
    assert _decodeOne(answer).value.resultCode == ber.UNAVAILABLE
    assert session.tls.phase is TLSPhase.PLAIN and session.tls.refusal() is None


def test_saslSecurityLayerGoesOpaque() -> None:
    """GSSAPI bind forwarded; success in -> armed; non-LDAP bytes in -> opaque, pinned to the bind's link."""
    trace = Trace()
    link = FakeLink("main")
    trace.forward(saslBind(1, b"GSSAPI"), link)
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.SUCCESS))
    tls = trace.session.tls
    assert tls.layerWatch.armed is link
    assert tls.clientBytes(b"\x00\x00\x00\x10wrapped", True) is link
    assert tls.phase is TLSPhase.OPAQUE and tls.opaqueLink is link


def test_saslWithoutLayerStaysLDAP() -> None:
    """GSSAPI bind success; LDAP bytes in -> not opaque, the watch disarmed."""
    trace = Trace()
    link = FakeLink("main")
    trace.forward(saslBind(1, b"GSSAPI"), link)
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.SUCCESS))
    assert trace.session.tls.clientBytes(search(2), True) is None
    assert trace.session.tls.phase is TLSPhase.PLAIN and trace.session.tls.layerWatch.armed is None


def test_anonymousRefusedWhenNotAllowed() -> None:
    """allow_anonymous = off: search in -> 50; StartTLS in -> not refused for being anonymous."""
    trace = Trace("allow_anonymous = off\n")
    answer = trace.request(search(1))
    assert isinstance(answer, core.Answer) and answer.resultCode == ber.INSUFFICIENT_ACCESS_RIGHTS
    decision = trace.request(startTLS(2))
    assert not (isinstance(decision, core.Answer) and decision.resultCode == ber.INSUFFICIENT_ACCESS_RIGHTS)


def test_deepFilterRefused() -> None:
    """a search nested past the limit in -> adminLimitExceeded (11)."""
    trace = Trace()
    pdu = pureldap.LDAPMessage(
        pureldap.LDAPSearchRequest(baseObject=b"dc=example,dc=com", filter=_nested(40)), id=1
    ).toWire()
    answer = trace.session.request(ber.Envelope.fromBytes(pdu), pdu, _router(trace), 8)
    assert isinstance(answer, core.Answer) and answer.resultCode == 11


def test_searchAcrossRoutesIsSpanned() -> None:
    """search at dc=example,dc=com, subtree, over two routes -> SpanSearch with a sub-search per pool."""
    trace = Trace()
    trace.config = Config.fromString(
        "[ldaproute]\nlisten = tcp:389\n"
        + BASE.replace("[route:all]\npool = main\n", "[route:all]\nsuffix = dc=example,dc=com\npool = main\n")
    )
    decision = trace.request(search(1, "dc=example,dc=com"))
    assert isinstance(decision, core.SpanSearch)
    assert sorted(sub.pool for sub in decision.subs) == ["main", "other"]
    assert all(sub.subID >= slowpath.FANOUT_ID_BASE for sub in decision.subs)


def test_noTwistedImports() -> None:
    """The session core stays pure: no module of it imports Twisted."""
    for module in (core, decisions, identities, lostlinks, tlsphase, slowpath):
        # (from the file: a compiled build's module has no source to inspect)
        source = pathlib.Path(__file__).resolve().parent.parent / (module.__name__.replace(".", "/") + ".py")
        tree = ast.parse(source.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [name for name in names if name.split(".")[0] == "twisted"], module.__name__


def _withStartTLS(trace: Trace, mode: str, canTerminate: bool) -> Session[FakeLink]:
    listener = attrs.evolve(trace.config.listeners[0], starttls=mode)
    return Session("p", listener, trace.policy, trace._completed, lambda: trace.now, None, False, canTerminate)


def _router(trace: Trace) -> Router:
    return Router(trace.config.routes)


def _route(trace: Trace) -> Route:
    [route] = [route for route in trace.config.routes if route.name == "all"]
    return route


def _nested(depth: int) -> pureldap.LDAPFilter:
    inner: pureldap.LDAPFilter = pureldap.LDAPFilter_present(b"cn")
    for _ in range(depth):
        inner = pureldap.LDAPFilter_not(inner)
    return inner


def _decodeOne(pdu: bytes) -> pureldap.LDAPMessage:
    [message] = pdus.decode(pdu)
    return message


def test_startTLSAfterBindLeavesAnonymous() -> None:
    """bound; StartTLS in (terminate) -> START_TLS, identity anonymous (as slapd), links rebound before reuse."""
    trace = Trace()
    session = _withStartTLS(trace, "terminate", canTerminate=True)
    link = FakeLink("main")
    session.forwarded(ber.Envelope.fromBytes(bind(1)), bind(1), link, _route(trace), 0.0, None)
    session.responded(link, [(1, ber.BIND_RESPONSE, ber.SUCCESS)])
    assert session.identity.kind == "simple" and link.boundVersion == 1
    assert session.request(ber.Envelope.fromBytes(startTLS(2)), startTLS(2), _router(trace), 64) is core.START_TLS
    assert session.identity == core.ANONYMOUS and session.identityVersion == 2
    assert session.replayFor(link.boundVersion, False) == (b"", b"")  # an anonymous rebind on the old link


def test_sharedThrottleAsksTheFleetFirst() -> None:
    """shared throttle: bind in -> CHECK_FLEET; again with the fleet's counts -> forward; 49 -> counted before the answer."""
    trace = Trace("bind_throttle_failures = 3\n")
    shared: list[tuple[str, str]] = []
    assert trace.policy.throttle is not None
    trace.policy.throttle.shareWith(lambda kind, digest, now: shared.append((kind, digest)) or "ack")
    assert trace.request(bind(1)) is core.CHECK_FLEET
    trace.session.fleetChecked = True
    link = FakeLink("main")
    trace.forward(bind(1), link)
    assert not trace.session.fleetChecked  # only ever for the bind that waited
    assert trace.session.countBindFailures([(1, ber.BIND_RESPONSE, ber.INVALID_CREDENTIALS)]) == ["ack", "ack"]
    assert [kind for kind, _ in shared] == ["address", "dn"]
    trace.respond(link, (1, ber.BIND_RESPONSE, ber.INVALID_CREDENTIALS))
    assert len(shared) == 2  # not counted twice
