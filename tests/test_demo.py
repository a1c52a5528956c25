# -*- test-case-name: tests.test_demo -*-
"""
Tests for L{ldaproute.ops.demo}: loading the demo LDIF, answering LDAP over an
in-memory transport (bytes fed one at a time), and serving OpenLDAP's
command-line clients on a unix socket.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from typing import Any, Generator

import pytest
import pytest_twisted
from ldaptor.protocols import pureber, pureldap
from twisted.internet.address import UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ldaproute.ops import demo

BASE = "dc=example,dc=com"
ALICE = "uid=alice,ou=people," + BASE


def responseDecoder() -> Any:
    return pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )


def decodeAll(data: bytes) -> list[Any]:
    """
    Split C{data} into LDAPMessages; fail if bytes are left over.
    """
    messages = []
    decoder = responseDecoder()
    while data:
        message, used = pureber.berDecodeObject(decoder, data)
        assert message is not None, f"incomplete PDU: {data!r}"
        messages.append(message)
        data = data[used:]
    return messages


class LoadDirectoryTests(SynchronousTestCase):
    """
    L{demo.loadDirectory} and the packaged demo LDIF.
    """

    def tempPath(self) -> str:
        """
        A path in a fresh temporary directory (C{mktemp} would write under
        the current directory when pytest runs these tests).
        """
        directory = tempfile.mkdtemp(prefix="ldaproute-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, "test.ldif")

    def test_demoLDIFPath(self) -> None:
        path = demo.demoLDIFPath()
        self.assertTrue(os.path.isfile(path))
        self.assertTrue(path.endswith(os.path.join("ldaproute", "data", "demo.ldif")))

    def test_loadDemo(self) -> None:
        """
        The demo tree has the suffix at its root and ten users who bind with
        <uid>pass.
        """
        root = self.successResultOf(demo.loadDirectory(demo.demoLDIFPath()))
        self.assertEqual(root.dn.getText(), BASE)
        people = self.successResultOf(root.lookup("ou=people," + BASE))
        users = self.successResultOf(people.children())
        self.assertEqual(len(users), 10)
        alice = self.successResultOf(root.lookup(ALICE))
        self.assertEqual(list(alice["mail"]), [b"alice@example.com"])
        self.successResultOf(alice.bind(b"alicepass"))
        self.failureResultOf(alice.bind(b"wrong"))

    def test_groups(self) -> None:
        root = self.successResultOf(demo.loadDirectory(demo.demoLDIFPath()))
        groups = self.successResultOf(root.lookup("ou=groups," + BASE))
        names = sorted(g.dn.split()[0].getText() for g in self.successResultOf(groups.children()))
        self.assertEqual(names, ["cn=admins", "cn=engineering", "cn=everyone", "cn=sales"])
        admins = self.successResultOf(root.lookup("cn=admins,ou=groups," + BASE))
        self.assertIn(ALICE.encode(), [bytes(m) for m in admins["member"]])

    def test_noTrailingBlankLine(self) -> None:
        """
        An LDIF whose last entry is not followed by a blank line still loads.
        """
        path = self.tempPath()
        with open(path, "wb") as f:
            f.write(b"dn: dc=test\nobjectClass: dcObject\ndc: test")
        root = self.successResultOf(demo.loadDirectory(path))
        self.assertEqual(root.dn.getText(), "dc=test")

    def test_malformed(self) -> None:
        """
        A malformed file fails the Deferred instead of raising.
        """
        path = self.tempPath()
        with open(path, "wb") as f:
            f.write(b"objectClass: top\n\n")
        self.failureResultOf(demo.loadDirectory(path))

    def test_missingFile(self) -> None:
        self.failureResultOf(demo.loadDirectory(self.tempPath()), FileNotFoundError)


class DemoLDAPServerTests(SynchronousTestCase):
    """
    L{demo.DemoDirectoryFactory} protocols over a L{StringTransport}, fed one
    byte at a time.
    """

    def setUp(self) -> None:
        factory = self.successResultOf(demo.makeDemoDirectoryFactory())
        self.protocol = factory.buildProtocol(UNIXAddress(None))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def exchange(self, messageID: int, request: Any) -> list[Any]:
        """
        Send C{request} byte by byte and return the decoded responses.
        """
        data = pureldap.LDAPMessage(request, id=messageID).toWire()
        for i in range(len(data)):
            self.protocol.dataReceived(data[i : i + 1])
        responses = decodeAll(self.transport.value())
        self.transport.clear()
        for r in responses:
            self.assertEqual(r.id, messageID)
        return [r.value for r in responses]

    def bind(self, dn: str, password: bytes) -> Any:
        [response] = self.exchange(1, pureldap.LDAPBindRequest(dn=dn.encode(), auth=password))
        self.assertIsInstance(response, pureldap.LDAPBindResponse)
        return response

    def test_search(self) -> None:
        responses = self.exchange(
            7,
            pureldap.LDAPSearchRequest(
                baseObject=BASE.encode(),
                scope=pureldap.LDAP_SCOPE_wholeSubtree,
                filter=pureldap.LDAPFilter_equalityMatch(
                    attributeDesc=pureldap.LDAPAttributeDescription("uid"),
                    assertionValue=pureldap.LDAPAssertionValue("alice"),
                ),
                attributes=[b"cn"],
            ),
        )
        entry, done = responses
        self.assertIsInstance(entry, pureldap.LDAPSearchResultEntry)
        self.assertEqual(entry.objectName, ALICE.encode())
        self.assertEqual([(a, list(v)) for a, v in entry.attributes], [(b"cn", [b"Alice Anderson"])])
        self.assertIsInstance(done, pureldap.LDAPSearchResultDone)
        self.assertEqual(done.resultCode, 0)

    def test_bindAndWhoAmI(self) -> None:
        response = self.bind(ALICE, b"alicepass")
        self.assertEqual((response.resultCode, response.matchedDN), (0, b""))
        [whoami] = self.exchange(2, pureldap.LDAPExtendedRequest(requestName=demo.WHOAMI_OID))
        self.assertEqual((whoami.resultCode, whoami.response), (0, b"dn:" + ALICE.encode()))

    def test_anonymousWhoAmI(self) -> None:
        [whoami] = self.exchange(2, pureldap.LDAPExtendedRequest(requestName=demo.WHOAMI_OID))
        self.assertEqual((whoami.resultCode, whoami.response), (0, b""))

    def test_bindWrongPassword(self) -> None:
        self.assertEqual(self.bind(ALICE, b"wrong").resultCode, 49)

    def test_bindUnknownDN(self) -> None:
        self.assertEqual(self.bind("uid=nobody,ou=people," + BASE, b"x").resultCode, 49)

    def test_rootDSELowercaseFilter(self) -> None:
        """
        The root DSE answers the filter spelling OpenLDAP clients use.
        """
        entry, done = self.exchange(
            3,
            pureldap.LDAPSearchRequest(
                baseObject=b"",
                scope=pureldap.LDAP_SCOPE_baseObject,
                filter=pureldap.LDAPFilter_present("objectclass"),
            ),
        )
        attributes = {a: list(v) for a, v in entry.attributes}
        self.assertEqual(attributes[b"namingContexts"], [BASE.encode()])
        self.assertIn(demo.WHOAMI_OID, attributes[b"supportedExtension"])
        self.assertEqual(done.resultCode, 0)


# -- a real unix socket, real OpenLDAP clients ---------------------------------


@pytest.fixture
def socketDirectory() -> Generator[str, None, None]:
    """
    A short directory for a unix socket (sockaddr_un holds ~100 bytes).
    """
    path = tempfile.mkdtemp(prefix="ldr-demo-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def runClient(*argv: str) -> Any:
    from twisted.internet import reactor
    from twisted.internet.utils import getProcessOutputAndValue

    program = shutil.which(argv[0])
    assert program is not None, f"{argv[0]} is not installed (Debian package ldap-utils)"
    env = dict(os.environ, LDAPCONF=os.devnull, LDAPRC="no-ldaprc")
    env.pop("LDAPNOINIT", None)
    return getProcessOutputAndValue(program, argv[1:], env=env, reactor=reactor)


@pytest_twisted.inlineCallbacks
def test_serviceOnUnixSocket(socketDirectory: str) -> Generator[Any, Any, None]:
    """
    L{demo.DemoDirectoryService} serves ldapsearch and ldapwhoami on
    C{ldapi://}, and stops listening when stopped.
    """
    from twisted.internet import reactor

    socketPath = os.path.join(socketDirectory, "demo.sock")
    url = "ldapi://" + urllib.parse.quote(socketPath, safe="")
    service = demo.DemoDirectoryService("unix:" + socketPath, demo.demoLDIFPath(), reactor)
    service.startService()
    try:
        yield service.whenListening()
        out, err, code = yield runClient(
            "ldapsearch", "-x", "-LLL", "-H", url, "-b", "ou=people," + BASE, "(uid=*)", "uid"
        )
        assert code == 0, err
        uids = sorted(line for line in out.decode().splitlines() if line.startswith("uid:"))
        assert len(uids) == 10
        assert "uid: alice" in uids
        out, err, code = yield runClient(
            "ldapwhoami", "-x", "-H", url, "-D", ALICE, "-w", "alicepass"
        )
        assert code == 0, err
        assert out.decode().strip() == "dn:" + ALICE
        out, err, code = yield runClient("ldapwhoami", "-x", "-H", url, "-D", ALICE, "-w", "bad")
        assert code == 49, err
    finally:
        yield service.stopService()
    assert service.port is None
    out, err, code = yield runClient("ldapwhoami", "-x", "-H", url, "-o", "nettimeout=2")
    assert code != 0


@pytest_twisted.inlineCallbacks
def test_serviceBadLDIF(socketDirectory: str) -> Generator[Any, Any, None]:
    """
    A missing LDIF fails whenListening() and nothing listens.
    """
    from twisted.internet import reactor

    socketPath = os.path.join(socketDirectory, "demo.sock")
    service = demo.DemoDirectoryService(
        "unix:" + socketPath, os.path.join(socketDirectory, "missing.ldif"), reactor
    )
    waiting = service.whenListening()
    service.startService()
    with pytest.raises(FileNotFoundError):
        yield waiting
    yield service.stopService()
    assert not os.path.exists(socketPath)
