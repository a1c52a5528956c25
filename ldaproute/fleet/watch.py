# -*- test-case-name: tests.test_fleet_watch -*-
"""
C{watch_config = on}: reload when routes.ini changes.

The watch is on the file's directory, not the file: Kubernetes updates a
mounted ConfigMap by writing a new timestamped directory and renaming the
C{..data} symlink over the old one, so the file's own inode never changes
and a watch on it would never fire.  Any event in the directory (a write,
a rename, a new symlink) schedules one look after a short pause, which
collects the burst of events an editor or the kubelet makes; the look
reads the file through its symlinks and reloads only when the content
differs from what was last seen.  Where inotify is not available (not
Linux, or no watches left) the file is polled instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

try:
    from twisted.internet import inotify
except ImportError:  # not Linux
    inotify = None  # type: ignore[assignment]

#: How long to wait after an event before reading the file, seconds.
SETTLE = 0.2
#: How often the poll fallback reads the file, seconds.
POLL_INTERVAL = 2.0


def fingerprint(path: str) -> str | None:
    """The content digest of C{path} (through symlinks), L{None} while it is missing."""
    try:
        with open(os.path.realpath(path), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


class ConfigWatcher(Service):
    """
    Calls C{changed()} once each time the content of C{path} changes.

    @param useInotify: L{False} to poll (tests; platforms without inotify).
    """

    _log = Logger()

    def __init__(self, path: str, changed: Callable[[], Any], reactor: Any, useInotify: bool = True) -> None:
        self.path = path
        self._changed = changed
        self._reactor = reactor
        self._useInotify = useInotify and inotify is not None
        self._seen = fingerprint(path)
        self._settling: Any = None
        self._notifier: Any = None
        self._poll: LoopingCall | None = None
        self.mode = "poll"

    def startService(self) -> None:
        super().startService()
        self._seen = fingerprint(self.path)
        if self._useInotify:
            try:
                notifier = inotify.INotify(self._reactor)
                notifier.startReading()
                mask = (
                    inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_CREATE
                    | inotify.IN_DELETE | inotify.IN_MODIFY | inotify.IN_ATTRIB
                )  # fmt: skip
                notifier.watch(FilePath(os.path.dirname(os.path.abspath(self.path))), mask, callbacks=[self._event])
            except Exception as e:  # no inotify watches left, or a filesystem without them
                self._log.warn("watch_config: inotify is not available ({reason}); polling every {interval}s",
                               reason=str(e), interval=POLL_INTERVAL)  # fmt: skip
            else:
                self._notifier = notifier
                self.mode = "inotify"
        if self._notifier is None:
            self._poll = LoopingCall(self._look)
            self._poll.clock = self._reactor
            self._poll.start(POLL_INTERVAL, now=False)
        self._log.info("Watching {path} for changes ({mode})", path=self.path, mode=self.mode)

    def stopService(self) -> None:
        super().stopService()
        if self._notifier is not None:
            self._notifier.connectionLost(None)
            self._notifier = None
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self._settling is not None and self._settling.active():
            self._settling.cancel()

    def _event(self, watch: Any, path: FilePath[str], mask: int) -> None:
        if self._settling is None or not self._settling.active():
            self._settling = self._reactor.callLater(SETTLE, self._look)

    def _look(self) -> None:
        seen = fingerprint(self.path)
        if seen is None or seen == self._seen:
            return  # missing for a moment (mid-swap), or the same content
        self._seen = seen
        self._log.info("{path} changed: reloading", path=self.path)
        self._changed()


__all__ = ["ConfigWatcher", "fingerprint"]
