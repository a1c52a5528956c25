# -*- test-case-name: tests.test_slowpath -*-
"""
The decoding path of one session: operations whose bytes the proxy
rewrites (L{Rewriting}), and searches served across routes (L{FanOuts}).

Both are bookkeeping by messageID and pure: they take PDUs and return
PDUs, or C{(link, pdu)} pairs for the caller to send.  The client
connection owns neither the decisions nor the state, only the sending.
No Twisted imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ldaproute.core import fanout, secrets
from ldaproute.core.decisions import Answer, SpanSearch
from ldaproute.core.rewrite import Refused, Rewriter
from ldaproute.wire import ber
from ldaproute.wire.pdu import PAGED_RESULTS_OID, controlOIDs, messageIDOf, searchSizeLimit, searchWith, splitMessage, withMessageID

if TYPE_CHECKING:
    from ldaproute.config import Route
    from ldaproute.core.dn import DN
    from ldaproute.core.routing import Router

#: a link, as the caller knows it (compared by identity only)
L = TypeVar("L")

#: messageIDs of the proxy's fan-out sub-searches (and their abandons) on
#: upstream links: below the links' own internal IDs.
FANOUT_ID_BASE: Final = 0x70000000
_FANOUT_ID_SPAN: Final = 0x0FFFFF00

#: Reading the PDUs of a chunk that links already framed.
_UNBOUNDED: Final = 1 << 62


class Rewriting:
    """
    Rewritten operations by messageID: their responses come back through
    the same route's rewriter.
    """

    def __init__(self, rewriterFor: Callable[[Route], Rewriter] = Rewriter) -> None:
        """
        @param rewriterFor: a route's rewriter (the runtime keeps one per
            route of the configuration in force).
        """
        self._rewriterFor = rewriterFor
        #: the rewriter of each operation in flight
        self.ops: dict[int, Rewriter] = {}

    def request(self, route: Route, messageID: int, pdu: bytes) -> bytes:
        """
        The request as the backend gets it.

        @raise ldaproute.core.rewrite.Refused: the rewrite refuses it.
        """
        rewriter = self._rewriterFor(route)
        rewritten = rewriter.request(pdu)
        self.ops[messageID] = rewriter
        return rewritten

    def responses(self, data: bytes) -> bytes:
        """Whole response PDUs, each through its operation's rewriter."""
        ops = self.ops
        if not ops:
            return data
        out = []
        for pdu in ber.Framer(_UNBOUNDED).feed(data):
            rewriter = ops.get(messageIDOf(pdu))
            out.append(rewriter.response(pdu) if rewriter is not None else pdu)
        return b"".join(out)


def cleartextRootDSE(reads: set[int], data: bytes, finals: list[tuple[int, int, int]]) -> bytes:
    """
    Responses to a cleartext client, the root DSE reads among them
    (C{reads}, by messageID) as it may see them: without the SASL
    mechanisms it would be refused for here.  The reads that C{finals}
    end are forgotten.
    """
    out = []
    for pdu in ber.Framer(_UNBOUNDED).feed(data):
        out.append(secrets.cleartextRootDSE(pdu) if messageIDOf(pdu) in reads else pdu)
    for messageID, _, _ in finals:
        reads.discard(messageID)
    return b"".join(out)


def replayName(rewriterFor: Callable[[Route], Rewriter], router: Router, poolName: str, name: bytes) -> bytes:
    """
    The bind DN to replay (or assert, in shared mode) on a pool, through
    the suffix rewrite of the first route to that pool that has one.
    """
    for route in router.routes:
        if route.pool == poolName and route.rewriteSuffix is not None:
            return rewriterFor(route).dnToBackend(name)
    return name


