"""
Tests for L{ldaproute.ops.accesslog}: the fields of each operation kind,
read from request bytes with every assertion value and credential left
out; the text and JSON lines; the batched writer and its reopening.
"""

from __future__ import annotations

import shutil
import tempfile

import json

import attrs
import os

from ldaptor.ldapfilter import parseFilter
from ldaptor.protocols import pureber, pureldap
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ldaproute.ops.accesslog import (
    AccessLog,
    AccessLogWriter,
    Completion,
    RequestSummary,
    describeRequest,
    parseTextLine,
    shorten,
)
from ldaproute.ops.accessrequest import RequestShapes
from ldaproute.ops.observer import Observer
from ldaproute.wire import ber


def searchPDU(
    filterText: str, base: bytes = b"ou=people,dc=example,dc=com", scope: int = 2, attributes: tuple[bytes, ...] = ()
) -> bytes:
    request = pureldap.LDAPSearchRequest(
        baseObject=base, scope=scope, filter=parseFilter(filterText), sizeLimit=25, attributes=list(attributes)
    )
    return pureldap.LDAPMessage(request, id=7).toWire()


def summarize(pdu: bytes) -> RequestSummary:
    return describeRequest(pdu, ber.Envelope.fromBytes(pdu))


def fields(pdu: bytes) -> dict[str, object]:
    return dict(summarize(pdu).fields)


class _TempPath:
    def tempPath(self) -> str:
        """A file path in a fresh directory removed after the test."""
        directory = tempfile.mkdtemp(prefix="ldaproute-test-")
        self.addCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
        return os.path.join(directory, "access.log")


