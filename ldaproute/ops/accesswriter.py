# -*- test-case-name: tests.test_accesslog -*-
"""
The access log's writer: lines kept in memory and written in batches.

Why batches: formatting one twisted.logger event per operation through
twistd's observers cost 76-81 CPU-us per search at 16 clients, more than
relaying the search.  Here a line is appended to a list, and
L{AccessLogWriter} writes the list with one unbuffered C{os.write} per
flush (a timer, C{FLUSH_INTERVAL} after the first line of a batch, or at
once when C{FLUSH_BYTES} are waiting).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

_log = Logger()

#: Seconds between the first line of a batch and its write.
FLUSH_INTERVAL = 0.25
#: A batch this large is written at once, without waiting for the timer.
FLUSH_BYTES = 64 * 1024
#: Lines kept while the destination cannot take them (a full pipe); beyond
#: this the oldest are dropped and counted.
MAX_PENDING_BYTES = 8 * 1024 * 1024


class AccessLogWriter:
    """
    Lines kept in memory and written in batches with C{os.write}.

    @param destination: C{stdout} or a file path (opened for appending,
        created if missing, reopened by L{reopen} after log rotation).
    @param callLater: C{reactor.callLater}; with L{None} every line is
        written at once (tests, and the CLI).
    """

    def __init__(
        self, destination: str, callLater: Callable[..., Any] | None = None, flushInterval: float = FLUSH_INTERVAL
    ) -> None:
        self.destination = destination
        self._callLater = callLater
        self._flushInterval = flushInterval
        self._pending: list[str] = []
        self._pendingBytes = 0
        self._timer: Any = None
        self._fd = -1
        self._ownsFD = False
        #: lines dropped because the destination could not take them
        self.dropped = 0
        self._open()

    def _open(self) -> None:
        if self.destination == "stdout":
            self._fd, self._ownsFD = 1, False
            return
        self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._ownsFD = True

    def write(self, line: str) -> None:
        """Queue one line (ending in a newline)."""
        self._pending.append(line)
        self._pendingBytes += len(line)
        if self._callLater is None or self._pendingBytes >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._callLater(self._flushInterval, self.flush)

    def flush(self) -> None:
        """Write what is queued; what the destination refuses now waits."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending = []
        self._pendingBytes = 0
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                self._keep(bytes(view))
                return
            except OSError as e:
                self.dropped += data.count(b"\n")
                _log.error("The access log cannot be written to {destination}: {error}; lines dropped",
                           destination=self.destination, error=errno.errorcode.get(e.errno or 0, str(e)))
                return
            view = view[written:]

    def _keep(self, rest: bytes) -> None:
        """A full pipe (a slow log reader): keep the rest for the next flush,
        within L{MAX_PENDING_BYTES}."""
        if len(rest) > MAX_PENDING_BYTES:
            cut = rest.index(b"\n", len(rest) - MAX_PENDING_BYTES) + 1
            self.dropped += rest[:cut].count(b"\n")
            rest = rest[cut:]
        text = rest.decode("utf-8", "replace")
        self._pending.insert(0, text)
        self._pendingBytes += len(text)
        if self._callLater is not None and self._timer is None:
            self._timer = self._callLater(self._flushInterval, self.flush)

    def reopen(self) -> None:
        """After log rotation (SIGUSR1, SIGHUP): write to a fresh file of the
        same name.  Queued lines go to the old file first."""
        self.flush()
        if not self._ownsFD:
            return
        old = self._fd
        try:
            self._open()
        except OSError as e:
            _log.error("The access log {destination} cannot be reopened: {error}; still writing the old file",
                       destination=self.destination, error=e.strerror)
            return
        os.close(old)

    def close(self) -> None:
        """Write what is queued and close the file."""
        self.flush()
        if self._ownsFD:
            os.close(self._fd)
            self._ownsFD = False

