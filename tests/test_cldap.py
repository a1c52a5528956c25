"""
Unit tests for L{ldaproute.listeners.cldap}: datagrams in and out of fake transports,
time on a L{Clock}.
"""

from __future__ import annotations

import struct
from typing import Any

from ldaptor.protocols import pureldap
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from ldaproute.wire import ber
from ldaproute.listeners import cldap
from ldaproute.wire.pdu import messageIDOf, opTagOf, withMessageID
from ldaproute.config import Config
from ldaproute.runtime import Runtime

CLIENT = ("192.0.2.7", 50123)

FORWARD_INI = """
[ldaproute]
listen = tcp:0
cldap = udp:0
cldap_timeout = 1s
cldap_rate_limit = 5
[backend:dc1]
url = ldap://10.0.0.1
[backend:dc2]
url = ldap://10.0.0.2
cldap_port = 3890
[pool:ad]
backends = dc1, dc2
[route:all]
pool = ad
"""

ANSWER_INI = """
[ldaproute]
listen = tcp:0
cldap = udp:0
cldap_rootdse_ttl = 30s
[backend:ol]
url = ldap://10.0.0.9
cldap_port = none
[pool:ol]
backends = ol
[route:all]
pool = ol
"""


class FakeDatagramTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def ping(messageID: int = 7, domain: bytes = b"example.test", attributes: list[bytes] | None = None) -> bytes:
    def eq(attr: bytes, value: bytes) -> Any:
        return pureldap.LDAPFilter_equalityMatch(
            attributeDesc=pureldap.LDAPAttributeDescription(attr),
            assertionValue=pureldap.LDAPAssertionValue(value),
        )

    request = pureldap.LDAPSearchRequest(
        baseObject=b"", scope=pureldap.LDAP_SCOPE_baseObject, derefAliases=0, sizeLimit=0, timeLimit=0,
        typesOnly=0, filter=pureldap.LDAPFilter_and([eq(b"DnsDomain", domain), eq(b"NtVer", struct.pack("<I", 0x16))]),
        attributes=attributes if attributes is not None else [b"Netlogon"],
    )
    return pureldap.LDAPMessage(request, id=messageID).toWire()


def build(text: str) -> tuple[cldap.CLDAPRelay, cldap.CLDAPProtocol, FakeDatagramTransport, list[Any], Clock]:
    clock = Clock()
    runtime = Runtime(Config.fromString(text))
    upstream: list[Any] = []
    relay = cldap.CLDAPRelay(runtime, clock, send=lambda data, addr: upstream.append((data, addr)))
    protocol = cldap.CLDAPProtocol(relay)
    transport = FakeDatagramTransport()
    protocol.transport = transport  # type: ignore[assignment]
    return relay, protocol, transport, upstream, clock


def reply(messageID: int, size: int = 100) -> bytes:
    entry = pureldap.LDAPMessage(
        pureldap.LDAPSearchResultEntry(b"", [(b"netlogon", [b"x" * size])]), id=messageID
    ).toWire()
    return entry + ber.result(messageID, ber.SEARCH_RESULT_DONE, 0)


