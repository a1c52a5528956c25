# -*- test-case-name: tests.test_fanout -*-
"""
A search the proxy answers from several routes: the fan-out operation.

When the router says a search spans routes (L{Router.routesForSearch}), or
the client reads the root DSE while routes have suffixes, the frontend makes
one L{FanOut}.  It owns the client's messageID until its single
SearchResultDone: it builds one sub-search per route (own messageIDs, so two
routes on one pool can run side by side on one upstream connection),
streams their entries to the client under the client's messageID (through
the route's rewriter when it has one), counts them against the client's size
limit, and ends with one SearchResultDone.

Result rule (documented in the README section "Searches that span routes"):

  - the merged size limit is reached: sizeLimitExceeded (4), the other
    sub-searches are abandoned;
  - otherwise the first sub-search, in route order, that ended with a code
    other than success (0) and noSuchObject (32) gives the code, with
    C{"route NAME: "} before its message;
  - otherwise success when any sub-search succeeded, else noSuchObject.

A sub-search answered with a referral (10) adds its URLs to the stream as a
SearchResultReference (a continuation reference) and counts as success.
With a single sub-search (the root DSE through a catch-all route) its own
SearchResultDone is passed on, response controls and all.

Paged results (RFC 2696) cannot span routes (one cookie cannot stand for
several servers' positions): a fan-out of two or more sub-searches carrying
the paged-results control is refused with unwillingToPerform (53) before
anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ldaproute.core.dn import DN, parseDN
from ldaproute.core.rewrite import Rewriter
from ldaproute.core.routing import Router, SearchTarget
from ldaproute.wire import ber
from ldaproute.wire.pdu import searchScope, splitMessage, withMessageID
from ldaproute.wire.results import readEntry, readResponse, searchResultEntry

#: What the root DSE's entries pass through: attributes in, attributes out.
EntryHook = Callable[[list[tuple[bytes, list[bytes]]]], list[tuple[bytes, list[bytes]]]]

NO_SUCH_OBJECT: Final = 32
REFERRAL: Final = 10


class SubSearch:
    """One sub-search: where it goes and how it stands."""

    def __init__(self, route: str, pool: str, subID: int, pdu: bytes, rewriter: Rewriter | None) -> None:
        self.route = route
        self.pool = pool
        self.subID = subID
        self.pdu = pdu
        self.rewriter = rewriter
        self.link: Any = None
        self.resultCode: int | None = None
        self.message = ""
        self.done: bytes | None = None


class FanOut:
    """
    One client search served by zero or more sub-searches.

    @param write: writes bytes to the client.
    @param entryHook: for the root DSE: turns each entry's attributes
        (C{[(name, [values])]}) into what the client sees.
    @param synthesized: entries (bytes of SearchResultEntry protocolOps)
        the proxy itself adds before any sub-search result.
    """

    def __init__(
        self,
        messageID: int,
        sizeLimit: int,
        subs: list[SubSearch],
        write: Callable[[bytes], None],
        entryHook: EntryHook | None = None,
    ) -> None:
        self.messageID = messageID
        self.sizeLimit = sizeLimit
        self.subs = subs
        self._write = write
        self._entryHook = entryHook
        self.entries = 0
        self.finished = False

    def pending(self) -> list[SubSearch]:
        return [sub for sub in self.subs if sub.resultCode is None]

    def writeEntry(self, op: bytes) -> bool:
        """Count and write one entry; False once the size limit is reached."""
        if self.sizeLimit and self.entries >= self.sizeLimit:
            return False
        self.entries += 1
        self._write(ber.message(self.messageID, op))
        return True

    def pduReceived(self, sub: SubSearch, pdu: bytes) -> list[SubSearch]:
        """
        A response PDU of C{sub}; returns the sub-searches to abandon (when
        the size limit ends the search early).
        """
        if self.finished:
            return []
        if sub.rewriter is not None:
            pdu = sub.rewriter.response(pdu)
        try:
            _, opTag, op, rest = splitMessage(pdu)
        except Exception:
            return []
        if opTag == ber.SEARCH_RESULT_ENTRY:
            if self._entryHook is not None:
                op = self._hookEntry(self._entryHook, op)
            if not self.writeEntry(op):
                return self._finish(ber.SIZE_LIMIT_EXCEEDED, "size limit reached across routes")
            return []
        if opTag == ber.SEARCH_RESULT_DONE:
            self._subDone(sub, pdu)
            if not self.pending():
                return self._finish()
            return []
        # references, intermediate responses: passed on under the client's ID
        self._write(withMessageID(pdu, self.messageID))
        return []

    def subFailed(self, sub: SubSearch, resultCode: int, message: str) -> None:
        """The sub-search's upstream connection is gone."""
        if self.finished or sub.resultCode is not None:
            return
        sub.resultCode, sub.message = resultCode, message
        if not self.pending():
            self._finish()

    def start(self) -> None:
        """Finish at once when there is nothing to wait for (root DSE alone)."""
        if not self.pending():
            self._finish()

    def _subDone(self, sub: SubSearch, pdu: bytes) -> None:
        response = readResponse(pdu)
        code = response.resultCode
        sub.message = response.diagnosticMessage
        sub.done = pdu
        if code == REFERRAL and len(self.subs) > 1:
            if response.referral:
                self._write(ber.message(self.messageID, ber.tlv(ber.SEARCH_RESULT_REFERENCE, response.referral)))
            code = ber.SUCCESS
        sub.resultCode = code

    def _hookEntry(self, hook: EntryHook, op: bytes) -> bytes:
        objectName, attributes = readEntry(op)
        return searchResultEntry(objectName, hook(attributes))

    def _finish(self, code: int | None = None, message: str = "") -> list[SubSearch]:
        self.finished = True
        abandon = self.pending()
        if code is None:
            single = self.subs[0] if len(self.subs) == 1 else None
            if single is not None and single.done is not None:
                self._write(withMessageID(single.done, self.messageID))
                return abandon
            code, message = self.mergedResult()
        self._write(ber.result(self.messageID, ber.SEARCH_RESULT_DONE, code, message))
        return abandon

    def mergedResult(self) -> tuple[int, str]:
        """The documented rule (module docstring)."""
        for sub in self.subs:
            if sub.resultCode not in (ber.SUCCESS, NO_SUCH_OBJECT, None):
                return sub.resultCode, f"route {sub.route}: {sub.message}"
        if not self.subs or any(sub.resultCode == ber.SUCCESS for sub in self.subs):
            return ber.SUCCESS, ""
        return NO_SUCH_OBJECT, "no route holds this base"


