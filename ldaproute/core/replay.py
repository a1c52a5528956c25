# -*- test-case-name: tests.test_replay -*-
"""
Which operations the proxy may send again when the backend connection
carrying them dies.

The rule (README.rst, "What clients see when a backend fails"): an
operation that never went out may always go out on a new connection
(except a bind, whose outcome the session's identity depends on); one
that went out is repeated only when repeating it cannot change the
directory and the client has seen nothing of its answer yet: a search
(the root DSE included; a paged search's later page goes out with its
cookie, and a backend that cannot honour the cookie answers with its own
paging error), a compare, Who Am I.  Writes, binds, other extended
operations and anything carrying a control not known to be harmless to
repeat are answered unavailable (52): the proxy cannot know whether the
dead backend applied them.
"""

from __future__ import annotations

from typing import Final

from ldaproute.wire import ber
from ldaproute.wire.pdu import controlOIDs, controlsAfter, extendedNameAt, opSpan

#: how far an operation got when its link was lost (L{IBackendLink.progressOf})
UNSENT: Final = 0
SENT: Final = 1
ANSWERING: Final = 2
#: no backend took the link's connection at all (its budget, if any, is spent)
NO_BACKEND: Final = 3

#: how many times one operation may be sent again: a request that itself
#: kills backends must not take the whole pool down, one after the other
MAX_REPLAYS: Final = 2

WHO_AM_I_OID: Final = b"1.3.6.1.4.1.4203.1.11.3"

#: Controls that leave a read a read: repeating the request repeats
#: nothing but the read.
READ_SAFE_CONTROLS: Final = frozenset(
    {
        b"1.2.840.113556.1.4.319",  # paged results (the backend judges the cookie)
        b"1.2.840.113556.1.4.473",  # server-side sort
        b"2.16.840.1.113730.3.4.9",  # virtual list view
        b"2.16.840.1.113730.3.4.2",  # manageDsaIT
        b"2.16.840.1.113730.3.4.18",  # proxied authorization v2
        b"2.16.840.1.113730.3.4.12",  # proxied authorization v1
        b"1.3.6.1.4.1.4203.1.10.1",  # subentries
        b"1.3.6.1.1.12",  # assertion
        b"1.2.826.0.1.3344810.2.3",  # matched values
        b"1.3.6.1.1.22",  # don't use copy
        b"1.3.6.1.4.1.42.2.27.8.5.1",  # password policy request
        b"1.3.6.1.4.1.4203.666.5.12",  # relax rules (no effect on a read)
        b"1.2.840.113556.1.4.417",  # AD show deleted
        b"1.2.840.113556.1.4.2064",  # AD show recycled
        b"1.2.840.113556.1.4.529",  # AD extended DN
        b"1.2.840.113556.1.4.801",  # AD security descriptor flags
        b"1.2.840.113556.1.4.1339",  # AD domain scope
        b"1.2.840.113556.1.4.1340",  # AD search options
        b"1.2.840.113556.1.4.1504",  # AD attribute scoped query
        b"1.2.840.113556.1.4.2066",  # AD policy hints (deprecated OID)
        b"1.3.6.1.4.1.1466.29539.12",  # chaining behaviour
    }
)

_READS: Final = frozenset({ber.SEARCH_REQUEST, ber.COMPARE_REQUEST})


def mayReplay(pdu: bytes, progress: int) -> bool:
    """
    Whether the request C{pdu}, which got as far as C{progress}, may be
    sent again on a new connection.
    """
    if progress >= ANSWERING:
        return False
    try:
        _, opStart, opEnd = opSpan(pdu)
    except (ber.FramingError, IndexError, ValueError):
        return False
    tag = pdu[opStart]
    if tag == ber.BIND_REQUEST:
        return False
    if progress == UNSENT:
        return True
    if tag not in _READS:
        if tag != ber.EXTENDED_REQUEST:
            return False
        try:
            if extendedNameAt(pdu, opStart) != WHO_AM_I_OID:
                return False
        except (ber.FramingError, IndexError, ValueError):
            return False
    if opEnd < len(pdu):
        try:
            oids = controlOIDs(controlsAfter(pdu, opStart))
        except (ber.FramingError, IndexError, ValueError):
            return False
        return all(oid in READ_SAFE_CONTROLS for oid in oids)
    return True
