# -*- test-case-name: tests.test_demo -*-
"""
A small demo directory (dc=example,dc=com) served in memory by ldaptor.

Owns the demo backend only: it lets C{twistd ldaproute} run out of the box, and
gives docs and tests a directory without slapd.  It is I{not} part of the proxy
path: the proxy reaches it like any other backend, by URL (typically
C{ldapi://%2Ftmp%2F...%2Fdemo.sock}), so nothing here is imported by the relay
code.

ldaptor's L{LDAPServer} finds its tree by adapting the factory to
L{IConnectedLDAPEntry}; ldaptor's own example registers a global adapter for
that.  L{DemoDirectoryFactory} answers through C{__conform__} instead, so this
module changes no global registry.  L{DemoLDAPServer} adds what OpenLDAP's
C{ldapwhoami} needs (the "Who am I?" extended operation, RFC 4532).
"""

from __future__ import annotations

import os
from typing import Any

from ldaptor import inmemory, interfaces
from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap import ldaperrors
from ldaptor.protocols.ldap.ldapserver import LDAPServer
from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "WHOAMI_OID",
    "DemoLDAPServer",
    "DemoDirectoryFactory",
    "DemoDirectoryService",
    "demoLDIFPath",
    "loadDirectory",
    "makeDemoDirectoryFactory",
]

#: RFC 4532 "Who am I?" extended operation.
WHOAMI_OID = b"1.3.6.1.4.1.4203.1.11.3"


def demoLDIFPath() -> str:
    """
    Return the path of the packaged demo LDIF (C{ldaproute/data/demo.ldif}).
    """
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "demo.ldif")


def loadDirectory(ldifPath: str) -> Deferred[Any]:
    """
    Read an LDIF file into an in-memory ldaptor tree.

    The file's first entry is the root of the tree; every later entry must
    have its parent earlier in the file.

    Unlike ldaptor's C{fromLDIFFile}, a file whose last entry is not followed
    by a blank line loads too (ldaptor calls that truncated).

    @param ldifPath: the LDIF file to load.
    @return: a L{Deferred} firing with the root entry (an
        L{IConnectedLDAPEntry}), or failing with C{OSError} or an ldaptor
        LDIF error if the file cannot be read or is malformed.
    """
    return defer.maybeDeferred(_loadDirectory, ldifPath)


def _loadDirectory(ldifPath: str) -> Deferred[Any]:
    with open(ldifPath, "rb") as f:
        data = f.read()
    loader = inmemory.InMemoryLDIFProtocol()
    # ends any last line and last entry; extra blank lines are allowed
    loader.dataReceived(data + b"\n\n")
    loader.connectionLost(Failure(error.ConnectionDone()))
    return loader.completed


class DemoLDAPServer(LDAPServer):
    """
    ldaptor's LDAP server plus the "Who am I?" extended operation, which
    OpenLDAP's C{ldapwhoami} sends after binding.
    """

    def extendedRequest_whoAmI(self, value: bytes | None, reply: Any) -> Any:
        """
        Answer C{dn:<bound DN>}, or an empty authzId when anonymous.
        """
        authzId = b""
        if self.boundUser is not None:
            authzId = b"dn:" + self.boundUser.dn.getText().encode("utf-8")
        return pureldap.LDAPExtendedResponse(
            resultCode=ldaperrors.Success.resultCode, response=authzId
        )

    extendedRequest_whoAmI.oid = WHOAMI_OID  # type: ignore[attr-defined]

    def handle_LDAPBindRequest(self, request: Any, controls: Any, reply: Any) -> Any:
        """
        ldaptor's bind, without the bound DN that ldaptor puts in the
        response's matchedDN (RFC 4511 leaves it empty for a bind).
        """
        d = defer.maybeDeferred(super().handle_LDAPBindRequest, request, controls, reply)

        def clearMatchedDN(response: Any) -> Any:
            if isinstance(response, pureldap.LDAPBindResponse):
                response.matchedDN = ""
            return response

        return d.addCallback(clearMatchedDN)

    def handle_LDAPSearchRequest(self, request: Any, controls: Any, reply: Any) -> Any:
        """
        ldaptor's search, except that any base-scope search of the empty DN
        reads the root DSE: ldaptor only recognises the filter spelled
        C{(objectClass=*)}, while OpenLDAP clients send C{(objectclass=*)}.
        """
        if request.baseObject == b"" and request.scope == pureldap.LDAP_SCOPE_baseObject:
            self.checkControls(controls)
            return self.getRootDSE(request, reply)
        return super().handle_LDAPSearchRequest(request, controls, reply)

    def getRootDSE(self, request: Any, reply: Any) -> Any:
        """
        ldaptor's root DSE, also listing the extended operations we answer.
        """
        root = interfaces.IConnectedLDAPEntry(self.factory)
        reply(
            pureldap.LDAPSearchResultEntry(
                objectName="",
                attributes=[
                    ("supportedLDAPVersion", ["3"]),
                    ("namingContexts", [root.dn.getText()]),
                    (
                        "supportedExtension",
                        [pureldap.LDAPPasswordModifyRequest.oid, WHOAMI_OID],
                    ),
                ],
            )
        )
        return pureldap.LDAPSearchResultDone(resultCode=ldaperrors.Success.resultCode)


