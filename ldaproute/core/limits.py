# -*- test-case-name: tests.test_limits -*-
"""
Per-connection limits that keep a hostile or careless client from costing
the proxy (or its backends) unbounded work: the nesting depth of a search
filter, read at byte level, and the pause of a client's reading while it has
too many operations outstanding.

Why the proxy checks filter depth itself: slapd closes the connection,
without an answer, on a filter nested a few thousand levels deep (measured
with OpenLDAP 2.5: depth 1,000 is answered, 5,000 drops the connection), which
through the proxy would cost the client's whole upstream connection and
every other operation on it.  A bounded walk over the filter's tags is a few
microseconds for real filters; only C{and}, C{or} and C{not} nest.
"""

from __future__ import annotations

from typing import Any, Final

from ldaproute.wire import ber
from ldaproute.wire.ber import readTLV

#: Default deepest filter nesting accepted (C{[ldaproute] max_filter_depth}).
DEFAULT_MAX_FILTER_DEPTH: Final = 64

#: resultCode for a request over a limit of the proxy (RFC 4511 appendix A).
ADMIN_LIMIT_EXCEEDED: Final = 11

#: Outstanding operations of one client past which the proxy stops reading
#: from it until answers come back.  A listener's C{max_outstanding} (busy,
#: 51) is the policy limit; this internal one only bounds memory when no
#: policy is set, so it is high.
PAUSE_OUTSTANDING: Final = 1000

_AND: Final = 0xA0
_OR: Final = 0xA1
_NOT: Final = 0xA2


def filterDepth(pdu: bytes, envelope: ber.Envelope, limit: int) -> int:
    """
    The nesting depth of a search request's filter, counting up to
    C{limit + 1} at most (the walk stops there).

    @raise ber.FramingError: the request is malformed where it was read.
    """
    end = envelope.contentEnd
    pos = envelope.contentStart
    # baseObject, scope, derefAliases, sizeLimit, timeLimit, typesOnly
    for _ in range(6):
        _, _, pos = readTLV(pdu, pos, end)
    # an explicit stack of container ends: no recursion on hostile input
    tag, start, stop = readTLV(pdu, pos, end)
    if tag not in (_AND, _OR, _NOT):
        return 1
    stack = [stop]
    depth = deepest = 1
    pos = start
    while stack:
        if pos >= stack[-1]:
            pos = stack.pop()
            depth -= 1
            continue
        tag, start, stop = readTLV(pdu, pos, stack[-1])
        if tag in (_AND, _OR, _NOT):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
            stack.append(stop)
            pos = start
        else:
            pos = stop
    return deepest


class ReadGate:
    """
    The client transport's reading, paused while any reason holds: an
    upstream connection whose buffer is full, or too many outstanding
    operations.  Each reason pauses and resumes independently, so one
    resuming cannot undo another's pause.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._reasons: set[object] = set()
        #: whether any reason holds (kept, not computed: read per operation)
        self.paused = False

    def pause(self, reason: object) -> None:
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(reason)
        self.paused = True

    def resume(self, reason: object) -> None:
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons:
                self.paused = False
                self._transport.resumeProducing()


def releaseProducer(transport: Any) -> None:
    """
    Unregister C{transport}'s producer before C{loseConnection}: Twisted
    does not close a transport whose streaming producer is paused when its
    buffer drains (it resumes the producer instead), so a slow reader that
    unbinds, or a backend link closed while it pushed back, stayed open
    forever, holding its file descriptor.
    """
    try:
        transport.unregisterProducer()
    except RuntimeError:  # StringTransport: nothing registered
        pass
