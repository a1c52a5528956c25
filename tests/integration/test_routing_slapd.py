# -*- test-case-name: tests.integration.test_routing_slapd -*-
"""
Routing and rewriting against three real slapd instances:

    primary   dc=example,dc=com   takes writes and binds
    replica   dc=example,dc=com   same data, takes reads (no replication, so a
                                  write is visible on the primary only)
    corp      dc=ad,dc=example,dc=local, presented to clients as
              dc=corp,dc=example,dc=com (suffix massage), employeeNumber
              shown as employeeID, userPassword hidden

The proxy runs as a subprocess (python -m twisted ldaproute -c FILE) and is
driven by ldap3 and the OpenLDAP command-line tools.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import ldap3
import pytest

from tests.slapd import Slapd, freePort

CORP = "dc=corp,dc=example,dc=com"
AD = "dc=ad,dc=example,dc=local"
EXAMPLE = "dc=example,dc=com"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRIES = 12


class Env:
    def __init__(self, primary: Slapd, replica: Slapd, corp: Slapd, port: int, proxy: subprocess.Popen[bytes]) -> None:
        self.primary = primary
        self.replica = replica
        self.corp = corp
        self.port = port
        self.proxy = proxy

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"


def configText(env: dict[str, Any]) -> str:
    return f"""
[ldaproute]
listen = tcp:{env['port']}:interface=127.0.0.1
require_tls_for_simple_bind = off

[backend:primary]
url = {env['primary'].url}
[backend:replica]
url = {env['replica'].url}
[backend:corp]
url = {env['corp'].url}

[pool:primary]
backends = primary
[pool:replica]
backends = replica
[pool:corp]
backends = corp

[route:corp-frozen]
suffix = ou=system,{CORP}
reject = 53 the corp system subtree is not served here

[route:corp]
suffix = {CORP}
pool = corp
rewrite_suffix = {CORP} => {AD}
map_attributes = employeeID => employeeNumber
hide_attributes = userPassword

[route:example-writes]
suffix = {EXAMPLE}
operations = write, bind, extended
pool = primary

