"""
Property tests of everything that parses bytes, beyond the framer's own
(tests/test_ber.py): envelope reads on mutated valid PDUs, the backend
response scanner, the filter-depth walk, and the whole client-facing
protocol fed arbitrary byte streams on in-memory backends.

The invariants: no exception other than L{ber.FramingError} from the
parsers; from the protocol, none at all; and every request that carries a
messageID gets exactly one final response unless the connection was closed
with a Notice of Disconnection.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from ldaproute.core import limits
from tests import pdus
from tests.fakes import Client, proxy

CONFIG = """
[ldaproute]
listen = tcp:10389
max_pdu_bytes = 4000
[backend:a]
url = ldap://a.example:389
[backend:b]
url = ldap://b.example:389
[pool:main]
backends = a, b
[pool:corp]
backends = b
[route:corp]
suffix = dc=corp,dc=example,dc=com
pool = corp
[route:all]
pool = main
"""

def profile(examples: int) -> Any:
    return settings(
        max_examples=examples, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


def requestPDUs(messageID: int) -> list[bytes]:
    present = pureldap.LDAPFilter_present("objectClass")
    return [
        pdus.bind("uid=alice,ou=people,dc=example,dc=com", "secret", messageID),
        pdus.bind("", "", messageID),
        pdus.search("ou=people,dc=example,dc=com", messageID),
        pdus.search("dc=corp,dc=example,dc=com", messageID, filter=pureldap.LDAPFilter_not(present)),
        pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), messageID),
        pdus.add("cn=big,dc=example,dc=com", [("description", ["x" * 200])], messageID),
        pdus.message(
            pureldap.LDAPModifyRequest(object="cn=x,dc=example,dc=com", modification=[]), messageID
        ),
        pdus.message(
            pureldap.LDAPModifyDNRequest(entry="cn=x,dc=example,dc=com", newrdn="cn=y", deleteoldrdn=True), messageID
        ),
        pdus.message(
            pureldap.LDAPCompareRequest(
                entry="cn=x,dc=example,dc=com",
                ava=pureldap.LDAPAttributeValueAssertion(
                    pureldap.LDAPAttributeDescription("cn"), pureldap.LDAPAssertionValue("x")
                ),
            ),
            messageID,
        ),
        pdus.message(pureldap.LDAPExtendedRequest(requestName="1.3.6.1.4.1.4203.1.11.3"), messageID),
        pdus.message(pureldap.LDAPExtendedRequest(requestName=ber.STARTTLS_OID.decode()), messageID),
        pdus.message(pureldap.LDAPAbandonRequest(id=max(1, messageID - 1)), messageID),
        pdus.message(
            pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"), messageID, controls=[("1.2.840.113556.1.4.319", False, b"\x30\x05\x02\x01\x05\x04\x00")]
        ),
    ]


VALID = [pdu for i in (1, 2, 300, 70000) for pdu in requestPDUs(i)]


@st.composite
def mutatedPDU(draw: Any) -> bytes:
    pdu = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if not pdu:
            break
        at = draw(st.integers(0, len(pdu) - 1))
        if kind == "flip":
            pdu[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            pdu[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "delete":
            del pdu[at]
        else:
            del pdu[at:]
    return bytes(pdu)


def readEverything(pdu: bytes) -> None:
    """Every envelope read the proxy may do; only FramingError may escape."""
    try:
        envelope = ber.Envelope.fromBytes(pdu)
    except ber.FramingError:
        return
    assert envelope.messageID >= 0
    assert envelope.opTag in ber.REQUEST_TAGS
    assert envelope.contentStart <= envelope.contentEnd <= len(pdu)
    for read in (
        envelope.targetDN,
        envelope.bindAuthentication,
        envelope.extendedName,
        envelope.abandonedID,
        lambda p: limits.filterDepth(p, envelope, 64),
    ):
        try:
            read(pdu)
        except ber.FramingError:
            pass


class TestEnvelopeProperties:
    @profile(1500)
    @given(mutatedPDU())
    def test_mutatedPDUs(self, pdu: bytes) -> None:
        # frame it as the frontend does, then read it
        try:
            framed = ber.Framer(4000).feed(pdu)
        except ber.FramingError:
            framed = []
        for one in framed:
            readEverything(one)
        readEverything(pdu)  # and unframed, as the reads must not trust the framer

    @profile(500)
    @given(st.binary(min_size=2, max_size=200))
    def test_arbitraryBytesAfterAValidHeader(self, tail: bytes) -> None:
        readEverything(ber.tlv(0x30, b"\x02\x01\x05" + tail))


def responseStream() -> tuple[bytes, list[tuple[int, int, int]]]:
    parts = [
        pdus.searchEntry("cn=a,dc=example,dc=com", 5),
        pdus.searchEntry("cn=b,dc=example,dc=com", 5, [("description", ["y" * 300])]),
        pdus.searchDone(5),
        pdus.bindResponse(6, 49),
        pdus.message(pureldap.LDAPExtendedResponse(resultCode=2, responseName="1.2.3"), 7),
        pdus.message(pureldap.LDAPModifyResponse(resultCode=0), 300),
    ]
    return b"".join(parts), [(5, ber.SEARCH_RESULT_DONE, 0), (6, ber.BIND_RESPONSE, 49), (7, ber.EXTENDED_RESPONSE, 2), (300, ber.MODIFY_RESPONSE, 0)]


class TestResponseScannerProperties:
    @profile(400)
    @given(st.lists(st.integers(min_value=0, max_value=800), max_size=10))
    def test_anySplitYieldsSameBytesAndFinals(self, cuts: list[int]) -> None:
        data, expected = responseStream()
        scanner = ber.ResponseScanner(1 << 20)
        out = b""
        finals = []
        previous = 0
        for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
            complete, got = scanner.feed(data[previous:cut])
            out += complete
            finals += got
            previous = cut
        assert out == data
        assert finals == expected

    @profile(1500)
    @given(st.binary(max_size=400), st.integers(min_value=0, max_value=400))
    def test_arbitraryBytes(self, data: bytes, cut: int) -> None:
        scanner = ber.ResponseScanner(1000)
        try:
            complete, finals = scanner.feed(data[:cut])
            more, finals2 = scanner.feed(data[cut:])
        except ber.FramingError:
            return
        # what it passes on is a prefix of the input, made of whole PDUs
        assert data.startswith(complete + more)
        assert len(scanner._buffer) <= max(len(data), 1000 + 8)

    @profile(800)
    @given(st.integers(0, 5), st.data())
    def test_mutatedResponses(self, flips: int, data: Any) -> None:
        stream = bytearray(responseStream()[0])
        for _ in range(flips):
            stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
        try:
            ber.ResponseScanner(1 << 20).feed(bytes(stream))
        except ber.FramingError:
            pass


# --- the whole protocol -------------------------------------------------------

action = st.one_of(
    st.tuples(st.just("valid"), st.integers(0, len(requestPDUs(1)) - 1), st.integers(0, 6)),
    st.tuples(st.just("mutated"), mutatedPDU()),
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("accept")),
    st.tuples(st.just("refuse")),
    st.tuples(st.just("answer")),
    st.tuples(st.just("drop")),
    st.tuples(st.just("garbage-from-backend")),
)


class _World:
    """A FrontendProtocol on fakes, with a backend that answers what it was asked."""

    def __init__(self) -> None:
        self.factory, self.backends, self.reactor = proxy(CONFIG)
        self.client = Client(self.factory)
        self.sent: list[ber.Envelope] = []
        self.received = b""
        self.nextID = 1
        self._backendFramers: dict[int, ber.Framer] = {}

    @property
    def closed(self) -> bool:
        return bool(self.client.transport.disconnecting)

    def clientSends(self, data: bytes) -> None:
        if self.closed:
            return
        # what a correct client would count as its requests: whole, well-formed PDUs
        self.client.send(data)
        self.received += self.client.received()

    def live(self) -> list[Any]:
        return [c for c in self.backends.connections if c.transport is not None and not c.transport.disconnecting]

    def pending(self) -> list[Any]:
        return [c for c in self.backends.connections if c.transport is None and not c.deferred.called]

    def answerAll(self) -> None:
        for connection in self.live():
            framer = self._backendFramers.setdefault(id(connection), ber.Framer(1 << 24))
            answers = []
            for pdu in framer.feed(connection.sent()):
                envelope = ber.Envelope.fromBytes(pdu)
                if envelope.opTag == ber.SEARCH_REQUEST:
                    answers.append(pdus.searchEntry("cn=e,dc=example,dc=com", envelope.messageID))
                answer = ber.resultFor(envelope, 0, "")
                if answer is not None:
                    answers.append(answer)
            if answers:
                connection.respond(b"".join(answers))
        self.received += self.client.received()

    def apply(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        if kind == "valid":
            _, which, split = step
            pdu = requestPDUs(self.nextID)[which]
            self.nextID += 1
            cut = min(split * 7, len(pdu))
            self.clientSends(pdu[:cut])
            self.clientSends(pdu[cut:])
        elif kind in ("mutated", "bytes"):
            self.clientSends(step[1])
        elif kind == "accept":
            for connection in self.pending()[:1]:
                connection.accept()
        elif kind == "refuse":
            for connection in self.pending()[:1]:
                connection.refuse()
        elif kind == "answer":
            self.answerAll()
        elif kind == "drop":
            for connection in self.live()[:1]:
                connection.drop()
        elif kind == "garbage-from-backend":
            for connection in self.live()[:1]:
                connection.respond(b"\x04\x00garbage")
        self.received += self.client.received()


def requestsIn(stream: bytes) -> list[ber.Envelope]:
    """The requests a client stream carried, up to the first malformed one."""
    framer = ber.Framer(4000)
    out = []
    try:
        for pdu in framer.feed(stream):
            out.append(ber.Envelope.fromBytes(pdu))
    except ber.FramingError:
        pass
    return out


class TestFrontendProperties:
    @profile(400)
    @given(st.lists(action, max_size=25))
    def test_arbitraryStreams(self, steps: list[tuple[Any, ...]]) -> None:
        world = _World()
        clientBytes = bytearray()
        original = world.client.send

        def recording(data: bytes) -> None:
            if not world.closed:
                clientBytes.extend(data)
            original(data)

        world.client.send = recording  # type: ignore[method-assign]
        for step in steps:
            world.apply(step)
        # let every backend finish: the proxy's reconnect rounds run (it waits
        # for refused backends within the retry budget), accept what is
        # pending, answer everything
        for _ in range(4):
            world.reactor.advance(0.3)
            for connection in world.pending():
                connection.accept()
            world.answerAll()
        answers = pdus.decode(world.received) if world.received else []
        notices = [m for m in answers if m.id == 0]
        if world.closed:
            # closed by the proxy: a Notice of Disconnection, or an unbind of the client's own
            requests = requestsIn(bytes(clientBytes))
            assert notices or any(e.opTag == ber.UNBIND_REQUEST for e in requests)
            assert len(notices) <= 1
            return
        assert not notices
        finals: dict[int, int] = {}
        for m in answers:
            if not isinstance(m.value, (pureldap.LDAPSearchResultEntry, pureldap.LDAPSearchResultReference)):
                finals[m.id] = finals.get(m.id, 0) + 1
        abandoned = set()
        sent: dict[int, int] = {}  # a messageID may be reused once answered
        for envelope in requestsIn(bytes(clientBytes)):
            if envelope.opTag == ber.ABANDON_REQUEST:
                continue
            sent[envelope.messageID] = sent.get(envelope.messageID, 0) + 1
        for messageID, count in sent.items():
            answered = finals.get(messageID, 0)
            if messageID in abandoned:
                assert answered <= count
            else:
                assert answered == count, (messageID, count, finals)
        assert world.client.protocol.session.outstanding == {}
