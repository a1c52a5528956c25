"""
Stateful sequences through shared mode against a real slapd (issue #15):
2, 8 and 32 clients paging concurrently (page size 50 over 500 entries,
taking turns page by page) through C{shared_connections = 1} and C{= 4},
each getting exactly the entries it gets directly; and sorted and virtual
list view searches (slapd's sssvlv overlay) running among paged ones.

Without an exclusive connection per sequence the second client's second
page gets 53 "paged results cookie is invalid or old": slapd keeps one
paged-results state per connection.
"""

from __future__ import annotations

from typing import Any

import pytest
from ldap3 import BASE, SUBTREE, Connection, Server
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import namedtype, tag, univ

from tests.integration.conftest import SlapdFactory
from tests.slapd import Slapd

ENTRIES = 500
PAGE = 50
PEOPLE = "ou=people,dc=example,dc=com"
FILTER = "(objectClass=inetOrgPerson)"
PAGED_OID = "1.2.840.113556.1.4.319"
SORT_OID = "1.2.840.113556.1.4.473"
VLV_OID = "2.16.840.1.113730.3.4.9"
VLV_RESPONSE_OID = "2.16.840.1.113730.3.4.10"

#: the proxy's service account may assert the users' identities (docs: shared mode)
BACKEND_GLOBAL = "authz-policy to\nmoduleload sssvlv\n"


@pytest.fixture
def backend(slapdFactory: SlapdFactory) -> Slapd:
    server = slapdFactory(entries=ENTRIES, extraGlobalConfig=BACKEND_GLOBAL, extraConfig="overlay sssvlv\n")
    admin = Connection(Server(server.url, get_info="NO_INFO"), server.rootDN, server.rootPW, auto_bind=True, check_names=False)
    admin.modify(server.saslUserDN, {"authzTo": [("MODIFY_ADD", [f"dn.regex:^uid=[^,]+,{PEOPLE}$"])]})
    assert admin.result["result"] == 0, admin.result
    admin.unbind()
    return server


def sharedConfig(server: Slapd, connections: int) -> str:
    return (
        "mode = shared\n"
        f"[backend:slapd]\nurl = {server.url}\n"
        "[pool:main]\nbackends = slapd\nhealth_check = no\n"
        f"shared_connections = {connections}\nbind_connections = 1\noperation_timeout = 30s\n"
        f"service_bind_dn = {server.saslUserDN}\nservice_bind_password = {server.saslPassword}\n"
        "[route:all]\npool = main\n"
    )


def client(url: str, server: Slapd, i: int) -> Connection:
    """Odd clients bind as a user, even ones stay anonymous."""
    if i % 2:
        return Connection(Server(url), server.userDN(i), server.userPassword(i), auto_bind=True, receive_timeout=30)
    return Connection(Server(url), auto_bind=True, receive_timeout=30)