[route:example-reads]
suffix = {EXAMPLE}
pool = replica
"""


def _waitForPort(port: int, proxy: subprocess.Popen[bytes], logFile: Any) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            logFile.seek(0)
            raise RuntimeError(f"the proxy exited: {logFile.read().decode(errors='replace')[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the proxy did not start listening within 20 s")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    started: list[Slapd] = []
    try:
        for name, suffix in (("primary", EXAMPLE), ("replica", EXAMPLE), ("corp", AD)):
            instance = Slapd(str(tmp_path_factory.mktemp(name)), suffix=suffix, entries=ENTRIES)
            instance.start()
            started.append(instance)
        primary, replica, corp = started
        port = freePort()
        path = tmp_path_factory.mktemp("proxy") / "routes.ini"
        path.write_text(configText({"port": port, "primary": primary, "replica": replica, "corp": corp}))
        logFile = open(path.with_name("proxy.log"), "w+b")  # not a pipe: a full pipe would stall the proxy
        proxy = subprocess.Popen(
            [sys.executable, "-m", "twisted", "ldaproute", "-c", str(path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=logFile,
            stderr=subprocess.STDOUT,
        )
        try:
            _waitForPort(port, proxy, logFile)
            yield Env(primary, replica, corp, port, proxy)
        finally:
            proxy.terminate()
            proxy.wait(10)
            logFile.close()
    finally:
        for instance in reversed(started):
            instance.stop()


def connect(url: str, user: str | None = None, password: str | None = None) -> ldap3.Connection:
    server = ldap3.Server(url.rstrip("/"), get_info=ldap3.NONE)
    return ldap3.Connection(server, user=user, password=password, auto_bind=True, raise_exceptions=False)


def search(conn: ldap3.Connection, base: str, scope: Any = ldap3.SUBTREE, filter: str = "(objectClass=*)", attributes: Any = None, **kw: Any) -> dict[str, dict[str, list[str]]]:
    ok = conn.search(base, filter, search_scope=scope, attributes=attributes or ["*"], **kw)
    assert conn.result["result"] in (0, 4), conn.result
    return {
        entry["dn"].lower(): {
            k.lower(): [str(v) for v in (vs if isinstance(vs, list) else [vs])]
            for k, vs in entry["attributes"].items()
            if vs != []
        }
        for entry in conn.response
        if entry["type"] == "searchResEntry"
    } if ok or conn.response else {}


def expectedDNs(instance: Slapd, base: str, scope: Any, clientSuffix: str | None = None) -> set[str]:
    """What the server itself has, with its suffix shown as the client sees it."""
    conn = connect(instance.url, instance.rootDN, "secret")
    conn.search(base, "(objectClass=*)", search_scope=scope, attributes=["1.1"])
    dns = {e["dn"].lower() for e in conn.response if e["type"] == "searchResEntry"}
    if clientSuffix:
        dns = {dn[: -len(instance.suffix)] + clientSuffix.lower() for dn in dns}
    return dns


# --- suffix massage and mapping ---------------------------------------------


def test_corpEntriesPresentedUnderTheClientSuffix(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    assert conn.bound, conn.result
    found = search(conn, f"ou=people,{CORP}", filter="(uid=user3)")
    assert list(found) == [f"uid=user3,ou=people,{CORP}"]
    attributes = found[f"uid=user3,ou=people,{CORP}"]
    assert attributes["employeeid"] == ["3"]
    assert "employeenumber" not in attributes
    assert "userpassword" not in attributes


def test_mappedAttributeInFilter(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    found = search(conn, CORP, filter="(employeeID=5)", attributes=["employeeID", "cn"])
    assert list(found) == [f"uid=user5,ou=people,{CORP}"]
    assert found[f"uid=user5,ou=people,{CORP}"]["employeeid"] == ["5"]


def test_hiddenAttributeRefusedInFilter(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    conn.search(CORP, "(userPassword=*)", attributes=["1.1"])
    assert conn.result["result"] == 53
    assert "hidden" in conn.result["message"]


def test_groupMembersRewrittenBothWays(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    group = f"cn=group1,ou=groups,{CORP}"
    found = search(conn, group, scope=ldap3.BASE)
    members = sorted(m.lower() for m in found[group]["member"])
    assert members == sorted(f"uid=user{i},ou=people,{CORP}" for i in range(1, ENTRIES, 4))
    # a filter on a DN value, in client terms
    byMember = search(conn, f"ou=groups,{CORP}", filter=f"(member=uid=user5,ou=people,{CORP})", attributes=["cn"])
    assert set(byMember) == {group}
    # a write with DN values, checked on the backend itself
    assert conn.modify(group, {"member": [(ldap3.MODIFY_ADD, [f"uid=user0,ou=people,{CORP}"])]}), conn.result
    direct = connect(env.corp.url, env.corp.rootDN, "secret")
    direct.search(f"cn=group1,ou=groups,{AD}", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["member"])
    assert f"uid=user0,ou=people,{AD}" in [m.lower() for m in direct.response[0]["attributes"]["member"]]


def test_addAndRenameUnderTheClientSuffix(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    dn = f"cn=new group,ou=groups,{CORP}"
    assert conn.add(dn, ["groupOfNames"], {"cn": "new group", "member": [f"uid=user2,ou=people,{CORP}"]}), conn.result
    assert conn.modify_dn(dn, "cn=renamed group", new_superior=f"ou=people,{CORP}"), conn.result
    direct = connect(env.corp.url, env.corp.rootDN, "secret")
    direct.search(f"cn=renamed group,ou=people,{AD}", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["member"])
    assert [m.lower() for m in direct.response[0]["attributes"]["member"]] == [f"uid=user2,ou=people,{AD}"]
    assert conn.delete(f"cn=renamed group,ou=people,{CORP}"), conn.result


def test_noSuchObjectMatchedDNRewritten(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    conn.search(f"uid=nobody,ou=people,{CORP}", "(objectClass=*)", search_scope=ldap3.BASE)
    assert conn.result["result"] == 32
    assert conn.result["dn"].lower() == f"ou=people,{CORP}"


def test_rejectRoute(env: Env) -> None:
    conn = connect(env.url)
    conn.search(f"ou=system,{CORP}", "(objectClass=*)")
    assert conn.result["result"] == 53
    assert conn.result["message"] == "the corp system subtree is not served here"


# --- read/write split ---------------------------------------------------------


def test_writesGoToThePrimaryReadsToTheReplica(env: Env) -> None:
    user = f"uid=user7,ou=people,{EXAMPLE}"
    conn = connect(env.url, user, "pass7")
    assert conn.bound, conn.result
    assert conn.modify(user, {"description": [(ldap3.MODIFY_REPLACE, ["changed through the proxy"])]}), conn.result

    def direct(instance: Slapd) -> str:
        c = connect(instance.url, instance.rootDN, "secret")
        c.search(user, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["description"])
        return str(c.response[0]["attributes"]["description"][0])

    assert direct(env.primary) == "changed through the proxy"
    assert direct(env.replica) == "initial description of user 7"
    found = search(conn, user, scope=ldap3.BASE, attributes=["description"])
    assert found[user.lower()]["description"] == ["initial description of user 7"]


# --- searches across routes ------------------------------------------------------


@pytest.mark.parametrize("base", ["", "dc=com", EXAMPLE])
@pytest.mark.parametrize("scope", [ldap3.SUBTREE, ldap3.LEVEL])
def test_searchAcrossRoutesMerged(env: Env, base: str, scope: Any) -> None:
    conn = connect(env.url)
    if base == "" and scope == ldap3.LEVEL:
        # no suffix is one level below the root DSE: nothing holds it
        conn.search(base, "(objectClass=*)", search_scope=scope, attributes=["1.1"])
        assert conn.result["result"] == 32
        return
    got = set(search(conn, base, scope=scope, attributes=["1.1"]))
    expected: set[str] = set()
    corpExpected = expectedDNs(env.corp, AD, ldap3.SUBTREE, CORP)
    replicaExpected = expectedDNs(env.replica, EXAMPLE, ldap3.SUBTREE)
    if scope == ldap3.SUBTREE:
        expected = corpExpected | replicaExpected
    elif base == EXAMPLE:
        expected = expectedDNs(env.replica, EXAMPLE, ldap3.LEVEL) | {CORP}
    else:
        expected = {EXAMPLE}  # the suffix entry one level below dc=com
    assert got == expected
    assert conn.result["result"] == 0


def test_searchAcrossRoutesEntryByEntry(env: Env) -> None:
    conn = connect(env.url)
    got = search(conn, "dc=com", filter="(uid=user4)", attributes=["uid", "mail", "employeeID", "employeeNumber"])
    assert got == {
        f"uid=user4,ou=people,{EXAMPLE}": {"uid": ["user4"], "mail": ["user4@example.com"], "employeenumber": ["4"]},
        f"uid=user4,ou=people,{CORP}": {"uid": ["user4"], "mail": ["user4@example.com"], "employeeid": ["4"]},
    }


def test_sizeLimitAcrossRoutes(env: Env) -> None:
    conn = connect(env.url)
    conn.search("dc=com", "(uid=*)", attributes=["1.1"], size_limit=15)
    assert conn.result["result"] == 4
    assert len([e for e in conn.response if e["type"] == "searchResEntry"]) == 15


def test_pagedResultsAcrossRoutesRefused(env: Env) -> None:
    conn = connect(env.url)
    conn.search("dc=com", "(uid=*)", attributes=["1.1"], paged_size=5)
    assert conn.result["result"] == 53
    assert "paged results cannot span routes" in conn.result["message"]


def test_pagedResultsBelowOneRouteWork(env: Env) -> None:
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    entries = conn.extend.standard.paged_search(f"ou=people,{CORP}", "(uid=*)", attributes=["uid"], paged_size=5, generator=False)
    assert len([e for e in entries if e["type"] == "searchResEntry"]) == ENTRIES


def test_rootDSENamingContexts(env: Env) -> None:
    out = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", env.url, "-b", "", "-s", "base", "namingContexts", "supportedLDAPVersion"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    contexts = [line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("namingContexts:")]
    assert contexts == [CORP, EXAMPLE]


def test_cliSubtreeSearchFromDcCom(env: Env) -> None:
    out = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", env.url, "-b", "dc=com", "(cn=group2)", "member"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    dns = sorted(line.split(": ", 1)[1].lower() for line in out.stdout.splitlines() if line.startswith("dn:"))
    assert dns == [f"cn=group2,ou=groups,{CORP}", f"cn=group2,ou=groups,{EXAMPLE}"]
    assert f"member: uid=user2,ou=people,{CORP}" in out.stdout
    assert AD not in out.stdout


def test_fanOutWhereTheIdentityExistsInOneDirectoryOnly(env: Env) -> None:
    """The corp administrator does not exist on the replica: the replayed
    bind fails there, and the merged search says so instead of hanging."""
    conn = connect(env.url, f"cn=admin,{CORP}", "secret")
    conn.search("dc=com", "(uid=user1)", attributes=["1.1"])
    assert conn.result["result"] == 1
    assert conn.result["message"].startswith("route example-reads: the backend refused to restore this session's bind")
    conn.search(CORP, "(uid=user1)", attributes=["1.1"])
    assert conn.result["result"] == 1  # the client must bind again
    conn.rebind(f"cn=admin,{CORP}", "secret")
    found = search(conn, CORP, filter="(uid=user1)", attributes=["1.1"])
    assert list(found) == [f"uid=user1,ou=people,{CORP}"]
