# -*- test-case-name: tests.test_routing -*-
"""
Route matching: which rule serves an operation.

Routes are tried in file order; the first whose every condition holds wins
(a route with no condition matches everything, so a catch-all goes last).
This module is pure: it sees a listener name, the operation, its target DN
as the client wrote it, the session's bound identity and the client's
address, and returns a L{Route}.  The target DN is only parsed when some
route has a C{suffix}, which keeps a single catch-all route free.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from ldaproute.wire import ber
from ldaproute.config import Route
from ldaproute.core.dn import DN, DNCache


class Router:
    """
    Choose a L{Route} for each operation.

    @ivar needsTargetDN: whether any route looks at the target DN; when
        none does, callers may pass C{targetDN=None} without reading it.
    @ivar needsBoundDN: likewise for the bound identity.
    """

    def __init__(self, routes: Sequence[Route], dnCache: DNCache | None = None) -> None:
        """
        @param dnCache: where parsed target DNs are remembered: the
            runtime's, which outlives one configuration (a fresh one when
            not given).
        """
        self.routes = tuple(routes)
        self._dnCache = dnCache if dnCache is not None else DNCache()
        self.needsTargetDN = any(route.suffix is not None for route in self.routes)
        self.needsBoundDN = any(route.bindDN is not None or route.bindAnonymous for route in self.routes)
        self._suffixes = tuple({route.suffix for route in self.routes if route.suffix is not None})

    def routeFor(
        self,
        listener: str,
        opTag: int,
        targetDN: bytes | None,
        boundDN: DN | None,
        peerAddress: str | None,
        extendedOID: bytes | None = None,
    ) -> Route | None:
        """
        The first route whose conditions all hold, or L{None}.

        @param targetDN: the operation's DN as sent (bind name, search base,
            entry); L{None} for operations without one.
        @param boundDN: the session's bound identity, L{None} when anonymous.
        @param peerAddress: the client's IP address, L{None} for non-IP
            transports (UNIX sockets), which match no C{client_network}.
        """
        parsed: DN | None = None
        isParsed = False
        peer = None
        for route in self.routes:
            if route.listener is not None and route.listener != listener:
                continue
            operations = route.operations
            if operations is not None:
                if opTag not in operations.tags:
                    continue
                if opTag == ber.EXTENDED_REQUEST and operations.extendedOIDs:
                    if extendedOID not in operations.extendedOIDs:
                        continue
            if route.bindAnonymous and boundDN is not None:
                continue
            if route.bindDN is not None and (boundDN is None or not boundDN.isWithin(route.bindDN)):
                continue
            if route.clientNetworks:
                if peer is None:
                    peer = _address(peerAddress)
                if peer is False or not any(peer in network for network in route.clientNetworks):
                    continue
            if route.suffix is not None:
                if not isParsed:
                    parsed, isParsed = self._parseOrNone(targetDN), True
                if parsed is None or not parsed.isWithin(route.suffix):
                    continue
            return route
        return None


    def whyNot(
        self,
        route: Route,
        listener: str,
        opTag: int,
        targetDN: bytes | None,
        boundDN: DN | None,
        peerAddress: str | None,
        extendedOID: bytes | None = None,
    ) -> str | None:
        """
        Why C{route} does not serve this operation, in a sentence; L{None}
        when every condition holds.  The same conditions as L{routeFor}, in
        the same order, for C{ldaproute explain} (routeFor stays the fast
        path; tests hold the two to the same answers).
        """
        if route.listener is not None and route.listener != listener:
            return f"listener is {route.listener}, not {listener}"
        operations = route.operations
        if operations is not None:
            if opTag not in operations.tags:
                return f"{ber.OPERATION_NAMES.get(opTag, hex(opTag))} is not in its operations"
            if opTag == ber.EXTENDED_REQUEST and operations.extendedOIDs and extendedOID not in operations.extendedOIDs:
                return "the extended operation's OID is not in its operations"
        if route.bindAnonymous and boundDN is not None:
            return "bind_dn = anonymous, and the session is bound"
        if route.bindDN is not None:
            if boundDN is None:
                return f"bind_dn = {route.bindDN.text}, and the session is anonymous"
            if not boundDN.isWithin(route.bindDN):
                return f"the bound DN is not within bind_dn = {route.bindDN.text}"
        if route.clientNetworks:
            peer = _address(peerAddress)
            if peer is False or not any(peer in network for network in route.clientNetworks):
                return "the client address is not in its client_network"
        if route.suffix is not None:
            parsed = self._parseOrNone(targetDN)
            if parsed is None:
                return f"the operation has no DN within suffix {route.suffix.text}"
            if not parsed.isWithin(route.suffix):
                return f"the DN is not within suffix {route.suffix.text}"
        return None

    def routesForSearch(
        self,
        listener: str,
        base: bytes,
        scope: int,
        boundDN: DN | None,
        peerAddress: str | None,
    ) -> list[SearchTarget] | None:
        """
        The sub-searches of a search that spans routes, or L{None} when one
        route serves it (then use L{routeFor}).

        A search spans routes when its base lies above the suffix of some
        route that would serve a search there (same listener, bind DN,
        network and operation conditions) and its scope reaches that suffix.
        The search then goes to the route that serves the base itself
        (unchanged; skipped for the root DSE, whose subtree no backend
        holds), then, in file order, to the first route of each other
        suffix in scope, with
        the base moved down to that suffix: a one-level search becomes a
        base search of the suffix entry, a subtree or subordinate search a
        subtree search of the suffix.  Reject routes are left out, which
        keeps their subtrees invisible.
        """
        if not self.needsTargetDN or scope not in (1, 2, 3):
            return None
        parsedBase = self._parseOrNone(base)
        if parsedBase is None:
            return None
        depth = len(parsedBase.rdns)
        if not any(len(s.rdns) > depth and s.isWithin(parsedBase) for s in self._suffixes):
            return None
        baseRoute = self.routeFor(listener, ber.SEARCH_REQUEST, base, boundDN, peerAddress)
        targets: list[SearchTarget] = []
        seen: set[DN] = set()
        if baseRoute is not None and baseRoute.suffix is not None:
            seen.add(baseRoute.suffix)
        peer = _address(peerAddress)
        for route in self.routes:
            suffix = route.suffix
            if suffix is None or suffix in seen:
                continue
            if len(suffix.rdns) <= depth or not suffix.isWithin(parsedBase):
                continue
            if scope == 1 and len(suffix.rdns) != depth + 1:
                continue
            if not _holdsForSearch(route, listener, boundDN, peer):
                continue
            seen.add(suffix)
            if route.reject is None:
                targets.append(SearchTarget(route, suffix.text.encode("utf-8"), 0 if scope == 1 else 2))
        if not targets:
            return None
        if baseRoute is not None and baseRoute.reject is None and not parsedBase.isRoot():
            targets.insert(0, SearchTarget(baseRoute, base, scope))
        return targets

    def namingContexts(self, listener: str, boundDN: DN | None, peerAddress: str | None) -> list[str]:
        """
        The suffixes a client of this listener can search, in file order:
        what the proxy's root DSE lists as namingContexts.
        """
        contexts: list[str] = []
        seen: set[DN] = set()
        peer = _address(peerAddress)
        for route in self.routes:
            suffix = route.suffix
            if suffix is None or suffix in seen or suffix.isRoot():
                continue
            if not _holdsForSearch(route, listener, boundDN, peer):
                continue
            seen.add(suffix)
            if route.reject is None:
                contexts.append(suffix.text)
        return contexts

    def _parseOrNone(self, raw: bytes | None) -> DN | None:
        if raw is None:
            return None
        try:
            return self._dnCache.parseBytes(raw)
        except ValueError:
            return None


@attrs.frozen
class SearchTarget:
    """One sub-search of a search that spans routes: the route, and the
    client-side base and scope it gets."""

    route: Route
    base: bytes
    scope: int


def _holdsForSearch(route: Route, listener: str, boundDN: DN | None, peer: object) -> bool:
    """Every condition of C{route} except C{suffix}, for a search."""
    if route.listener is not None and route.listener != listener:
        return False
    if route.operations is not None and ber.SEARCH_REQUEST not in route.operations.tags:
        return False
    if route.bindAnonymous and boundDN is not None:
        return False
    if route.bindDN is not None and (boundDN is None or not boundDN.isWithin(route.bindDN)):
        return False
    if route.clientNetworks and (peer is False or not any(peer in network for network in route.clientNetworks)):
        return False
    return True


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | bool:
    if text is None:
        return False
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def noRouteResult(opTag: int) -> tuple[int, str]:
    """
    The answer for an operation no route serves: what a directory server
    says for a name it does not hold.
    """
    if opTag == ber.BIND_REQUEST:
        return ber.INVALID_CREDENTIALS, "no route serves this bind DN"
    if opTag in (ber.EXTENDED_REQUEST,):
        return ber.UNWILLING_TO_PERFORM, "no route serves this extended operation"
    return 32, "no route serves this DN"  # noSuchObject