class DemoDirectoryFactory(ServerFactory):
    """
    Builds L{DemoLDAPServer}s over one in-memory tree.

    @ivar root: the tree's root entry; ldaptor's server reaches it by adapting
        this factory to L{IConnectedLDAPEntry}.
    """

    protocol = DemoLDAPServer
    noisy = False

    def __init__(self, root: Any) -> None:
        self.root = root

    def __conform__(self, interface: Any) -> Any:
        if interface is interfaces.IConnectedLDAPEntry:
            return self.root
        return None


def makeDemoDirectoryFactory(ldifPath: str | None = None) -> Deferred[DemoDirectoryFactory]:
    """
    Load C{ldifPath} (the demo LDIF by default) and return a factory serving it.
    """
    d = loadDirectory(ldifPath or demoLDIFPath())
    d.addCallback(DemoDirectoryFactory)
    return d


class DemoDirectoryService(Service):
    """
    Serves an LDIF file over LDAP on a Twisted endpoint while running.

    On L{startService} it loads the LDIF and listens on the endpoint (for the
    demo, C{unix:/tmp/.../demo.sock}, which the proxy reaches as
    C{ldapi://%2Ftmp%2F...%2Fdemo.sock}); on L{stopService} it stops
    listening.  The tree lives in memory, so writes are lost at restart.
    """

    _log = Logger()

    def __init__(self, endpointDescription: str, ldifPath: str, reactor: IReactorCore) -> None:
        """
        @param endpointDescription: a server endpoint string for
            L{serverFromString}, e.g. C{unix:/tmp/ldaproute/demo.sock} or
            C{tcp:0:interface=127.0.0.1}.
        @param ldifPath: the LDIF to serve (see L{demoLDIFPath}).
        @param reactor: the reactor to listen with.
        """
        self.endpointDescription = endpointDescription
        self.ldifPath = ldifPath
        self._reactor = reactor
        self._listening: Deferred[Any] | None = None
        self._port: IListeningPort | None = None
        self._waiting: list[Deferred[IListeningPort]] = []

    @property
    def port(self) -> IListeningPort | None:
        """The listening port once listening, else L{None}."""
        return self._port

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        Return a L{Deferred} that fires with the listening port once the
        service listens, or fails if loading or listening failed.
        """
        if self._port is not None:
            return defer.succeed(self._port)
        d: Deferred[IListeningPort] = Deferred()
        self._waiting.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self.endpointDescription)
        d = makeDemoDirectoryFactory(self.ldifPath)
        d.addCallback(endpoint.listen)
        d.addCallbacks(self._cbListening, self._ebListening)
        self._listening = d

    def _cbListening(self, port: IListeningPort) -> IListeningPort:
        self._port = port
        self._log.info(
            "Demo directory {ldifPath} listening on {endpoint}",
            ldifPath=self.ldifPath,
            endpoint=self.endpointDescription,
        )
        waiting, self._waiting = self._waiting, []
        for w in waiting:
            w.callback(port)
        return port

    def _ebListening(self, reason: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for w in waiting:
            w.errback(reason)
        if reason.check(defer.CancelledError):
            return  # stopService before we listened
        self._log.failure(
            "Demo directory {ldifPath} could not listen on {endpoint}",
            reason,
            ldifPath=self.ldifPath,
            endpoint=self.endpointDescription,
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._listening is not None and not self._listening.called:
            self._listening.cancel()
        self._listening = None
        port, self._port = self._port, None
        if port is None:
            return None
        stopped = port.stopListening()
        return stopped if isinstance(stopped, Deferred) else defer.succeed(None)
