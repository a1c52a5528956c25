"""
Tests for L{ldaproute.ops.accesslog}: what a request's bytes say, with every
assertion value left out, and the access event's fields.
"""

from __future__ import annotations

from ldaptor.protocols import pureldap
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ldaproute.wire import ber
from ldaproute.ops.accesslog import AccessLog, RequestSummary, describeRequest


def searchPDU(filterText: str, base: bytes = b"ou=people,dc=example,dc=com", scope: int = 2) -> bytes:
    from ldaptor.ldapfilter import parseFilter

    request = pureldap.LDAPSearchRequest(baseObject=base, scope=scope, filter=parseFilter(filterText))
    return pureldap.LDAPMessage(request, id=7).toWire()


def summarize(pdu: bytes) -> RequestSummary:
    return describeRequest(pdu, ber.Envelope.fromBytes(pdu))


class DescribeRequestTests(SynchronousTestCase):
    def test_searchSummary(self) -> None:
        summary = summarize(searchPDU("(&(objectClass=person)(|(uid=jdoe)(cn=J*n))(!(mail=*)))", scope=1))
        self.assertEqual(
            summary, RequestSummary("ou=people,dc=example,dc=com", "one", "(&(objectClass=?)(|(uid=?)(cn=*?*))(!(mail=*)))")
        )

    def test_valuesNeverAppear(self) -> None:
        """A password in a filter stays out of the summary."""
        summary = summarize(searchPDU("(userPassword=hunter2)"))
        self.assertEqual(summary.filter, "(userPassword=?)")
        self.assertNotIn("hunter2", repr(summary))

    def test_comparisons(self) -> None:
        self.assertEqual(summarize(searchPDU("(uidNumber>=1000)")).filter, "(uidNumber>=?)")
        self.assertEqual(summarize(searchPDU("(uidNumber<=1000)")).filter, "(uidNumber<=?)")
        self.assertEqual(summarize(searchPDU("(cn~=john)")).filter, "(cn~=?)")

    def test_otherOperationsGiveTheirDN(self) -> None:
        pdu = pureldap.LDAPMessage(pureldap.LDAPDelRequest(entry=b"uid=x,dc=example,dc=com"), id=3).toWire()
        self.assertEqual(summarize(pdu), RequestSummary("uid=x,dc=example,dc=com"))

    def test_truncatedFilter(self) -> None:
        """A garbled filter gives a placeholder, never an exception."""
        pdu = searchPDU("(uid=x)")
        broken = pdu[:-8] + b"\xa3\x7f" + pdu[-6:]
        summary = summarize(broken)
        self.assertIsInstance(summary, RequestSummary)


class AccessLogTests(SynchronousTestCase):
    def test_event(self) -> None:
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        AccessLog().operationCompleted(
            "10.0.0.1:5000", "default", b"uid=a,dc=x", ber.SEARCH_REQUEST, 7,
            RequestSummary("dc=x", "sub", "(uid=?)"), "all", "one", 0, 3, 0.0125,
        )  # fmt: skip
        [event] = [e for e in events if e.get("log_namespace") == "ldaproute.access"]
        self.assertEqual(
            {k: event[k] for k in ("peer", "bindDN", "op", "baseDN", "scope", "filter", "route", "backend",
                                   "resultCode", "entries", "durationMs")},  # fmt: skip
            {
                "peer": "10.0.0.1:5000", "bindDN": "uid=a,dc=x", "op": "search", "baseDN": "dc=x", "scope": "sub",
                "filter": "(uid=?)", "route": "all", "backend": "one", "resultCode": 0, "entries": 3,
                "durationMs": 12.5,
            },  # fmt: skip
        )
