"""
Tests for L{ldaproute.core.routing.Router}: every route condition, file order,
searches that span routes and the naming contexts of the root DSE.
"""

from __future__ import annotations

import pytest

from ldaproute.wire import ber
from ldaproute.config import Config
from ldaproute.core.dn import parseDN
from ldaproute.core.routing import Router, noRouteResult

HEAD = """
[ldaproute]
listen = tcp:1389
[listener:gc]
listen = tcp:3268
[backend:a]
url = ldap://127.0.0.1:1
[pool:p1]
backends = a
[pool:p2]
backends = a
[pool:p3]
backends = a
"""


def router(routes: str) -> Router:
    return Router(Config.fromString(HEAD + routes).routes)


def name(route: object) -> str | None:
    return getattr(route, "name", None)


def test_catchAllMatchesEverything() -> None:
    r = router("[route:all]\npool = p1\n")
    assert not r.needsTargetDN and not r.needsBoundDN
    for tag in (ber.SEARCH_REQUEST, ber.BIND_REQUEST, ber.ADD_REQUEST, ber.EXTENDED_REQUEST):
        assert name(r.routeFor("default", tag, None, None, None)) == "all"


def test_firstMatchInFileOrderWins() -> None:
    r = router("[route:first]\npool = p1\n[route:second]\npool = p2\n")
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, b"", None, None)) == "first"
    r = router("[route:wide]\nsuffix = dc=com\npool = p1\n[route:narrow]\nsuffix = dc=example,dc=com\npool = p2\n")
    # file order, not longest suffix: the operator orders routes
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, b"dc=example,dc=com", None, None)) == "wide"


def test_suffix() -> None:
    r = router("[route:corp]\nsuffix = dc=corp,dc=example,dc=com\npool = p1\n[route:rest]\npool = p2\n")
    assert r.needsTargetDN
    for dn in (b"dc=corp,dc=example,dc=com", b"uid=x,OU=People, DC=Corp,dc=EXAMPLE,dc=com", b"cn=a\\2cb,dc=corp,dc=example,dc=com"):
        assert name(r.routeFor("default", ber.SEARCH_REQUEST, dn, None, None)) == "corp"
    for dn in (b"dc=example,dc=com", b"dc=xcorp,dc=example,dc=com", b"", None, b"not a dn"):
        assert name(r.routeFor("default", ber.SEARCH_REQUEST, dn, None, None)) == "rest"


@pytest.mark.parametrize(
    "operations, tag, oid, matches",
    [
        ("read", ber.SEARCH_REQUEST, None, True),
        ("read", ber.COMPARE_REQUEST, None, True),
        ("read", ber.MODIFY_REQUEST, None, False),
        ("write", ber.ADD_REQUEST, None, True),
        ("write", ber.DEL_REQUEST, None, True),
        ("write", ber.MODIFY_REQUEST, None, True),
        ("write", ber.MODDN_REQUEST, None, True),
        ("write", ber.SEARCH_REQUEST, None, False),
        ("bind", ber.BIND_REQUEST, None, True),
        ("bind", ber.SEARCH_REQUEST, None, False),
        ("extended", ber.EXTENDED_REQUEST, b"1.2.3", True),
        ("extended:1.3.6.1.4.1.4203.1.11.1", ber.EXTENDED_REQUEST, b"1.3.6.1.4.1.4203.1.11.1", True),
        ("extended:1.3.6.1.4.1.4203.1.11.1", ber.EXTENDED_REQUEST, b"1.3.6.1.4.1.4203.1.11.3", False),
        ("search, add", ber.ADD_REQUEST, None, True),
        ("search, add", ber.DEL_REQUEST, None, False),
    ],
)
def test_operations(operations: str, tag: int, oid: bytes | None, matches: bool) -> None:
    r = router(f"[route:r]\noperations = {operations}\npool = p1\n[route:rest]\npool = p2\n")
    assert name(r.routeFor("default", tag, None, None, None, oid)) == ("r" if matches else "rest")


def test_bindDN() -> None:
    r = router("[route:admins]\nbind_dn = ou=admins,dc=example,dc=com\npool = p1\n[route:rest]\npool = p2\n")
    assert r.needsBoundDN
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, parseDN("uid=a,OU=Admins,dc=example,dc=com"), None)) == "admins"
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, parseDN("uid=a,ou=people,dc=example,dc=com"), None)) == "rest"
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, None, None)) == "rest"


def test_bindDNAnonymous() -> None:
    r = router("[route:anon]\nbind_dn = anonymous\npool = p1\n[route:rest]\npool = p2\n")
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, None, None)) == "anon"
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, parseDN("uid=a,dc=x"), None)) == "rest"


@pytest.mark.parametrize(
    "peer, matches",
    [("10.1.2.3", True), ("192.0.2.7", True), ("::ffff:10.0.0.1", True), ("192.0.3.1", False), ("2001:db8::1", False), (None, False), ("garbage", False)],
)
def test_clientNetwork(peer: str | None, matches: bool) -> None:
    r = router("[route:inside]\nclient_network = 10.0.0.0/8, 192.0.2.0/24\npool = p1\n[route:rest]\npool = p2\n")
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, None, peer)) == ("inside" if matches else "rest")