class TestForward:
    def test_relayedWithClientMessageID(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        protocol.datagramReceived(ping(7), CLIENT)
        [(sent, addr)] = upstream
        assert addr == ("10.0.0.1", 389)
        proxyID = messageIDOf(sent)
        assert withMessageID(sent, 7) == ping(7)
        relay.backendReplied(reply(proxyID), addr)
        assert transport.written == [(reply(7), CLIENT)]
        assert relay.counters.relayed == 1 and relay.counters.forwarded == 1

    def test_nextBackendOnTimeout(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        protocol.datagramReceived(ping(9), CLIENT)
        clock.advance(1.0)
        assert [addr for _, addr in upstream] == [("10.0.0.1", 389), ("10.0.0.2", 3890)]
        relay.backendReplied(reply(messageIDOf(upstream[1][0])), ("10.0.0.2", 3890))
        assert transport.written == [(reply(9), CLIENT)]

    def test_unavailableWhenNoBackendAnswers(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        protocol.datagramReceived(ping(9), CLIENT)
        clock.advance(1.0)
        clock.advance(1.0)
        [(data, addr)] = transport.written
        assert data == ber.result(9, ber.SEARCH_RESULT_DONE, ber.UNAVAILABLE, "no CLDAP backend answered in time")
        assert relay.counters.timeouts == 1

    def test_replyFromElsewhereDropped(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        protocol.datagramReceived(ping(9), CLIENT)
        proxyID = messageIDOf(upstream[0][0])
        relay.backendReplied(reply(proxyID), ("10.6.6.6", 389))
        relay.backendReplied(reply(proxyID + 1), ("10.0.0.1", 389))
        assert transport.written == []
        assert relay.counters.dropped == {"unexpected-reply": 2}

    def test_oversizedReplyAnsweredSizeLimitExceeded(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        protocol.datagramReceived(ping(3), CLIENT)
        relay.backendReplied(reply(messageIDOf(upstream[0][0]), size=1500), ("10.0.0.1", 389))
        [(data, _)] = transport.written
        assert data[:2] == b"\x30\x5a" or data.startswith(b"0")
        assert opTagOf(data) == ber.SEARCH_RESULT_DONE
        assert b"use LDAP over TCP" in data and b"\x0a\x01\x04" in data
        assert relay.counters.oversized == 1

    def test_nonPingReplyGuardedAgainstAmplification(self) -> None:
        # a rootDSE search for everything, forwarded: the backend's large
        # answer is not a ping reply, so the amplification guard applies
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        request = ping(4, attributes=[])
        protocol.datagramReceived(request, CLIENT)
        big = reply(messageIDOf(upstream[0][0]), size=8 * len(request) + 10)
        relay.backendReplied(big, ("10.0.0.1", 389))
        assert transport.written == []
        assert relay.counters.dropped == {"amplification": 1}


class TestAbuse:
    def test_malformedDroppedAndCounted(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        good = ping(5)
        bad = [b"", b"\x00", b"GET / HTTP/1.0\r\n\r\n", good[:-1], good + b"\x30", b"\x30\x80\x00\x00",
               b"\x30\x03\x02\x01\x01", good.replace(b"\x63", b"\x99", 1)]
        for i, datagram in enumerate(bad):
            protocol.datagramReceived(datagram, ("192.0.2.%d" % (i + 10), 1000))
        assert relay.counters.dropped == {"malformed": len(bad)}
        assert transport.written == [] and upstream == []

    def test_rateLimitPerSource(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        for _ in range(12):
            protocol.datagramReceived(ping(5), CLIENT)
        protocol.datagramReceived(ping(5), ("192.0.2.8", 1))
        assert len(upstream) == 6
        assert relay.counters.dropped == {"rate-limited": 7}
        clock.advance(1.0)  # (the six time out and go to dc2)
        protocol.datagramReceived(ping(5), CLIENT)
        assert len([addr for _, addr in upstream if addr == ("10.0.0.1", 389)]) == 7

    def test_nonSearchAnsweredUnwilling(self) -> None:
        relay, protocol, transport, upstream, clock = build(FORWARD_INI)
        protocol.datagramReceived(ber.message(2, ber.tlv(ber.DEL_REQUEST, b"cn=x")), CLIENT)
        [(data, _)] = transport.written
        assert data == ber.result(2, ber.DEL_RESPONSE, ber.UNWILLING_TO_PERFORM, "CLDAP serves search requests only")


class TestAnswerMode:
    def build(self) -> tuple[cldap.CLDAPRelay, cldap.CLDAPProtocol, FakeDatagramTransport, list[Any], Clock]:
        relay, protocol, transport, upstream, clock = build(ANSWER_INI)
        fetches: list[Any] = []

        def connect(state: Any, fetcher: Any) -> Deferred[Any]:
            fetches.append(fetcher)
            return Deferred()

        relay.rootDSE._connect = connect
        self.fetches = fetches
        return relay, protocol, transport, upstream, clock

    def rootDSEFromBackend(self, fetcher: Any) -> None:
        entry = pureldap.LDAPMessage(pureldap.LDAPSearchResultEntry(b"", [
            (b"namingContexts", [b"dc=example,dc=com"]), (b"supportedLDAPVersion", [b"3"]),
        ]), id=1).toWire()

        class T:
            def loseConnection(self) -> None:
                pass

        fetcher.transport = T()
        fetcher.dataReceived(entry + ber.result(1, ber.SEARCH_RESULT_DONE, 0))

    def test_rootDSEAnsweredFromCache(self) -> None:
        relay, protocol, transport, upstream, clock = self.build()
        protocol.datagramReceived(ping(11, attributes=[b"namingContexts"]), CLIENT)
        protocol.datagramReceived(ping(12, attributes=[b"supportedLDAPVersion"]), ("192.0.2.9", 5))
        assert len(self.fetches) == 1
        self.rootDSEFromBackend(self.fetches[0])
        first, second = transport.written
        assert first[0] == pureldap.LDAPMessage(pureldap.LDAPSearchResultEntry(
            b"", [(b"namingContexts", [b"dc=example,dc=com"])]), id=11).toWire() + ber.result(11, ber.SEARCH_RESULT_DONE, 0)
        assert b"supportedLDAPVersion" in second[0] and b"namingContexts" not in second[0]
        clock.advance(29)
        protocol.datagramReceived(ping(13, attributes=[b"namingContexts"]), CLIENT)
        assert len(self.fetches) == 1 and len(transport.written) == 3
        clock.advance(2)
        protocol.datagramReceived(ping(14, attributes=[b"namingContexts"]), CLIENT)
        assert len(self.fetches) == 2
        assert upstream == []

    def test_netlogonRefused(self) -> None:
        relay, protocol, transport, upstream, clock = self.build()
        protocol.datagramReceived(ping(11), CLIENT)
        [(data, _)] = transport.written
        assert data == ber.result(11, ber.SEARCH_RESULT_DONE, ber.UNWILLING_TO_PERFORM,
                                  "pool 'ol' has no CLDAP service: no Netlogon (AD LDAP ping) answers")
        assert self.fetches == []


def test_withMessageIDKeepsOtherBytes() -> None:
    pdu = reply(5)
    framed = ber.Framer().feed(pdu)
    for original in framed:
        again = withMessageID(withMessageID(original, 0x12345678), 5)
        assert again == original
