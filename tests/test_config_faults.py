"""The keys that say how the proxy rides out a backend's absence (issue: backend faults)."""

from __future__ import annotations

import pytest

from ldaproute.config import Config, ConfigError

BASE = """
[ldaproute]
listen = tcp:10389
{globals}
[backend:a]
url = ldap://a.example:389
[pool:p]
backends = a
{pool}
[route:r]
pool = p
{route}
"""


def load(globals: str = "", pool: str = "", route: str = "") -> Config:
    return Config.fromString(BASE.format(globals=globals, pool=pool, route=route))


def test_defaults() -> None:
    config = load()
    pool = config.pools["p"]
    assert (pool.retryBudget, pool.retryBackoffMax) == (5.0, 0.25)
    assert config.routes[0].retryBudget is None
    assert config.listeners[0].onBackendUnavailable == "disconnect"


@pytest.mark.parametrize("text, seconds", [("off", 0.0), ("0", 0.0), ("none", 0.0), ("2s", 2.0), ("750ms", 0.75)])
def test_retryBudget(text: str, seconds: float) -> None:
    assert load(pool=f"retry_budget = {text}").pools["p"].retryBudget == seconds
    assert load(route=f"retry_budget = {text}").routes[0].retryBudget == seconds


def test_onBackendUnavailable() -> None:
    assert load(globals="on_backend_unavailable = answer").listeners[0].onBackendUnavailable == "answer"


@pytest.mark.parametrize(
    "section, text, message",
    [
        ("pool", "retry_budget = soon", "[pool:p] retry_budget: expected a duration"),
        ("pool", "retry_backoff_max = 0", "[pool:p] retry_backoff_max: expected a duration above zero"),
        ("globals", "on_backend_unavailable = hang", "on_backend_unavailable: expected one of answer, disconnect"),
    ],
)
def test_mistakes(section: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**{section: text})
    assert message in str(caught.value)
