"""
Tests for the routing and rewrite keys of routes.ini: one test per mistake,
asserting the whole message; and the worked examples in deploy/examples,
loaded so that they cannot rot.
"""

from __future__ import annotations

import os

import pytest

from ldaproute.wire import ber
from ldaproute.config import Config, ConfigError, SuffixRewrite
from ldaproute.core.dn import parseDN
from ldaproute.core.rewrite import Rewriter
from ldaproute.core.routing import Router

HEAD = "[ldaproute]\nlisten = tcp:1389\n[backend:a]\nurl = ldap://h:1\n[pool:p]\nbackends = a\n"
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "examples")


def load(route: str) -> Config:
    return Config.fromString(HEAD + "[route:r]\n" + route)


def test_rewriteKeys() -> None:
    route = load(
        "pool = p\n"
        "rewrite_suffix = dc=corp,dc=example,dc=com => dc=ad,dc=example,dc=local\n"
        "map_attributes = mail => userPrincipalName, uid => sAMAccountName\n"
        "hide_attributes = userPassword, unicodePwd\n"
        "dn_attributes = sponsor\n"
    ).routes[0]
    assert route.rewriteSuffix == SuffixRewrite(parseDN("dc=corp,dc=example,dc=com"), parseDN("dc=ad,dc=example,dc=local"))
    assert route.mapAttributes == (("mail", "userPrincipalName"), ("uid", "sAMAccountName"))
    assert route.hideAttributes == ("userPassword", "unicodePwd")
    assert route.dnAttributes == ("sponsor",)
    assert route.rewrites
    assert not load("pool = p\ndn_attributes = sponsor\n").routes[0].rewrites


@pytest.mark.parametrize(
    "route, message",
    [
        ("pool = p\nrewrite_suffix = dc=a\n", "routes.ini [route:r] rewrite_suffix: expected CLIENT-SUFFIX => BACKEND-SUFFIX, not 'dc=a'"),
        ("pool = p\nrewrite_suffix = dc=a =>\n", "routes.ini [route:r] rewrite_suffix: expected CLIENT-SUFFIX => BACKEND-SUFFIX, not 'dc=a =>'"),
        ("pool = p\nrewrite_suffix = dc=a => nonsense\n", "routes.ini [route:r] rewrite_suffix: bad DN 'nonsense': 'nonsense' is not attribute=value"),
        ("pool = p\nmap_attributes = mail\n", "routes.ini [route:r] map_attributes: expected client-name => backend-name, not 'mail'"),
        ("pool = p\nmap_attributes = ma il => x\n", "routes.ini [route:r] map_attributes: bad attribute name 'ma il'"),
        ("pool = p\nmap_attributes = mail => a, MAIL => b\n", "routes.ini [route:r] map_attributes: an attribute is mapped twice"),
        ("pool = p\nmap_attributes = mail => a, uid => A\n", "routes.ini [route:r] map_attributes: two attributes map to the same backend attribute"),
        ("pool = p\nhide_attributes = ,\n", "routes.ini [route:r] hide_attributes: expected a comma list of attribute names"),
        ("pool = p\nhide_attributes = user_password\n", "routes.ini [route:r] hide_attributes: bad attribute name 'user_password'"),
        ("pool = p\ndn_attributes = 9x\n", "routes.ini [route:r] dn_attributes: bad attribute name '9x'"),
        ("reject = 53 no\nhide_attributes = userPassword\n", "routes.ini [route:r] hide_attributes: a reject route reaches no backend, so it has nothing to rewrite"),
        ("pool = p\nrewrite_suffixes = dc=a => dc=b\n", "routes.ini [route:r] rewrite_suffixes: unknown key (this section takes: bind_dn, client_network, dn_attributes, hide_attributes, listener, map_attributes, operation_timeout, operations, pool, reject, retry_budget, rewrite_suffix, suffix)"),
    ],
)
def test_mistakes(route: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(route)
    assert str(caught.value) == message


def route(name: str, listener: str, tag: int, target: bytes | None, bound: str | None = None, peer: str | None = None) -> str | None:
    router = Router(Config.fromFile(os.path.join(EXAMPLES, name)).routes)
    found = router.routeFor(listener, tag, target, parseDN(bound) if bound else None, peer)
    return found.name if found is not None else None


def test_exampleSplitNamespace() -> None:
    name = "split-namespace.ini"
    assert route(name, "default", ber.SEARCH_REQUEST, b"uid=a,dc=corp,dc=example,dc=com") == "corp"
    assert route(name, "default", ber.MODIFY_REQUEST, b"uid=a,ou=partners,dc=example,dc=com") == "partners-readonly"
    assert route(name, "default", ber.SEARCH_REQUEST, b"uid=a,ou=partners,dc=example,dc=com") == "partners"
    assert route(name, "default", ber.SEARCH_REQUEST, b"ou=people,dc=example,dc=com") == "main"
    assert route(name, "gc", ber.SEARCH_REQUEST, b"uid=a,dc=corp,dc=example,dc=com") == "gc"
    assert route(name, "gc", ber.ADD_REQUEST, b"uid=a,dc=corp,dc=example,dc=com") == "gc-rest"
    router = Router(Config.fromFile(os.path.join(EXAMPLES, name)).routes)
    assert router.namingContexts("default", None, None) == [
        "ou=partners,dc=example,dc=com",
        "dc=corp,dc=example,dc=com",
        "dc=example,dc=com",
    ]


def test_exampleReadWriteSplit() -> None:
    name = "read-write-split.ini"
    assert route(name, "default", ber.MODIFY_REQUEST, b"uid=a,dc=example,dc=com") == "writes"
    assert route(name, "default", ber.BIND_REQUEST, b"uid=a,dc=example,dc=com") == "writes"
    assert route(name, "default", ber.SEARCH_REQUEST, b"dc=example,dc=com") == "reads"
    assert route(name, "default", ber.SEARCH_REQUEST, b"dc=example,dc=com", "uid=x,ou=admins,dc=example,dc=com", "10.1.1.1") == "admin-reads"
    assert route(name, "default", ber.SEARCH_REQUEST, b"dc=example,dc=com", "uid=x,ou=admins,dc=example,dc=com", "192.0.2.1") == "reads"


def test_exampleSuffixRename() -> None:
    config = Config.fromFile(os.path.join(EXAMPLES, "suffix-rename.ini"))
    rewriter = Rewriter(config.routes[0])
    assert rewriter.dnToBackend(b"uid=a,ou=People,DC=corp,dc=example,dc=com") == b"uid=a,ou=People,dc=ad,dc=example,dc=local"
    assert rewriter.attributeToClient(b"sAMAccountName") == b"uid"
    assert rewriter.isHidden(b"unicodePwd") and rewriter.isDNValued(b"managedObjects")
