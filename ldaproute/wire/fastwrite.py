# -*- test-case-name: tests.test_fastwrite -*-
"""
Write-through for plain TCP transports.

Twisted's C{transport.write} always buffers: it registers the socket for
writability with epoll, waits for the next reactor turn, sends, then
unregisters.  For a request/response relay that is two C{epoll_ctl} calls,
an extra wakeup and a reactor iteration per message in each direction, on
sockets that are nearly always writable.  L{writerFor} returns a function
that, while the transport has nothing buffered, tries C{send()} at once and
hands Twisted only what the kernel did not take, so ordering, flow control
(producers are paused by Twisted's buffer as before) and error handling
stay Twisted's.

It applies to C{twisted.internet.tcp} connections without TLS only; any
other transport (TLS, UNIX sockets, PROXY-protocol wrappers, test doubles)
gets its own C{write}.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def writerFor(transport: Any) -> Callable[[bytes], None]:
    """The fastest correct way to write to C{transport}."""
    if not isinstance(transport, tcp.Connection):
        return transport.write
    send = transport.socket.send
    fallback = transport.write

    def write(data: bytes) -> None:
        if (
            transport.TLS
            or transport._tempDataBuffer
            or transport.offset != len(transport.dataBuffer)
            or not transport.connected
            or transport.disconnecting
        ):
            fallback(data)
            return
        try:
            sent = send(data)
        except BlockingIOError:
            sent = 0
        except InterruptedError:
            sent = 0
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.ENOBUFS):
                fallback(data)  # Twisted's own write path meets and reports the error
                return
            sent = 0
        if sent < len(data):
            fallback(data[sent:] if sent else data)

    return write
