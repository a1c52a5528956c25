"""
The restartable slapd fixture itself (tests.integration.restartable): a
crash is a SIGKILL, the instance comes back on the same port with the same
data in about half a second, and the access log counts what slapd received
in each generation, including what was in flight when it was killed.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from tests.integration.restartable import RestartableSlapd, parseAccessLog
from tests.integration.rawclient import RawClient
from tests.integration.test_backend_isolation import addRequest

PEOPLE = "ou=people,dc=example,dc=com"


def ldapsearch(server: RestartableSlapd, uid: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", server.url, "-b", PEOPLE, f"(uid={uid})", "dn"],
        capture_output=True, text=True, env=server.slapd.clientEnv(), timeout=30,
    )  # fmt: skip


def test_crashAndRestart(restartableSlapd: RestartableSlapd, record_property: Any) -> None:
    """
    A connection open across the crash sees it dropped without a goodbye;
    the instance answers again on the same URL with the same data, and the
    log tells the two generations apart.
    """
    server = restartableSlapd
    firstPID = server.slapd.pid
    client = RawClient("127.0.0.1", server.slapd.port)
    assert client.search(PEOPLE, "user1")[0] == 0
    mark = server.log.mark()
    assert client.search(PEOPLE, "user2")[0] == 0
    outage = server.crash()
    assert server.slapd.pid not in (None, firstPID)
    assert client.sock.recv(100) == b""  # dropped, no Notice of Disconnection
    result = ldapsearch(server, "user42")
    assert result.returncode == 0 and "dn: uid=user42,ou=people,dc=example,dc=com" in result.stdout, result.stderr
    assert outage.duration is not None and outage.duration < 5.0
    record_property("restart", f"SIGKILL to answering again: {outage.duration * 1000:.0f} ms")
    print(f"RESTART FIGURES: SIGKILL to answering again: {outage.duration * 1000:.0f} ms")
    searches = server.log.operations(kind="SRCH")
    generations = {operation.generation for operation in searches}
    assert len(generations) == 2
    assert server.log.count("SRCH", since=mark) == 2  # user2 before the crash, user42 after
    assert server.log.count("SRCH", since=mark, where=lambda op: "uid=user42" in op.detail) == 1
    assert [op.entries for op in server.log.operations(since=mark, kind="SRCH")] == [1, 1]
    assert server.log.unanswered() == []


def test_crashDowntime(restartableSlapd: RestartableSlapd) -> None:
    """C{downFor} keeps the port closed that long: connections are refused meanwhile."""
    server = restartableSlapd
    refused: list[bool] = []
    thread = server.crashInBackground(downFor=0.5)
    time.sleep(0.2)
    try:
        socket.create_connection(("127.0.0.1", server.slapd.port), timeout=1).close()
        refused.append(False)
    except ConnectionRefusedError:
        refused.append(True)
    thread.join(30)
    assert refused == [True]
    (outage,) = server.outages
    assert outage.duration is not None and outage.duration >= 0.5
    assert ldapsearch(server, "user3").returncode == 0


def test_inFlightAtTheKill(restartableSlapdFactory: Callable[..., RestartableSlapd]) -> None:
    """
    A write sent to a slapd that is killed before reading it is not in its
    log: the count of writes slapd received is what a test compares with
    the 52s clients got, not what clients sent.  (A write slapd logged and
    never answered is in L{AccessLog.unanswered}; see L{test_parseAccessLog}.)
    """
    server = restartableSlapdFactory()
    client = RawClient("127.0.0.1", server.slapd.port, timeout=5)
    mark = server.log.mark()
    server.slapd.pause()
    client.sock.sendall(addRequest(1, f"cn=inflight,{PEOPLE}", 10))
    time.sleep(0.2)
    server.crash()  # SIGKILL works on a stopped process
    assert server.log.count("ADD", since=mark) == 0
    assert server.log.unanswered(since=mark) == []
    client.sock.close()


def test_parseAccessLog() -> None:
    lines = [
        "6b1 0x1 slapd starting",
        "6b1 0x2 conn=1000 fd=10 ACCEPT from IP=127.0.0.1:1 (IP=127.0.0.1:2)",
        '6b1 0x2 conn=1000 op=0 BIND dn="" method=128',
        "6b1 0x2 conn=1000 op=0 RESULT tag=97 err=0 qtime=0.1 etime=0.1 text=",
        '6b1 0x2 conn=1000 op=1 SRCH base="ou=people,dc=example,dc=com" scope=2 deref=0 filter="(uid=user1)"',
        "6b1 0x2 conn=1000 op=1 SRCH attr=dn",
        "6b1 0x2 conn=1000 op=1 SEARCH RESULT tag=101 err=0 qtime=0.1 etime=0.1 nentries=1 text=",
        "6b1 0x2 conn=1000 op=2 ABANDON msg=2",
        '6b1 0x2 conn=1000 op=3 MOD dn="uid=user1,ou=people,dc=example,dc=com"',
        "6b1 0x2 conn=1000 op=3 MOD attr=description",
        "6b1 0x1 slapd starting",
        "6b1 0x2 conn=1000 op=1 EXT oid=1.3.6.1.4.1.4203.1.11.3",
        "6b1 0x2 conn=1000 op=1 WHOAMI",
        "6b1 0x2 conn=1000 op=1 RESULT oid= err=0 qtime=0.1 etime=0.1 text=",
    ]
    ops = parseAccessLog(lines)
    assert [(o.generation, o.conn, o.op, o.kind, o.result, o.entries) for o in ops] == [
        (1, 1000, 0, "BIND", 0, None),
        (1, 1000, 1, "SRCH", 0, 1),
        (1, 1000, 2, "ABANDON", None, None),
        (1, 1000, 3, "MOD", None, None),
        (2, 1000, 1, "EXT", 0, None),
    ]
    assert ops[2].detail == "msg=2"
    # the MOD was received and never answered (in flight at the kill); ABANDON gets no answer anyway
    assert [o.kind for o in ops if not o.answered] == ["ABANDON", "MOD"]