class DescribeRequestTests(_TempPath, SynchronousTestCase):
    def test_search(self) -> None:
        pdu = searchPDU("(&(objectClass=person)(|(uid=jdoe)(cn=J*n))(!(mail=*)))", scope=1, attributes=(b"cn", b"mail"))
        summary = summarize(pdu)
        self.assertEqual(summary.kind, "search")
        self.assertEqual(
            summary.fields,
            (
                ("base", "ou=people,dc=example,dc=com"),
                ("scope", "one"),
                ("filter", "(&(objectClass=?)(|(uid=?)(cn=*?*))(!(mail=*)))"),
                ("attrs", 2),
                ("sizelimit", 25),
            ),
        )
        self.assertEqual(summary.size, len(pdu))

    def test_valuesNeverAppear(self) -> None:
        """A password in a filter stays out of the summary."""
        summary = summarize(searchPDU("(userPassword=hunter2)"))
        self.assertEqual(summary.get("filter"), "(userPassword=?)")
        self.assertNotIn("hunter2", repr(summary))

    def test_comparisons(self) -> None:
        self.assertEqual(summarize(searchPDU("(uidNumber>=1000)")).get("filter"), "(uidNumber>=?)")
        self.assertEqual(summarize(searchPDU("(uidNumber<=1000)")).get("filter"), "(uidNumber<=?)")
        self.assertEqual(summarize(searchPDU("(cn~=john)")).get("filter"), "(cn~=?)")

    def test_simpleBind(self) -> None:
        """A simple bind gives its DN and method, never the password."""
        pdu = ber.simpleBindRequest(1, b"uid=alice,dc=example,dc=com", b"s3cret")
        summary = summarize(pdu)
        self.assertEqual((summary.kind, dict(summary.fields)), ("bind", {"dn": "uid=alice,dc=example,dc=com", "method": "simple"}))
        self.assertNotIn("s3cret", repr(summary))

    def test_anonymousAndUnauthenticatedBinds(self) -> None:
        self.assertEqual(fields(ber.simpleBindRequest(1, b"", b"")), {"dn": "", "method": "anonymous"})
        self.assertEqual(fields(ber.simpleBindRequest(1, b"cn=x", b"")), {"dn": "cn=x", "method": "unauthenticated"})

    def test_saslBindShowsTheMechanismOnly(self) -> None:
        """Issue 12 item 3: a SASL bind logs its mechanism, never the credentials."""
        request = pureldap.LDAPBindRequest(dn=b"", auth=(b"PLAIN", b"\x00alice\x00hunter2"), sasl=True)
        pdu = pureldap.LDAPMessage(request, id=2).toWire()
        summary = summarize(pdu)
        self.assertEqual(dict(summary.fields), {"dn": "", "method": "sasl", "mech": "PLAIN"})
        self.assertNotIn("hunter2", repr(summary))

    def test_compare(self) -> None:
        request = pureldap.LDAPCompareRequest(
            entry=b"uid=x,dc=example,dc=com",
            ava=pureldap.LDAPAttributeValueAssertion(
                pureldap.LDAPAttributeDescription(b"userPassword"), pureldap.LDAPAssertionValue(b"secret")
            ),
        )
        summary = summarize(pureldap.LDAPMessage(request, id=3).toWire())
        self.assertEqual((summary.kind, dict(summary.fields)), ("compare", {"dn": "uid=x,dc=example,dc=com", "attr": "userPassword"}))
        self.assertNotIn("secret", repr(summary))

    def test_writesGiveTheirDN(self) -> None:
        delete = pureldap.LDAPMessage(pureldap.LDAPDelRequest(entry=b"uid=x,dc=example,dc=com"), id=3).toWire()
        add = pureldap.LDAPMessage(
            pureldap.LDAPAddRequest(entry=b"uid=y,dc=example,dc=com", attributes=[
                    (
                        pureldap.LDAPAttributeDescription(b"userPassword"),
                        pureber.BERSet([pureldap.LDAPAttributeValue(b"pw1")]),
                    )
                ]), id=4
        ).toWire()
        modify = pureldap.LDAPMessage(
            pureldap.LDAPModifyRequest(
                object=b"uid=z,dc=example,dc=com",
                modification=[
                    pureber.BERSequence(
                        [
                            pureber.BEREnumerated(2),
                            pureber.BERSequence(
                                [
                                    pureldap.LDAPAttributeDescription(b"userPassword"),
                                    pureber.BERSet([pureldap.LDAPAttributeValue(b"pw2")]),
                                ]
                            ),
                        ]
                    )
                ],
            ),
            id=5,
        ).toWire()
        rename = pureldap.LDAPMessage(
            pureldap.LDAPModifyDNRequest(entry=b"uid=w,dc=example,dc=com", newrdn=b"uid=v", deleteoldrdn=True), id=6
        ).toWire()
        self.assertEqual(
            [(summarize(pdu).kind, fields(pdu)) for pdu in (delete, add, modify, rename)],
            [
                ("delete", {"dn": "uid=x,dc=example,dc=com"}),
                ("add", {"dn": "uid=y,dc=example,dc=com"}),
                ("modify", {"dn": "uid=z,dc=example,dc=com"}),
                ("modifyDN", {"dn": "uid=w,dc=example,dc=com"}),
            ],
        )
        for pdu in (add, modify):
            self.assertNotIn("pw", repr(summarize(pdu)))

    def test_extendedNames(self) -> None:
        def extended(oid: bytes) -> dict[str, object]:
            return fields(pureldap.LDAPMessage(pureldap.LDAPExtendedRequest(requestName=oid), id=9).toWire())

        self.assertEqual(extended(b"1.3.6.1.4.1.1466.20037"), {"oid": "1.3.6.1.4.1.1466.20037", "name": "StartTLS"})
        self.assertEqual(extended(b"1.3.6.1.4.1.4203.1.11.3")["name"], "WhoAmI")
        self.assertEqual(extended(b"1.3.6.1.4.1.4203.1.11.1")["name"], "PasswordModify")
        self.assertEqual(extended(b"1.3.6.1.1.8")["name"], "Cancel")
        self.assertEqual(extended(b"1.2.3.4")["name"], "unknown")

    def test_truncatedFilter(self) -> None:
        """A garbled filter gives a placeholder, never an exception."""
        pdu = searchPDU("(uid=x)")
        broken = pdu[:-8] + b"\xa3\x7f" + pdu[-6:]
        summary = summarize(broken)
        self.assertEqual((summary.kind, summary.get("base")), ("search", "ou=people,dc=example,dc=com"))
        self.assertIsInstance(summary.get("filter"), str)


