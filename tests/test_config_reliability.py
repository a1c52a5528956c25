"""routes.ini keys of the reliability limits: defaults and mistakes."""

from __future__ import annotations

from ldaproute.core import limits
from ldaproute.config import Config, ConfigError

MINIMAL = "[ldaproute]\nlisten = tcp:10389\n[backend:a]\nurl = ldap://h:1\n[pool:p]\nbackends = a\n[route:r]\npool = p\n"


def mistake(text: str) -> str:
    try:
        Config.fromString(text)
    except ConfigError as e:
        return str(e)
    raise AssertionError("no ConfigError")


def test_maxFilterDepthDefault() -> None:
    assert Config.fromString(MINIMAL).maxFilterDepth == limits.DEFAULT_MAX_FILTER_DEPTH == 64


def test_maxFilterDepth() -> None:
    text = MINIMAL.replace("listen = tcp:10389", "listen = tcp:10389\nmax_filter_depth = 10")
    assert Config.fromString(text).maxFilterDepth == 10


def test_maxFilterDepthZero() -> None:
    text = MINIMAL.replace("listen = tcp:10389", "listen = tcp:10389\nmax_filter_depth = 0")
    assert mistake(text) == "routes.ini [ldaproute] max_filter_depth: expected a number above zero, not 0"


def test_maxFilterDepthNotANumber() -> None:
    text = MINIMAL.replace("listen = tcp:10389", "listen = tcp:10389\nmax_filter_depth = deep")
    assert mistake(text) == "routes.ini [ldaproute] max_filter_depth: expected a whole number, not 'deep'"