def test_listener() -> None:
    r = router("[route:gc]\nlistener = gc\npool = p1\n[route:rest]\npool = p2\n")
    assert name(r.routeFor("gc", ber.SEARCH_REQUEST, None, None, None)) == "gc"
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, None, None, None)) == "rest"


def test_poolAndReject() -> None:
    r = router("[route:ro]\nsuffix = ou=ro,dc=x\noperations = write\nreject = 53 read-only here\n[route:rest]\npool = p2\n")
    route = r.routeFor("default", ber.MODIFY_REQUEST, b"cn=a,ou=ro,dc=x", None, None)
    assert route is not None and route.pool is None
    assert (route.reject.resultCode, route.reject.message) == (53, "read-only here")  # type: ignore[union-attr]
    assert name(r.routeFor("default", ber.SEARCH_REQUEST, b"cn=a,ou=ro,dc=x", None, None)) == "rest"


def test_allConditionsMustHold() -> None:
    r = router(
        "[route:all]\nsuffix = dc=x\noperations = write\nbind_dn = dc=x\nclient_network = 10.0.0.0/8\n"
        "listener = gc\npool = p1\n"
    )
    args = ["gc", ber.ADD_REQUEST, b"cn=a,dc=x", parseDN("cn=admin,dc=x"), "10.0.0.1"]
    assert name(r.routeFor(*args)) == "all"  # type: ignore[arg-type]
    for i, other in enumerate(["default", ber.SEARCH_REQUEST, b"cn=a,dc=y", parseDN("cn=admin,dc=y"), "11.0.0.1"]):
        changed = list(args)
        changed[i] = other
        assert r.routeFor(*changed) is None  # type: ignore[arg-type]


def test_noRouteResult() -> None:
    assert noRouteResult(ber.BIND_REQUEST) == (49, "no route serves this bind DN")
    assert noRouteResult(ber.SEARCH_REQUEST) == (32, "no route serves this DN")
    assert noRouteResult(ber.EXTENDED_REQUEST)[0] == 53


# --- searches across routes ---------------------------------------------------

SPLIT = """
[route:corp]
suffix = dc=corp,dc=example,dc=com
pool = p1
[route:hidden]
suffix = ou=secret,dc=example,dc=com
reject = 32 no such object
[route:partners]
suffix = ou=partners,dc=example,dc=com
pool = p2
[route:partners-gc]
suffix = ou=partners,dc=example,dc=com
pool = p1
[route:example]
suffix = dc=example,dc=com
pool = p3
"""


def targets(r: Router, base: bytes, scope: int, **kw: object) -> list[tuple[str, bytes, int]] | None:
    found = r.routesForSearch(kw.get("listener", "default"), base, scope, kw.get("bound"), kw.get("peer"))  # type: ignore[arg-type]
    return None if found is None else [(t.route.name, t.base, t.scope) for t in found]


def test_searchBelowOneSuffixIsNotAFanOut() -> None:
    r = router(SPLIT)
    assert targets(r, b"ou=people,dc=corp,dc=example,dc=com", 2) is None
    assert targets(r, b"dc=example,dc=com", 0) is None  # base scope never spans


def test_subtreeFromAboveEverySuffix() -> None:
    r = router(SPLIT)
    expected = [
        ("corp", b"dc=corp,dc=example,dc=com", 2),
        ("partners", b"ou=partners,dc=example,dc=com", 2),
        ("example", b"dc=example,dc=com", 2),
    ]
    assert targets(r, b"dc=com", 2) == expected
    assert targets(r, b"", 2) == expected
    assert targets(r, b"dc=com", 3) == expected


def test_subtreeFromARoutedSuffixAboveOthers() -> None:
    r = router(SPLIT)
    assert targets(r, b"DC=Example,DC=Com", 2) == [
        ("example", b"DC=Example,DC=Com", 2),
        ("corp", b"dc=corp,dc=example,dc=com", 2),
        ("partners", b"ou=partners,dc=example,dc=com", 2),
    ]


def test_oneLevel() -> None:
    r = router(SPLIT)
    assert targets(r, b"dc=example,dc=com", 1) == [
        ("example", b"dc=example,dc=com", 1),
        ("corp", b"dc=corp,dc=example,dc=com", 0),
        ("partners", b"ou=partners,dc=example,dc=com", 0),
    ]
    assert targets(r, b"dc=com", 1) == [("example", b"dc=example,dc=com", 0)]
    assert targets(r, b"", 1) is None


def test_fanOutHonoursConditions() -> None:
    r = router(
        "[route:gc-corp]\nlistener = gc\nsuffix = dc=corp,dc=x\npool = p1\n"
        "[route:writes]\noperations = write\nsuffix = dc=w,dc=x\npool = p1\n"
        "[route:rest]\nsuffix = dc=x\npool = p2\n"
    )
    assert targets(r, b"", 2) == [("rest", b"dc=x", 2)]
    assert targets(r, b"", 2, listener="gc") == [("gc-corp", b"dc=corp,dc=x", 2), ("rest", b"dc=x", 2)]


def test_namingContexts() -> None:
    r = router(SPLIT + "[route:admin]\nsuffix = cn=admin\nbind_dn = cn=root\npool = p1\n")
    assert r.namingContexts("default", None, None) == [
        "dc=corp,dc=example,dc=com",
        "ou=partners,dc=example,dc=com",
        "dc=example,dc=com",
    ]
    assert r.namingContexts("default", parseDN("cn=root"), None)[-1] == "cn=admin"
