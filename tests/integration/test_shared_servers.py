"""
Shared mode in front of both directory servers it is documented for:
OpenLDAP slapd and 389 Directory Server (issue #15), each set up as
README.rst's shared-mode section says.  Every client must get through the
proxy what it gets directly with its own identity: anonymous root DSE and
searches (389 refuses the empty Proxied Authorization authzId with 12, so
anonymous operations go out on connections bound anonymously), Who Am I
(389 names the service account: the proxy answers from the identity it
verified), Password Modify without a user identity (389 would apply it to
the service account), and paged searches of several clients at once
through one shared connection.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from ldap3 import BASE, SUBTREE, Connection, Server

from tests.integration.ds389 import DS389, PEOPLE, SERVICE_DN, SERVICE_PW
from tests.slapd import Slapd

USERS_389 = 250
USERS_SLAPD = 250
FILTER = "(objectClass=inetOrgPerson)"
PAGED_OID = "1.2.840.113556.1.4.319"

SLAPD_GLOBAL = "authz-policy to\naccess to attrs=employeeNumber by self read by * none\n"


class Directory:
    """What the tests need of a server, the same for both."""

    def __init__(self, kind: str, server: Any, users: int, backendLines: str, serviceDN: str, servicePW: str) -> None:
        self.kind = kind
        self.server = server
        self.users = users
        self.backendLines = backendLines
        self.serviceDN = serviceDN
        self.servicePW = servicePW
        self.directServer = Server(server.url, get_info="NO_INFO")

    def userDN(self, i: int) -> str:
        return self.server.userDN(i)  # type: ignore[no-any-return]

    def userPassword(self, i: int) -> str:
        return self.server.userPassword(i)  # type: ignore[no-any-return]

    def proxyConfig(self, sharedConnections: int = 1) -> str:
        return (
            "mode = shared\nrequire_tls_for_passwords = off\n"
            f"[backend:dir]\n{self.backendLines}"
            "[pool:main]\nbackends = dir\nhealth_check = no\n"
            f"shared_connections = {sharedConnections}\nbind_connections = 1\noperation_timeout = 30s\n"
            f"service_bind_dn = {self.serviceDN}\nservice_bind_password = {self.servicePW}\n"
            "[route:all]\npool = main\n"
        )


@pytest.fixture(scope="module")
def slapdDirectory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    server = Slapd(str(tmp_path_factory.mktemp("slapd")), entries=USERS_SLAPD, extraGlobalConfig=SLAPD_GLOBAL)
    server.start()
    try:
        admin = Connection(Server(server.url, get_info="NO_INFO"), server.rootDN, server.rootPW, auto_bind=True, check_names=False)
        admin.modify(server.saslUserDN, {"authzTo": [("MODIFY_ADD", [f"dn.regex:^uid=[^,]+,{PEOPLE}$"])]})
        assert admin.result["result"] == 0, admin.result
        admin.unbind()
        yield Directory("slapd", server, USERS_SLAPD, f"url = {server.url}\n", server.saslUserDN, server.saslPassword)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ds389Directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    # not under pytest's tmp_path: its parent is private to root, and ns-slapd runs as dirsrv
    scratch = tempfile.mkdtemp(prefix="ldaproute-ds389-", dir="/tmp")
    server = DS389(scratch)
    try:
        server.start()
        server.populate(USERS_389)
        # 389 runs Password Modify only over TLS: the proxy reaches it with ldaps
        lines = f"url = {server.ldapsURL}\nca_file = {server.caFile}\nserver_name = localhost\n"
        yield Directory("389", server, USERS_389, lines, SERVICE_DN, SERVICE_PW)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(params=["slapd", "389"])
def directory(request: pytest.FixtureRequest) -> Directory:
    return request.getfixturevalue("slapdDirectory" if request.param == "slapd" else "ds389Directory")  # type: ignore[no-any-return]


def connect(url: str, dn: str | None = None, password: str | None = None) -> Connection:
    server = Server(url, get_info="NO_INFO")
    if dn is None:
        return Connection(server, auto_bind=True, receive_timeout=30)
    return Connection(server, dn, password, auto_bind=True, receive_timeout=30)


def results(c: Connection, base: str, scope: Any, attributes: list[str]) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    c.search(base, "(objectClass=*)" if scope == BASE else FILTER, scope, attributes=attributes)
    entries = sorted((e["dn"], dict(e["raw_attributes"])) for e in c.response if e["type"] == "searchResEntry")
    return c.result["result"], entries


def test_sameAnswersAsDirect(directory: Directory, proxyFactory: Any) -> None:
    proxy = proxyFactory(directory.proxyConfig())
    for who in (None, 3):
        dn = directory.userDN(who) if who is not None else None
        password = directory.userPassword(who) if who is not None else None
        through = connect(proxy.url, dn, password)
        direct = Connection(directory.directServer, dn, password, auto_bind=True) if dn else Connection(directory.directServer, auto_bind=True)
        for base, scope, attributes in (
            ("", BASE, ["namingContexts", "supportedControl"]),
            ("cn=schema" if directory.kind == "389" else "cn=Subschema", BASE, ["objectClass"]),
            (PEOPLE, SUBTREE, ["uid", "employeeNumber"]),
        ):
            assert results(through, base, scope, attributes) == results(direct, base, scope, attributes), (who, base)


def test_whoAmINamesTheClient(directory: Directory, proxyFactory: Any) -> None:
    proxy = proxyFactory(directory.proxyConfig())
    c = connect(proxy.url, directory.userDN(5), directory.userPassword(5))
    c.extended("1.3.6.1.4.1.4203.1.11.3")
    assert (c.result["result"], c.result.get("responseValue")) == (0, f"dn:{directory.userDN(5)}".encode())
    anonymous = connect(proxy.url)
    anonymous.extended("1.3.6.1.4.1.4203.1.11.3")
    assert anonymous.result["result"] == 0 and not anonymous.result.get("responseValue")


def test_passwordModifyWithoutUserIdentity(directory: Directory, proxyFactory: Any) -> None:
    proxy = proxyFactory(directory.proxyConfig())
    i = 7
    c = connect(proxy.url, directory.userDN(i), directory.userPassword(i))
    assert c.extend.standard.modify_password(old_password=directory.userPassword(i), new_password="changed7"), c.result
    assert c.result["result"] == 0, c.result
    # the client's own password changed, not the service account's
    assert Connection(directory.directServer, directory.userDN(i), "changed7").bind()
    assert Connection(directory.directServer, directory.serviceDN, directory.servicePW).bind()
    back = Connection(directory.directServer, directory.userDN(i), "changed7", auto_bind=True)
    assert back.extend.standard.modify_password(old_password="changed7", new_password=directory.userPassword(i)) or directory.kind == "389"
    if directory.kind == "389":  # 389 runs Password Modify only over TLS: restore through the proxy
        c2 = connect(proxy.url, directory.userDN(i), "changed7")
        assert c2.extend.standard.modify_password(old_password="changed7", new_password=directory.userPassword(i)), c2.result


def pageAll(connections: list[Connection]) -> list[list[str]]:
    cookies: list[Any] = [None] * len(connections)
    done = [False] * len(connections)
    got: list[list[str]] = [[] for _ in connections]
    while not all(done):
        for k, c in enumerate(connections):
            if done[k]:
                continue
            c.search(PEOPLE, FILTER, SUBTREE, attributes=["uid"], paged_size=50, paged_cookie=cookies[k])
            assert c.result["result"] == 0, (k, c.result)
            got[k].extend(e["dn"] for e in c.response if e["type"] == "searchResEntry")
            cookies[k] = c.result["controls"][PAGED_OID]["value"]["cookie"]
            done[k] = not cookies[k]
    return got


def test_concurrentPagedSearches(directory: Directory, proxyFactory: Any) -> None:
    proxy = proxyFactory(directory.proxyConfig(sharedConnections=1))
    who = [None if k % 2 == 0 else k for k in range(8)]

    def clients(url: str) -> list[Connection]:
        return [
            connect(url) if i is None else connect(url, directory.userDN(i), directory.userPassword(i)) for i in who
        ]

    direct = pageAll(clients(directory.server.url))
    assert any(direct), "no entries at all directly"
    assert pageAll(clients(proxy.url)) == direct