def completion(**changes: object) -> Completion:
    values: dict[str, object] = dict(
        conn=4,
        client="10.0.0.1:5000",
        listener="default",
        tls="starttls",
        summary=RequestSummary("search", (("base", "dc=x"), ("scope", "sub"), ("filter", "(uid=?)"), ("attrs", 0), ("sizelimit", 0)), 61, 2),
        route="all",
        backend="one",
        resultCode=0,
        message="",
        entries=3,
        now=1764655200.25,
        seconds=0.0125,
    )
    values.update(changes)
    return Completion(**values)  # type: ignore[arg-type]


class LineTests(_TempPath, SynchronousTestCase):
    def setUp(self) -> None:
        self.lines: list[str] = []
        self.path = self.tempPath()

    def logged(self, logFormat: str, c: Completion) -> str:
        log = AccessLog(AccessLogWriter(self.path), logFormat)
        log.operationCompleted(*attrs.astuple(c, recurse=False))
        log.writer.close()
        with open(self.path) as f:
            return f.read()

    def test_text(self) -> None:
        line = self.logged("text", completion())
        self.assertEqual(
            line,
            "2025-12-02T06:00:00.250Z conn=4 op=2 client=10.0.0.1:5000 listener=default tls=starttls type=search "
            'base="dc=x" scope=sub filter="(uid=?)" attrs=0 sizelimit=0 route=all backend=one result=0 entries=3 bytes=61 ms=12.500\n',
        )

    def test_textQuotesAndShortensTheMessage(self) -> None:
        message = "a simple bind with a password needs TLS here: use StartTLS or ldaps " * 3
        c = completion(
            summary=RequestSummary("bind", (("dn", "cn=John Smith,dc=x"), ("method", "simple")), 40, 1),
            route="",
            backend="",
            resultCode=13,
            message=message,
            entries=0,
        )
        parsed = parseTextLine(self.logged("text", c))
        self.assertEqual(parsed["dn"], "cn=John Smith,dc=x")
        self.assertEqual((parsed["route"], parsed["backend"], parsed["result"]), ("-", "-", "13"))
        self.assertEqual(parsed["msg"], shorten(message))
        self.assertEqual(len(parsed["msg"]), 120)
        self.assertTrue(parsed["msg"].endswith("..."))

    def test_json(self) -> None:
        record = json.loads(self.logged("json", completion(resultCode=32, message="no such object")))
        self.assertEqual(
            record,
            {
                "time": "2025-12-02T06:00:00.250Z", "conn": 4, "op": 2, "client": "10.0.0.1:5000",
                "listener": "default", "tls": "starttls", "type": "search", "base": "dc=x", "scope": "sub",
                "filter": "(uid=?)", "attrs": 0, "sizelimit": 0, "route": "all", "backend": "one", "result": 32,
                "msg": "no such object", "entries": 3, "bytes": 61, "ms": 12.5,
            },  # fmt: skip
        )


