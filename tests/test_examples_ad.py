"""deploy/examples/active-directory.ini loads and routes as documented."""

from __future__ import annotations

import os

from ldaproute.wire import ber
from ldaproute.config import Config
from ldaproute.core.routing import Router

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "examples",
                       "active-directory.ini")


def test_exampleLoads() -> None:
    config = Config.fromFile(EXAMPLE)
    assert config.cldapEndpoints == ("udp:389",)
    assert {listener.name for listener in config.listeners} == {"default", "gc"}
    assert [b.name for b in config.pools["ad"].backends] == ["dc1", "dc2"]
    assert [b.name for b in config.pools["ad-gc"].backends] == ["dc1-gc", "dc2-gc"]
    router = Router(config.routes)
    assert router.routeFor("gc", ber.SEARCH_REQUEST, b"", None, "10.1.2.3").pool == "ad-gc"
    assert router.routeFor("default", ber.SEARCH_REQUEST, b"DC=corp,DC=example,DC=com", None, "10.1.2.3").pool == "ad"
    assert router.routeFor("cldap", ber.SEARCH_REQUEST, b"", None, "10.1.2.3").pool == "ad"
