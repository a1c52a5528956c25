# -*- test-case-name: tests.test_slowreaders -*-
"""
Shared mode's answer to a client that reads more slowly than its backend
answers: bounded buffering, never head-of-line blocking.

In session mode a client that does not read pauses its own upstream
connection, and the backend holds the rest of the result.  A shared
connection carries other clients' operations too: pausing it would stall
them all behind the slowest reader (OpenLDAP lloadd's C{read_pause} does,
and is marked experimental because it can deadlock).  So a shared
connection is never paused for a client; instead each client's link counts
the bytes it hands to that client's transport while the transport says its
buffer is full (its producer, L{ldaproute.listeners.links.LinksProducer},
is paused), and once they pass the pool's C{client_buffer_max} the client's
searches on shared connections are abandoned upstream and answered
adminLimitExceeded (11).  What the proxy holds for one slow client is then
at most the transport's own buffer (Twisted pauses its producer past 64
KiB), C{client_buffer_max}, and what one upstream read brought.

A search is the operation whose answer can grow without bound; other
operations' answers are one PDU each and still go through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from twisted.logger import Logger

from ldaproute.core.limits import ADMIN_LIMIT_EXCEEDED
from ldaproute.wire import ber

_log = Logger()

__all__ = ["ADMIN_LIMIT_EXCEEDED", "ClientBuffer", "diagnostic", "logShed", "sheddable"]


class ClientBuffer:
    """
    What one link handed to a client transport that is not taking it.

    @ivar limit: the pool's C{client_buffer_max}, in bytes.
    @ivar paused: the client's transport has paused its producer (its
        buffer is full); until it resumes, everything delivered stays in
        the proxy's memory.
    @ivar held: bytes delivered since the transport paused (an upper bound
        on what it still holds beyond its own buffer size).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.paused = False
        self.held = 0

    def pause(self) -> None:
        """The client's transport buffer is full."""
        self.paused = True

    def resume(self) -> None:
        """The client's transport wrote all it held (Twisted resumes a producer on an empty buffer)."""
        self.paused = False
        self.held = 0

    def delivered(self, size: int) -> bool:
        """
        C{size} bytes went to the client's transport: whether the link
        must now shed its searches (only while the client is not reading).
        C{held} keeps counting until the transport resumes: a search sent
        meanwhile is shed at its first answer, since the bytes already
        waiting have not gone anywhere.
        """
        if not self.paused:
            return False
        self.held += size
        return self.held > self.limit


def sheddable(ops: dict[int, tuple[Any, int]]) -> Iterator[tuple[int, Any, int]]:
    """
    C{(client messageID, connection, upstream messageID)} of the searches
    in C{ops} (a link's operations, by client messageID) that went out on a
    connection; those still waiting for one have sent nothing yet.
    """
    for clientID, (connection, upstreamID) in list(ops.items()):
        if connection is None:
            continue
        entry = connection.ops.get(upstreamID)
        if entry is not None and entry[2] == ber.SEARCH_REQUEST:
            yield clientID, connection, upstreamID


def diagnostic(limit: int) -> str:
    """The diagnosticMessage of a search shed because its client did not read."""
    return (
        f"the client read its results too slowly: more than {limit} bytes (client_buffer_max) waited in "
        "the proxy for it, so the search was abandoned; read faster, use paged results, or mode = session"
    )


def logShed(peer: str, pool: str, limit: int, held: int, messageIDs: Iterable[int]) -> None:
    """One event per shedding, naming the client and the searches (never their content)."""
    ids = sorted(messageIDs)
    _log.warn(
        "Client {peer} is not reading its results: {held} bytes waited for it in the proxy (pool {pool}, "
        "client_buffer_max {limit}); abandoned its searches {messageIDs} and answered adminLimitExceeded (11)",
        peer=peer,
        pool=pool,
        limit=limit,
        held=held,
        messageIDs=ids,
        resultCode=ADMIN_LIMIT_EXCEEDED,
    )