class WriterTests(_TempPath, SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.tempPath()
        self.clock = Clock()

    def content(self) -> str:
        if not os.path.exists(self.path):
            return ""
        with open(self.path) as f:
            return f.read()

    def test_batchedOnATimer(self) -> None:
        """Lines wait for the timer: one write per batch, not per line."""
        writer = AccessLogWriter(self.path, self.clock.callLater, flushInterval=0.25)
        writer.write("one\n")
        writer.write("two\n")
        self.assertEqual(self.content(), "")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.25)
        self.assertEqual(self.content(), "one\ntwo\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        writer.write("three\n")
        writer.close()
        self.assertEqual(self.content(), "one\ntwo\nthree\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_largeBatchWrittenAtOnce(self) -> None:
        writer = AccessLogWriter(self.path, self.clock.callLater)
        line = "x" * 1023 + "\n"
        for _ in range(64):
            writer.write(line)
        self.assertEqual(len(self.content()), 64 * 1024)
        writer.close()

    def test_reopenAfterRotation(self) -> None:
        """logrotate moves the file, then SIGUSR1/SIGHUP: new lines go to a new file."""
        writer = AccessLogWriter(self.path, self.clock.callLater)
        writer.write("before\n")
        os.rename(self.path, self.path + ".1")
        writer.reopen()
        writer.write("after\n")
        writer.close()
        with open(self.path + ".1") as f:
            self.assertEqual(f.read(), "before\n")
        self.assertEqual(self.content(), "after\n")


class RequestShapesTests(SynchronousTestCase):
    """The search descriptions kept by shape, without assertion values."""

    def describe(self, shapes: RequestShapes, pdu: bytes, opNumber: int = 1) -> RequestSummary:
        return shapes.describe(pdu, ber.Envelope.fromBytes(pdu), opNumber)

    def test_sameShapeDifferentValues(self) -> None:
        """Searches that differ only in their assertion value share one
        description; the size and operation number stay their own."""
        shapes = RequestShapes()
        for number, text in enumerate(["(uid=alice)", "(uid=bob)", "(uid=someone-much-longer)", "(cn=J*n)", "(mail=*)"]):
            pdu = searchPDU(text, attributes=(b"cn",))
            summary = self.describe(shapes, pdu, number)
            self.assertEqual(summary, describeRequest(pdu, ber.Envelope.fromBytes(pdu), number))
            self.assertEqual((summary.size, summary.opNumber), (len(pdu), number))
        self.assertEqual(len(shapes._shapes), 3)

    def test_everyDescribedPartIsInTheShape(self) -> None:
        """Another base, scope, size limit, attribute or attribute list is
        another shape."""
        shapes = RequestShapes()
        pdus = [
            searchPDU("(uid=a)"),
            searchPDU("(uid=a)", base=b"dc=other"),
            searchPDU("(uid=a)", scope=1),
            searchPDU("(cn=a)"),
            searchPDU("(uid=a)", attributes=(b"cn",)),
            searchPDU("(uid>=a)"),
        ]
        summaries = [self.describe(shapes, pdu) for pdu in pdus]
        self.assertEqual(len(shapes._shapes), len(pdus))
        self.assertEqual(len({s.fields for s in summaries}), len(pdus))

    def test_keptWithoutValues(self) -> None:
        shapes = RequestShapes()
        summary = self.describe(shapes, searchPDU("(userPassword=hunter2)"))
        self.assertNotIn(b"hunter2", b"".join(shapes._shapes))
        self.assertNotIn("hunter2", (summary.text or "") + (summary.json or ""))
        self.assertEqual(summary.get("filter"), "(userPassword=?)")

    def test_otherRequestsNotKept(self) -> None:
        """Compound filters and other operations are described each time."""
        shapes = RequestShapes()
        pdu = searchPDU("(&(uid=a)(cn=b))")
        self.assertEqual(self.describe(shapes, pdu), describeRequest(pdu, ber.Envelope.fromBytes(pdu), 1))
        bind = pureldap.LDAPMessage(pureldap.LDAPBindRequest(dn=b"uid=a,dc=x", auth=b"pw"), id=1).toWire()
        self.assertEqual(self.describe(shapes, bind).get("method"), "simple")
        self.assertEqual(shapes._shapes, {})

    def test_bounded(self) -> None:
        shapes = RequestShapes(maxShapes=2)
        for attribute in ("a", "b", "c"):
            self.describe(shapes, searchPDU(f"({attribute}=x)"))
        self.assertEqual(len(shapes._shapes), 1)

    def test_truncated(self) -> None:
        """A garbled filter gives the description it gives uncached."""
        pdu = searchPDU("(uid=x)")
        broken = pdu[:-8] + b"\xa3\x7f" + pdu[-6:]
        shapes = RequestShapes()
        for _ in range(2):
            summary = self.describe(shapes, broken)
            self.assertEqual(summary, describeRequest(broken, ber.Envelope.fromBytes(broken), 1))
            self.assertEqual((summary.kind, summary.get("base")), ("search", "ou=people,dc=example,dc=com"))


class _Session:
    listener = "default"
    peer = "10.0.0.1:5000"
    outstanding = ()


class _Protocol:
    def __init__(self) -> None:
        self.session = _Session()


class ObserverLineTests(_TempPath, SynchronousTestCase):
    """The observer keeps each connection's constant parts of its lines."""

    def lines(self, logFormat: str) -> list[str]:
        path = self.tempPath()
        observer = Observer(accessLog=path, logFormat=logFormat)
        protocol = _Protocol()
        observer.connectionOpened(protocol, StringTransport())
        for secure in (False, True, False):
            if secure:
                observer.connectionSecured(protocol, "starttls")
            pdu = searchPDU("(uid=alice)")
            summary = observer.summarize(protocol, pdu, ber.Envelope.fromBytes(pdu))
            observer.operationCompleted(protocol, ber.SEARCH_REQUEST, 7, "all", None, 0, 1.0, 1.5, summary)
        observer.configure(path, "json" if logFormat == "text" else "text")  # a reload changes the format
        observer.operationCompleted(protocol, ber.SEARCH_REQUEST, 8, "", None, 32, 1.0, 1.5, None, 'no "such"')
        observer.configure(None)
        with open(path) as f:
            return f.readlines()

    def test_text(self) -> None:
        first, second, third, last = self.lines("text")
        self.assertEqual(
            first,
            '1970-01-01T00:00:01.500Z conn=1 op=1 client=10.0.0.1:5000 listener=default tls=none type=search '
            'base="ou=people,dc=example,dc=com" scope=sub filter="(uid=?)" attrs=0 sizelimit=25 route=all '
            "backend=- result=0 entries=0 bytes=%d ms=500.000\n" % len(searchPDU("(uid=alice)")),
        )
        self.assertEqual([parseTextLine(line)["tls"] for line in (second, third)], ["starttls", "starttls"])
        self.assertEqual([parseTextLine(line)["op"] for line in (second, third)], ["2", "3"])
        record = json.loads(last)
        self.assertEqual((record["conn"], record["op"], record["tls"], record["type"]), (1, 4, "starttls", "search"))
        self.assertEqual((record["route"], record["msg"]), (None, 'no "such"'))

    def test_json(self) -> None:
        first, second, third, last = self.lines("json")
        self.assertEqual(
            json.loads(first),
            {
                "time": "1970-01-01T00:00:01.500Z", "conn": 1, "op": 1, "client": "10.0.0.1:5000",
                "listener": "default", "tls": "none", "type": "search", "base": "ou=people,dc=example,dc=com",
                "scope": "sub", "filter": "(uid=?)", "attrs": 0, "sizelimit": 25, "route": "all", "backend": None,
                "result": 0, "entries": 0, "bytes": len(searchPDU("(uid=alice)")), "ms": 500.0,
            },  # fmt: skip
        )
        self.assertEqual([json.loads(line)["tls"] for line in (second, third)], ["starttls", "starttls"])
        parsed = parseTextLine(last)
        self.assertEqual((parsed["op"], parsed["tls"], parsed["route"], parsed["msg"]), ("4", "starttls", "-", 'no "such"'))


def test_malformedSearchFieldsDoNotCrashTheQuickPath() -> None:
    """
    Regression (found by the atheris fuzzer): a search whose scope element
    claims more bytes than the request holds made the one-pass reader index
    past the end; the request is described by the careful path instead.
    """
    from ldaproute.ops.accessrequest import describeRequest
    from tests import pdus

    pdu = bytearray(pdus.search("ou=people,dc=example,dc=com", 2))
    scopeAt = pdu.index(b"\x0a\x01\x02")  # scope wholeSubtree
    pdu[scopeAt + 1] = 0x70
    envelope = ber.Envelope.fromBytes(bytes(pdu))
    summary = describeRequest(bytes(pdu), envelope, 1)
    assert summary.kind == "search"