class Plan:
    """
    How the proxy serves a search that is not a plain relay.

    @ivar targets: the sub-searches, in route order.
    @ivar rootDSE: whether this is a read of the root DSE.
    @ivar namingContexts: for the root DSE, the contexts to present.
    """

    def __init__(self, targets: list[SearchTarget], rootDSE: bool = False, namingContexts: list[str] | None = None) -> None:
        self.targets = targets
        self.rootDSE = rootDSE
        self.namingContexts = namingContexts or []

    def entryHook(self, attributes: list[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, list[bytes]]]:
        """The root DSE as presented: the routes' suffixes first, then the
        backend's own contexts that no route suffix already names."""
        listed = [context.encode("utf-8") for context in self.namingContexts]
        parsed = []
        for context in self.namingContexts:
            parsed.append(parseDN(context))
        out = []
        found = False
        for name, values in attributes:
            if name.lower() == b"namingcontexts":
                found = True
                extra = []
                for value in values:
                    try:
                        dn = parseDN(value.decode("utf-8"))
                    except ValueError:
                        continue
                    if dn not in parsed:
                        extra.append(value)
                values = listed + extra
            out.append((name, values))
        if not found and listed:
            out.append((b"namingContexts", listed))
        return out


def rootDSEEntry(namingContexts: list[str]) -> bytes:
    """The root DSE the proxy presents when no route serves the empty DN."""
    attributes: list[tuple[bytes, list[bytes]]] = [
        (b"objectClass", [b"top"]),
        (b"supportedLDAPVersion", [b"3"]),
    ]
    if namingContexts:
        attributes.append((b"namingContexts", [context.encode("utf-8") for context in namingContexts]))
    return searchResultEntry(b"", attributes)


def planSearch(
    router: Router, listener: str, pdu: bytes, base: bytes | None, boundDN: DN | None, peerAddress: str | None
) -> Plan | None:
    """
    L{None} for a search one route serves as is; otherwise the L{Plan}:
    a read of the root DSE (base "" scope base), or a search spanning routes.
    """
    if base is None:
        return None
    scope = searchScope(pdu)
    if scope == 0:
        if base.strip(b" "):
            return None
        route = router.routeFor(listener, ber.SEARCH_REQUEST, base, boundDN, peerAddress)
        targets = [SearchTarget(route, base, 0)] if route is not None and route.reject is None else []
        return Plan(targets, rootDSE=True, namingContexts=router.namingContexts(listener, boundDN, peerAddress))
    spanning = router.routesForSearch(listener, base, scope, boundDN, peerAddress)
    if spanning is None:
        return None
    return Plan(spanning)
