"""
What waits is still what the client sent (issue #14, item 6), against a
real slapd with its stats log: C{ldapsearch -e '!abandon'} (the search,
then at once an Abandon for it) leaves an ABANDON line in slapd's log
through the proxy as it does directly, and a search abandoned while its
upstream connection opens reaches slapd before its Abandon, with no
response of it reaching the client and no answer duplicated.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

from tests.integration.conftest import SlapdFactory
from tests.integration.rawldap import RawClient
from tests.integration.restartable import AccessLog
from tests import pdus
from ldaproute.wire import ber

PEOPLE = "ou=people,dc=example,dc=com"


def startProxy(proxyFactory: Any, url: str) -> Any:
    return proxyFactory(f"[backend:b1]\nurl = {url}\n[pool:p]\nbackends = b1\nhealth_check = no\n[route:all]\npool = p\n")


def abandonSearch(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ldapsearch", "-x", "-H", url, "-b", PEOPLE, "-e", "!abandon", "(uid=user1)", "dn"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip


def test_ldapsearchAbandonReachesSlapd(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    """Directly and through the proxy, slapd logs the Abandon ldapsearch sends after its search."""
    server = slapdFactory(entries=50, accessLog=True)
    log = AccessLog(server)
    proxy = startProxy(proxyFactory, server.url)
    env = server.clientEnv()
    counts = {}
    for name, url in (("direct", server.url), ("proxy", proxy.url)):
        mark = log.mark()
        abandonSearch(url, env)  # ldapsearch itself exits non-zero after abandoning
        # the proxy passes the rest on after ldapsearch has gone: wait for it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (log.count("ABANDON", since=mark) and log.count("UNBIND", since=mark)):
            time.sleep(0.02)
        # in the order slapd read them (op=N), not the order its threads logged them
        ops = sorted(log.operations(since=mark), key=lambda op: (op.conn, op.op))
        kinds = [op.kind for op in ops if op.kind != "BIND"]
        counts[name] = kinds
        searches = [op for op in ops if op.kind == "SRCH"]
        abandons = [op for op in ops if op.kind == "ABANDON"]
        assert len(searches) == 1 and len(abandons) == 1, (name, kinds)
        (search,), (abandon,) = searches, abandons
        assert abandon.conn == search.conn and abandon.op > search.op
    assert counts["direct"] == counts["proxy"] == ["SRCH", "ABANDON", "UNBIND"]


def test_abandonWhileConnectingFollowsItsSearch(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    """
    The first requests of a session, a search of every entry and at once
    an Abandon for it, wait together for the upstream connection: slapd
    receives the search and then the Abandon on one connection, the client
    gets nothing for the search, and the session's next search gets
    exactly one answer.  Repeated, as slapd races the Abandon with the
    search it has started.
    """
    server = slapdFactory(entries=500, accessLog=True)
    log = AccessLog(server)
    proxy = startProxy(proxyFactory, server.url)
    rounds, late = 20, 0
    mark = log.mark()
    for n in range(rounds):
        client = RawClient(proxy.port, timeout=10)
        client.send(pdus.search(PEOPLE, messageID=2) + ber.abandonRequest(3, 2))
        client.send(_uidSearch(4, "user7"))
        messages = []
        while True:
            message = client.receive()
            assert message is not None, "the proxy closed the connection"
            messages.append(message)
            if message.id == 4 and type(message.value).__name__ == "LDAPSearchResultDone":
                break
        assert [m.id for m in messages if m.id == 2] == [], f"round {n}: responses to the abandoned search"
        finals = [m for m in messages if m.id == 4 and type(m.value).__name__ == "LDAPSearchResultDone"]
        assert len(finals) == 1 and finals[0].value.resultCode == 0
        assert [m.id for m in messages].count(4) == 2  # one entry, one done
        client.close()
    ops = log.operations(since=mark)
    byConn: dict[int, list[Any]] = {}
    for op in ops:
        byConn.setdefault(op.conn, []).append(op)
    sessions = [conn for conn in byConn.values() if any(op.kind == "SRCH" for op in conn)]
    assert len(sessions) == rounds
    for conn in sessions:
        conn.sort(key=lambda op: op.op)  # the order slapd read them
        kinds = [op.kind for op in conn if op.kind in ("SRCH", "ABANDON")]
        assert kinds == ["SRCH", "ABANDON", "SRCH"], kinds
        abandon = next(op for op in conn if op.kind == "ABANDON")
        assert re.fullmatch(r"msg=2", abandon.detail.strip()), abandon.detail
        late += sum(1 for op in conn if op.kind == "SRCH" and op.op == 0 and op.answered)
    print(f"ABANDON FIGURES: {rounds} rounds; slapd finished the abandoned search anyway in {late}; "
          "the client saw none of it")


def _uidSearch(messageID: int, uid: str) -> bytes:
    from tests.integration.rawclient import searchRequest

    return searchRequest(messageID, PEOPLE, "uid", uid)
