"""
Soak: many concurrent clients mixing every operation kind against two real
slapd instances in one pool, while a chaos loop SIGKILLs and restarts the
backends.  At the end: every operation got exactly one final result (counted
per client), the proxy's RSS came back within a small margin of its value
after warm-up, no file descriptor leaked, and nothing unhandled was logged.

Bounded by C{LDAPROUTE_SOAK_SECONDS} (default 20; run longer on demand:
C{LDAPROUTE_SOAK_SECONDS=600 pytest tests/integration/test_soak.py -s}).
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Iterator

import pytest
from ldaptor import delta
from ldaptor.protocols import pureldap

from tests import pdus
from tests.integration.proxy import ProxyProcess
from tests.integration.rawldap import RawClient, fdCount, rssKiB
from tests.slapd import Slapd

SECONDS = float(os.environ.get("LDAPROUTE_SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("LDAPROUTE_SOAK_CLIENTS", "12"))
RSS_MARGIN_KIB = 8 * 1024
PEOPLE = "ou=people,dc=example,dc=com"
WHOAMI = "1.3.6.1.4.1.4203.1.11.3"


@pytest.fixture
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Slapd]]:
    made = [Slapd(str(tmp_path_factory.mktemp("soak")), entries=200) for _ in range(2)]
    for instance in made:
        instance.start()
    try:
        yield made
    finally:
        for instance in made:
            instance.stop()


class SoakClient(threading.Thread):
    """One client: operations of every kind, counting what it sent and what was answered."""

    def __init__(self, number: int, port: int, backend: Slapd, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.port = port
        self.backend = backend
        self.stopEvent = stop
        self.sent = 0
        self.finals = 0
        self.byCode: dict[int, int] = {}
        self.lost: list[str] = []
        self.connections = 0
        self.random = random.Random(number)

    def _operations(self, messageID: int, pipelined: bool = False) -> list[tuple[bytes, bool]]:
        """
        (PDU, expects a final response) for one round.  No bind when
        pipelined: RFC 4511 4.2.1 has the server abandon what is
        outstanding when a bind arrives (slapd does, without answers).
        """
        n = self.number
        mine = f"cn=soak{n},dc=example,dc=com"
        user = self.random.randrange(200)
        ava = pureldap.LDAPAttributeValueAssertion(
            pureldap.LDAPAttributeDescription("uid"), pureldap.LDAPAssertionValue(f"user{user}")
        )
        choices = [
            (pdus.search(PEOPLE, messageID, scope=1, sizeLimit=20), True),
            (pdus.search(self.backend.userDN(user), messageID, scope=0), True),
            (pdus.message(pureldap.LDAPCompareRequest(entry=self.backend.userDN(user), ava=ava), messageID), True),
            (pdus.add(mine, [("objectClass", ["person"]), ("cn", [f"soak{n}"]), ("sn", ["x"])], messageID), True),
            (pdus.message(pureldap.LDAPDelRequest(entry=mine), messageID), True),
            (
                pdus.message(
                    pureldap.LDAPModifyRequest(
                        object=self.backend.userDN(user),
                        modification=[delta.Replace("description", [f"soak {messageID}"]).asLDAP()],
                    ),
                    messageID,
                ),
                True,
            ),
            (
                pdus.message(
                    pureldap.LDAPModifyDNRequest(entry=mine, newrdn=f"cn=soak{n}", deleteoldrdn=True), messageID
                ),
                True,
            ),
            (pdus.message(pureldap.LDAPExtendedRequest(requestName=WHOAMI), messageID), True),
            (pdus.bind(self.backend.userDN(user), Slapd.userPassword(user), messageID), True),
            (pdus.bind(self.backend.rootDN, self.backend.rootPW, messageID), True),
        ]
        if pipelined:
            choices = choices[:-2]
        return [self.random.choice(choices)]

    def run(self) -> None:
        while not self.stopEvent.is_set():
            try:
                self._session()
            except Exception as e:  # noqa: BLE001 - recorded, the test fails on it
                self.lost.append(f"{type(e).__name__}: {e}")
                return

    def _session(self) -> None:
        client = RawClient(self.port, timeout=30)
        self.connections += 1
        self._abandoned: dict[int, int] = {}  # abandoned messageID -> finals seen (at most one)
        messageID = 1
        client.send(pdus.bind(self.backend.rootDN, self.backend.rootPW, messageID))
        self.sent += 1
        self._await(client, messageID)
        rounds = self.random.randrange(5, 40)
        for _ in range(rounds):
            if self.stopEvent.is_set():
                break
            messageID += 1
            kind = self.random.random()
            if kind < 0.1:
                # a search, abandoned at once: at most one final, none required
                client.send(pdus.search(PEOPLE, messageID, scope=1))
                messageID += 1
                client.send(pdus.message(pureldap.LDAPAbandonRequest(id=messageID - 1), messageID))
                messageID += 1
                client.send(pdus.search(PEOPLE, messageID, scope=0))
                self.sent += 1
                self._abandoned[messageID - 2] = 0
                self._await(client, messageID)
                continue
            if kind < 0.3:
                # pipelined
                first = messageID
                batch = []
                for _ in range(3):
                    pdu, _ = self._operations(messageID, pipelined=True)[0]
                    batch.append(pdu)
                    messageID += 1
                messageID -= 1
                client.send(b"".join(batch))
                self.sent += 3
                self._await(client, *range(first, messageID + 1))
                continue
            pdu, _ = self._operations(messageID)[0]
            client.send(pdu)
            self.sent += 1
            self._await(client, messageID)
        if self.random.random() < 0.5:
            client.send(pdus.message(pureldap.LDAPUnbindRequest(), messageID + 1))
            client.expectClose()
        client.close()

    def _await(self, client: RawClient, *messageIDs: int) -> None:
        waiting = set(messageIDs)
        seen: set[int] = set()
        while waiting:
            message = client.receive()
            if message is None:
                self.lost.append(f"connection closed with {sorted(waiting)} unanswered")
                raise ConnectionError("closed")
            value = message.value
            if isinstance(value, (pureldap.LDAPSearchResultEntry, pureldap.LDAPSearchResultReference)):
                continue
            if message.id in self._abandoned:
                self._abandoned[message.id] += 1
                if self._abandoned[message.id] > 1:
                    self.lost.append(f"second final for abandoned {message.id}")
                continue
            if message.id in seen or message.id not in waiting:
                self.lost.append(f"unexpected or second final for {message.id}: {value!r:.200}")
                continue
            seen.add(message.id)
            waiting.discard(message.id)
            self.finals += 1
            code = getattr(value, "resultCode", -1)
            self.byCode[code] = self.byCode.get(code, 0) + 1


def test_soak(backends: list[Slapd], tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b = backends
    config = (
        "[ldaproute]\nlisten = tcp:{port}:interface=127.0.0.1\n"
        f"[backend:a]\nurl = {a.url}\n[backend:b]\nurl = {b.url}\n"
        "[pool:main]\nbackends = a, b\nconnect_timeout = 2s\n"
        "[route:all]\npool = main\n"
    )
    proxy = ProxyProcess(str(tmp_path_factory.mktemp("proxy")), config).start()
    assert proxy.process is not None
    pid = proxy.process.pid
    stop = threading.Event()
    try:
        fdsStart = fdCount(pid)
        # warm-up: imports and first allocations, before the start figures
        warm = SoakClient(999, proxy.port, a, stop)
        warm.random = random.Random(0)
        for _ in range(3):
            warm._session()
        rssStart = rssKiB(pid)

        clients = [SoakClient(i, proxy.port, a, stop) for i in range(CLIENTS)]
        for client in clients:
            client.start()
        kills = 0
        rssPeak = rssStart
        chaos = random.Random(42)
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            time.sleep(chaos.uniform(0.5, 2.0))
            victim = chaos.choice(backends)
            victim.kill()
            kills += 1
            time.sleep(chaos.uniform(0.1, 1.0))
            victim.start()
            rssPeak = max(rssPeak, rssKiB(pid))
        stop.set()
        for client in clients:
            client.join(120)
            assert not client.is_alive(), f"client {client.number} hangs"

        # every descriptor of the clients' sessions goes away
        deadline = time.monotonic() + 15
        while fdCount(pid) > fdsStart and time.monotonic() < deadline:
            time.sleep(0.1)
        fdsEnd = fdCount(pid)
        rssEnd = rssKiB(pid)
        sent = sum(c.sent for c in clients)
        finals = sum(c.finals for c in clients)
        codes: dict[int, int] = {}
        for c in clients:
            for code, n in c.byCode.items():
                codes[code] = codes.get(code, 0) + n
        print(
            f"\nsoak {SECONDS:.0f}s: {len(clients)} clients, {sum(c.connections for c in clients)} connections, "
            f"{kills} backend kills; operations sent {sent}, final results {finals}; "
            f"result codes {dict(sorted(codes.items()))}; RSS start {rssStart} KiB, peak {rssPeak} KiB, "
            f"end {rssEnd} KiB; fds start {fdsStart}, end {fdsEnd}"
        )
        for c in clients:
            assert c.lost == [], f"client {c.number}: {c.lost[:5]}"
            assert c.sent == c.finals, f"client {c.number} sent {c.sent} operations, got {c.finals} final results"
        assert sent > 0 and kills > 0
        assert fdsEnd <= fdsStart, f"descriptors: {fdsStart} at start, {fdsEnd} at the end"
        assert rssEnd - rssStart < RSS_MARGIN_KIB, f"RSS {rssStart} KiB at start, {rssEnd} KiB at the end"
    finally:
        stop.set()
        proxy.stop()
    log = proxy.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-5000:]