class Pager:
    """One client's paged search, one page per L{next}."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.cookie: bytes | None = None
        self.dns: list[str] = []
        self.done = False
        self.pages = 0

    def next(self) -> None:
        c = self.connection
        c.search(PEOPLE, FILTER, SUBTREE, attributes=["uid"], paged_size=PAGE, paged_cookie=self.cookie)
        assert c.result["result"] == 0, (self.pages, c.result)
        self.pages += 1
        self.dns.extend(entry["dn"] for entry in c.response if entry["type"] == "searchResEntry")
        self.cookie = c.result["controls"][PAGED_OID]["value"]["cookie"]
        self.done = not self.cookie


def pageInTurns(connections: list[Connection]) -> list[list[str]]:
    pagers = [Pager(c) for c in connections]
    while not all(p.done for p in pagers):
        for pager in pagers:
            if not pager.done:
                pager.next()
    return [p.dns for p in pagers]


@pytest.mark.parametrize("sharedConnections", [1, 4])
@pytest.mark.parametrize("clients", [2, 8, 32])
def test_concurrentPagedSearches(backend: Slapd, proxyFactory: Any, clients: int, sharedConnections: int) -> None:
    direct = pageInTurns([client(backend.url, backend, i) for i in range(clients)])
    assert all(len(dns) == ENTRIES for dns in direct)
    proxy = proxyFactory(sharedConfig(backend, sharedConnections))
    connections = [client(proxy.url, backend, i) for i in range(clients)]
    through = pageInTurns(connections)
    for i, (got, want) in enumerate(zip(through, direct)):
        assert got == want, f"client {i}: {len(got)} entries through the proxy, {len(want)} directly"
    # every sequence ended: a new round needs no more connections than the first
    assert pageInTurns(connections[:2]) == direct[:2]
    for c in connections:
        c.unbind()


class SortKey(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("attributeType", univ.OctetString()),
        namedtype.OptionalNamedType(
            "orderingRule", univ.OctetString().subtype(implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0))
        ),
    )


class SortKeys(univ.SequenceOf):
    componentType = SortKey()


def sortControl(attribute: str) -> tuple[str, bool, bytes]:
    keys = SortKeys()
    key = SortKey()
    key["attributeType"] = attribute
    key["orderingRule"] = "caseIgnoreOrderingMatch"  # cn has no ORDERING rule of its own (-E sss=cn:caseIgnoreOrderingMatch)
    keys.append(key)
    return (SORT_OID, True, encoder.encode(keys))


class ByOffset(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("offset", univ.Integer()), namedtype.NamedType("contentCount", univ.Integer())
    )
    tagSet = univ.Sequence.tagSet.tagImplicitly(tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0))


class VLVRequest(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("beforeCount", univ.Integer()),
        namedtype.NamedType("afterCount", univ.Integer()),
        namedtype.NamedType("byOffset", ByOffset()),
        namedtype.OptionalNamedType("contextID", univ.OctetString()),
    )


def vlvControl(offset: int, after: int, context: bytes | None = None) -> tuple[str, bool, bytes]:
    """A VLV request; C{context}: the contextID of the view's last response (slapd needs it)."""
    request = VLVRequest()
    request["beforeCount"] = 0
    request["afterCount"] = after
    target = request["byOffset"]
    target["offset"] = offset
    target["contentCount"] = 0
    if context is not None:
        request["contextID"] = context
    return (VLV_OID, True, encoder.encode(request))


def sortedSearch(c: Connection, *extra: tuple[str, bool, bytes]) -> list[str]:
    c.search(PEOPLE, FILTER, SUBTREE, attributes=["cn"], controls=[sortControl("cn"), *extra])
    assert c.result["result"] == 0, c.result
    return [entry["attributes"]["cn"][0] for entry in c.response if entry["type"] == "searchResEntry"]


def test_sortAndVLVAmongPagedSearches(backend: Slapd, proxyFactory: Any) -> None:
    proxy = proxyFactory(sharedConfig(backend, 1))
    directSorted = sortedSearch(client(backend.url, backend, 0))
    assert directSorted == sorted(directSorted, key=str.lower) and len(directSorted) == ENTRIES
    pagers = [Pager(client(proxy.url, backend, i)) for i in range(4)]
    sorter = client(proxy.url, backend, 5)
    viewer = client(proxy.url, backend, 7)
    views: list[list[str]] = []
    context = None
    while not all(p.done for p in pagers):
        for pager in pagers:
            if not pager.done:
                pager.next()
        # a sorted search and a virtual list view between the pages of the others
        assert sortedSearch(sorter) == directSorted
        offset = 1 + 10 * len(views)
        views.append(sortedSearch(viewer, vlvControl(offset, 9, context)))
        response, _ = decoder.decode(viewer.result["controls"][VLV_RESPONSE_OID]["value"])
        assert int(response[2]) == 0, response  # virtualListViewResult: success
        context = bytes(response[3]) if len(response) > 3 else None
        assert views[-1] == directSorted[offset - 1 : offset + 9], offset
    direct = Connection(Server(backend.url), auto_bind=True)
    direct.search(PEOPLE, FILTER, SUBTREE, attributes=["uid"])
    want = sorted(entry["dn"] for entry in direct.response if entry["type"] == "searchResEntry")
    assert all(sorted(p.dns) == want for p in pagers)
    # the root DSE stays readable on the connections the sequences hold
    sorter.search("", "(objectClass=*)", BASE, attributes=["supportedControl"])
    assert SORT_OID in sorter.response[0]["attributes"]["supportedControl"]