class FanOuts(Generic[L]):
    """
    The session's searches across routes: each a L{fanout.FanOut} under
    the client's messageID, its sub-searches by their own messageIDs.
    """

    def __init__(self, rewriterFor: Callable[[Route], Rewriter] = Rewriter) -> None:
        self._rewriterFor = rewriterFor
        self.searches: dict[int, fanout.FanOut] = {}
        #: sub-searches in flight, by sub-search messageID (the hot path
        #: only looks at responses when this is not empty)
        self.subs: dict[int, tuple[fanout.FanOut, fanout.SubSearch]] = {}
        self._nextID = FANOUT_ID_BASE

    def __contains__(self, messageID: int) -> bool:
        return messageID in self.searches

    def _allocate(self) -> int:
        subID = self._nextID
        self._nextID = FANOUT_ID_BASE + (subID + 1 - FANOUT_ID_BASE) % _FANOUT_ID_SPAN
        return subID

    def plan(
        self,
        router: Router,
        listener: str,
        pdu: bytes,
        base: bytes | None,
        boundDN: DN | None,
        peerAddress: str | None,
    ) -> SpanSearch | Answer | None:
        """
        L{None} for a search that one route serves as usual; else the
        sub-searches to run (a L{SpanSearch}), or the answer refusing it.
        """
        plan = fanout.planSearch(router, listener, pdu, base, boundDN, peerAddress)
        if plan is None:
            return None
        if len(plan.targets) > 1 and PAGED_RESULTS_OID in controlOIDs(splitMessage(pdu)[3]):
            return Answer(
                ber.UNWILLING_TO_PERFORM, "paged results cannot span routes: search below one naming context at a time"
            )
        subs = []
        for target in plan.targets:
            route = target.route
            assert route.pool is not None  # reject routes are never search targets
            subID = self._allocate()
            subPDU = searchWith(withMessageID(pdu, subID), target.base, target.scope)
            rewriter = None
            if route.rewrites:
                rewriter = self._rewriterFor(route)
                try:
                    subPDU = rewriter.request(subPDU)
                except Refused as e:
                    return Answer(e.resultCode, e.message)
            subs.append(fanout.SubSearch(route.name, route.pool, subID, subPDU, rewriter))
        return SpanSearch(plan, subs, searchSizeLimit(pdu))

    def start(
        self, messageID: int, span: SpanSearch, links: Sequence[L], write: Callable[[bytes], None]
    ) -> list[tuple[L, bytes]]:
        """
        Run C{span} for the client's C{messageID}, its sub-searches on
        C{links} (one each), answers written with C{write}: the sub-search
        PDUs to send.
        """
        plan, subs = span.plan, span.subs
        search = fanout.FanOut(
            messageID, span.sizeLimit, subs, write, plan.entryHook if plan.rootDSE and subs else None
        )
        if plan.rootDSE and not subs:
            search.writeEntry(fanout.rootDSEEntry(plan.namingContexts))
            search.start()
            return []
        self.searches[messageID] = search
        for sub, link in zip(subs, links):
            sub.link = link
            self.subs[sub.subID] = (search, sub)
        return [(link, sub.pdu) for sub, link in zip(subs, links)]

    def responses(self, data: bytes, sends: list[tuple[L, bytes]]) -> bytes:
        """
        Take the sub-searches' PDUs out of a chunk of responses, which
        their searches answer with; what is left goes to the client as
        usual.  Abandons to send are appended to C{sends}.
        """
        keep = []
        subs = self.subs
        for pdu in ber.Framer(_UNBOUNDED).feed(data):
            found = subs.get(messageIDOf(pdu))
            if found is None:
                keep.append(pdu)
                continue
            search, sub = found
            abandon = search.pduReceived(sub, pdu)
            if sub.resultCode is not None:
                subs.pop(sub.subID, None)
            self._progress(search, abandon, sends)
        return b"".join(keep)

    def linkLost(self, link: L, resultCode: int, reason: str) -> None:
        """Sub-searches on a link that lost them count as failed."""
        if not self.subs:
            return
        for subID, (search, sub) in list(self.subs.items()):
            if sub.link is link:
                del self.subs[subID]
                search.subFailed(sub, resultCode, reason)
                self._progress(search, [], [])

    def abandon(self, messageID: int) -> list[tuple[L, bytes]] | None:
        """
        The client abandoned C{messageID}: L{None} when it is not a search
        across routes, else the abandons to send for its sub-searches.
        """
        search = self.searches.pop(messageID, None)
        if search is None:
            return None
        search.finished = True
        sends: list[tuple[L, bytes]] = []
        self._abandonSubs(search.pending(), sends)
        return sends

    def clear(self) -> None:
        self.searches.clear()
        self.subs.clear()

    def _progress(
        self, search: fanout.FanOut, abandon: list[fanout.SubSearch], sends: list[tuple[L, bytes]]
    ) -> None:
        if abandon:
            self._abandonSubs(abandon, sends)
        if search.finished and self.searches.get(search.messageID) is search:
            del self.searches[search.messageID]

    def _abandonSubs(self, subs: list[fanout.SubSearch], sends: list[tuple[L, bytes]]) -> None:
        for sub in subs:
            if sub.link is not None:
                abandon = ber.message(self._allocate(), ber.tlv(ber.ABANDON_REQUEST, ber.encodeInteger(sub.subID)))
                sends.append((sub.link, abandon))
