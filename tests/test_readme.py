"""README.rst documents every configuration key the loader accepts, and renders cleanly."""

from __future__ import annotations

import os

import pytest

from ldaproute import config

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")


@pytest.mark.parametrize(
    "table",
    ["_GLOBAL_KEYS", "_LISTENER_KEYS", "_BACKEND_KEYS", "_POOL_KEYS", "_ROUTE_KEYS"],
)
def test_everyKeyDocumented(table: str) -> None:
    with open(README) as f:
        text = f.read()
    missing = [key for key in getattr(config, table) if f"``{key}``" not in text]
    assert missing == [], f"README.rst does not document {missing}"


def test_readmeStartsWithTheTwoCommands() -> None:
    with open(README) as f:
        head = f.read(2000)
    assert "twistd -n ldaproute --demo" in head
    assert "bash tools/test-all.sh" in head
