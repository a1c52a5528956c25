"""
watch_config's look at the file, driven by a Clock (the poll path): a
change in content reloads once, a rewrite with the same content does not,
a missing file (mid-swap) waits, and the Kubernetes ``..data`` swap counts
as a change.  (The inotify path runs in tests/integration/test_fleet.py.)
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock

from ldaproute.fleet.watch import POLL_INTERVAL, SETTLE, ConfigWatcher, fingerprint


def test_pollReloadsOncePerChange(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "routes.ini")
    with open(path, "w") as f:
        f.write("one")
    calls: list[None] = []
    clock = Clock()
    watcher = ConfigWatcher(path, lambda: calls.append(None), clock, useInotify=False)
    watcher.startService()
    assert watcher.mode == "poll"
    clock.advance(POLL_INTERVAL)
    assert calls == []
    with open(path, "w") as f:
        f.write("two")
    clock.advance(POLL_INTERVAL)
    clock.advance(POLL_INTERVAL)
    assert len(calls) == 1
    with open(path, "w") as f:
        f.write("two")  # rewritten, same content
    clock.advance(POLL_INTERVAL)
    os.remove(path)
    clock.advance(POLL_INTERVAL)
    assert len(calls) == 1
    watcher.stopService()
    assert not clock.getDelayedCalls()


def test_dataSymlinkSwap(tmp_path: os.PathLike[str]) -> None:
    root = str(tmp_path)
    for version, text in (("..v1", "one"), ("..v2", "two")):
        os.mkdir(os.path.join(root, version))
        with open(os.path.join(root, version, "routes.ini"), "w") as f:
            f.write(text)
    os.symlink("..v1", os.path.join(root, "..data"))
    path = os.path.join(root, "routes.ini")
    os.symlink("..data/routes.ini", path)
    calls: list[None] = []
    clock = Clock()
    watcher = ConfigWatcher(path, lambda: calls.append(None), clock, useInotify=False)
    watcher.startService()
    before = fingerprint(path)
    os.symlink("..v2", os.path.join(root, "..tmp"))
    os.rename(os.path.join(root, "..tmp"), os.path.join(root, "..data"))
    assert fingerprint(path) != before
    clock.advance(POLL_INTERVAL)
    assert len(calls) == 1
    watcher.stopService()


def test_eventsSettleIntoOneLook(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "routes.ini")
    with open(path, "w") as f:
        f.write("one")
    calls: list[None] = []
    clock = Clock()
    watcher = ConfigWatcher(path, lambda: calls.append(None), clock, useInotify=False)
    with open(path, "w") as f:
        f.write("two")
    for _ in range(5):  # what inotify hands over for one editor save
        watcher._event(None, None, 0)  # type: ignore[arg-type]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(SETTLE)
    assert len(calls) == 1
