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

from ldaproute import ber
from ldaproute.config import Route
from ldaproute.dn import DN, parseDNBytes


class Router:
    """
    Choose a L{Route} for each operation.

    @ivar needsTargetDN: whether any route looks at the target DN; when
        none does, callers may pass C{targetDN=None} without reading it.
    @ivar needsBoundDN: likewise for the bound identity.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self.needsTargetDN = any(route.suffix is not None for route in self.routes)
        self.needsBoundDN = any(route.bindDN is not None or route.bindAnonymous for route in self.routes)

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
        parsed: DN | None | bool = False  # False: not parsed yet
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
                if parsed is False:
                    parsed = _parseOrNone(targetDN)
                if parsed is None or not parsed.isWithin(route.suffix):
                    continue
            return route
        return None


def _parseOrNone(raw: bytes | None) -> DN | None:
    if raw is None:
        return None
    try:
        return parseDNBytes(raw)
    except ValueError:
        return None


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
