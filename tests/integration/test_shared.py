"""
Shared mode against a real slapd and a real ldaproute process: many clients
with different identities over two shared connections (and two anonymous
ones) and one bind connection (counted in slapd's access log), each operation run under the
client's identity (ldapwhoami, an ACL-protected attribute), paged search,
abandon, and a backend killed mid-operation.

The backend is set up as docs/shared-mode.rst says: C{authz-policy to},
and an C{authzTo} rule on the proxy's service account (a plain entry, not
the rootdn) allowing it to assert any identity under ou=people.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

import pytest

from ldaproute.wire import ber
from tests.integration.conftest import SlapdFactory
from tests.integration.rawclient import searchRequest
from tests.slapd import Slapd

PEOPLE = "ou=people,dc=example,dc=com"
USERS = 60

#: employeeNumber readable only by its own entry: shows whose identity ran the search
BACKEND_GLOBAL = "authz-policy to\naccess to attrs=employeeNumber by self read by * none\n"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found: install ldap-utils")
    return path


def run(server: Slapd, *args: str, check: bool = True) -> str:
    result = subprocess.run(list(args), env=server.clientEnv(), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stdout}{result.stderr}")
    return result.stdout + result.stderr


@pytest.fixture
def backend(slapdFactory: SlapdFactory) -> Slapd:
    server = slapdFactory(entries=USERS, accessLog=True, extraGlobalConfig=BACKEND_GLOBAL)
    ldif = (
        f"dn: {server.saslUserDN}\nchangetype: modify\nadd: authzTo\n"
        f"authzTo: dn.regex:^uid=[^,]+,{PEOPLE}$\n"
    )
    subprocess.run(
        [tool("ldapmodify"), "-x", "-H", server.url, "-D", server.rootDN, "-w", server.rootPW],
        input=ldif, text=True, env=server.clientEnv(), check=True, capture_output=True, timeout=30,
    )
    return server


def sharedConfig(server: Slapd, extra: str = "") -> str:
    return (
        "mode = shared\n"
        f"[backend:slapd]\nurl = {server.url}\n"
        "[pool:main]\nbackends = slapd\nhealth_check = no\n"
        "shared_connections = 2\nbind_connections = 1\nmax_bind_connections = 1\n"
        f"service_bind_dn = {server.saslUserDN}\nservice_bind_password = {server.saslPassword}\n{extra}"
        "[route:all]\npool = main\n"
    )


def accepted(server: Slapd) -> int:
    return sum(1 for line in server.logLines() if " ACCEPT from " in line)


def test_identitiesOverFewConnections(backend: Slapd, proxyFactory: Any) -> None:
    before = accepted(backend)
    proxy = proxyFactory(sharedConfig(backend))
    failures: list[str] = []

    def client(i: int) -> None:
        try:
            dn = backend.userDN(i)
            out = run(backend, tool("ldapwhoami"), "-x", "-H", proxy.url, "-D", dn, "-w", backend.userPassword(i))
            if out.strip() != f"dn:{dn}":
                failures.append(f"whoami for user{i}: {out!r}")
            # own employeeNumber visible, a neighbour's not
            for j, visible in ((i, True), ((i + 1) % USERS, False)):
                out = run(
                    backend, tool("ldapsearch"), "-x", "-LLL", "-H", proxy.url, "-D", dn, "-w",
                    backend.userPassword(i), "-b", PEOPLE, f"(uid=user{j})", "employeeNumber",
                )
                if (f"employeeNumber: {j}" in out) != visible:
                    failures.append(f"user{i} reading user{j}'s employeeNumber: {out!r}")
        except AssertionError as e:
            failures.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    anonymous = run(backend, tool("ldapwhoami"), "-x", "-H", proxy.url)
    for thread in threads:
        thread.join(60)
    assert failures == [], proxy.log()[-3000:]
    assert anonymous.strip() == "anonymous"
    # anonymous readers get the anonymous rights, not the service account's
    out = run(backend, tool("ldapsearch"), "-x", "-LLL", "-H", proxy.url, "-b", PEOPLE, "(uid=user3)", "employeeNumber")
    assert "uid=user3" in out and "employeeNumber" not in out
    # 12 clients (36 client connections), yet slapd saw 2 shared, 2 anonymous and 1 bind connection
    assert accepted(backend) - before == 5, "\n".join(backend.logLines()[-40:])
    authz = [line for line in backend.logLines() if "PROXYAUTHZ" in line]
    assert any(backend.userDN(5) in line for line in authz), authz[:5]


def test_wrongPasswordRefused(backend: Slapd, proxyFactory: Any) -> None:
    proxy = proxyFactory(sharedConfig(backend))
    out = run(
        backend, tool("ldapwhoami"), "-x", "-H", proxy.url, "-D", backend.userDN(1), "-w", "wrong", check=False
    )
    assert "Invalid credentials (49)" in out


def test_pagedSearch(backend: Slapd, proxyFactory: Any) -> None:
    proxy = proxyFactory(sharedConfig(backend))
    # other clients' traffic in between the pages, on the other connection
    noise = [subprocess.Popen(
        [tool("ldapsearch"), "-x", "-H", proxy.url, "-b", PEOPLE, "(uid=user1)"],
        env=backend.clientEnv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) for _ in range(4)]
    out = run(
        backend, tool("ldapsearch"), "-x", "-LLL", "-H", proxy.url, "-D", backend.userDN(2), "-w",
        backend.userPassword(2), "-E", "pr=7/noprompt", "-b", PEOPLE, "(objectClass=inetOrgPerson)", "uid",
    )
    for process in noise:
        process.wait(30)
    assert len(re.findall(r"^dn: uid=user\d+,", out, re.M)) == USERS, out[-500:]


def readPDUs(sock: socket.socket, until: Any, timeout: float = 10.0) -> list[bytes]:
    framer = ber.Framer(1 << 24)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline and not until(got):
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        got.extend(framer.feed(data))
    return got


def test_abandon(backend: Slapd, proxyFactory: Any) -> None:
    proxy = proxyFactory(sharedConfig(backend))
    # open the shared connections first, so the search really goes upstream
    run(backend, tool("ldapsearch"), "-x", "-H", proxy.url, "-b", PEOPLE, "(uid=user1)")
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
        backend.pause()  # the search is outstanding upstream when abandoned
        try:
            sock.sendall(searchRequest(5, PEOPLE, "objectClass", "inetOrgPerson"))
            time.sleep(0.3)
            sock.sendall(ber.abandonRequest(6, 5))
            time.sleep(0.3)
        finally:
            backend.resume()
        sock.sendall(searchRequest(7, PEOPLE, "uid", "user4"))
        pdus = readPDUs(sock, lambda got: any(_id(p) == 7 and p[_tagAt(p)] == 0x65 for p in got))
    assert all(_id(p) == 7 for p in pdus), [(_id(p), hex(p[_tagAt(p)])) for p in pdus]
    assert [hex(p[_tagAt(p)]) for p in pdus] == ["0x64", "0x65"]
    # slapd saw the abandon of the upstream messageID it had been given
    lines = backend.logLines()
    search = [line for line in lines if 'SRCH base="ou=people' in line and "objectClass=inetOrgPerson" in line]
    abandon = [line for line in lines if "ABANDON msg=" in line]
    assert search and abandon, "\n".join(lines[-30:])


def _tagAt(pdu: bytes) -> int:
    pos = 2 if pdu[1] < 0x80 else 2 + (pdu[1] & 0x7F)
    return pos + 2 + pdu[pos + 1]


def _id(pdu: bytes) -> int:
    pos = 2 if pdu[1] < 0x80 else 2 + (pdu[1] & 0x7F)
    return int.from_bytes(pdu[pos + 2 : pos + 2 + pdu[pos + 1]], "big")


def test_backendKilledMidOperation(backend: Slapd, proxyFactory: Any) -> None:
    proxy = proxyFactory(sharedConfig(backend))
    # warm the shared connections
    run(backend, tool("ldapsearch"), "-x", "-H", proxy.url, "-b", PEOPLE, "(uid=user1)")
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
        backend.pause()
        sock.sendall(searchRequest(3, PEOPLE, "uid", "user2") + searchRequest(4, PEOPLE, "uid", "user3"))
        time.sleep(0.3)
        backend.kill()
        backend.start()
        # the searches had no answer yet: they go out again once slapd is back, answered in full
        pdus = readPDUs(sock, lambda got: sum(1 for p in got if p[_tagAt(p)] == 0x65) >= 2)
        done = [p for p in pdus if p[_tagAt(p)] == 0x65]
        assert sorted(_id(p) for p in done) == [3, 4]
        assert all(p[_tagAt(p) + 4] == 0 for p in done), (pdus, proxy.log()[-6000:])
        assert sorted(_id(p) for p in pdus if p[_tagAt(p)] == 0x64) == [3, 4]  # one entry each, once
        # the pool reconnects: the same client carries on
        deadline = time.monotonic() + 15
        while True:
            sock.sendall(searchRequest(10, PEOPLE, "uid", "user2"))
            got = readPDUs(sock, lambda got: any(p[_tagAt(p)] == 0x65 for p in got))
            done = [p for p in got if p[_tagAt(p)] == 0x65]
            if done and done[0][_tagAt(done[0]) + 4] == 0:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
