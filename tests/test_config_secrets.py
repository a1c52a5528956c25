"""The password policy keys: require_tls_for_passwords, its former name, secret_attributes."""

from __future__ import annotations

import os

import pytest

from ldaproute.config import Config, ConfigError, Listener
from ldaproute.core.secrets import DEFAULT_SECRET_ATTRIBUTES

TAIL = "[backend:b]\nurl = ldap://h\n[pool:p]\nbackends = b\n[route:r]\npool = p\n"


def listener(keys: str, section: str = "[ldaproute]\nlisten = tcp:389\n") -> Listener:
    return Config.fromString(section + keys + TAIL).listeners[0]


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        Config.fromString(text)
    return str(info.value)


def test_defaults() -> None:
    plain = listener("")
    assert plain.requireTLSForPasswords is True
    assert plain.secretAttributes == DEFAULT_SECRET_ATTRIBUTES
    assert plain.requireTLSForSimpleBind is True  # the former name reads the same value


@pytest.mark.parametrize(
    "keys, expected",
    [
        ("require_tls_for_passwords = off\n", False),
        ("require_tls_for_simple_bind = off\n", False),
        ("require_tls_for_passwords = off\nrequire_tls_for_simple_bind = no\n", False),
        ("require_tls_for_passwords = on\nrequire_tls_for_simple_bind = yes\n", True),
    ],
)
def test_aliases(keys: str, expected: bool) -> None:
    assert listener(keys).requireTLSForPasswords is expected
    assert listener(keys, "[ldaproute]\n[listener:l]\nlisten = tcp:389\n").requireTLSForPasswords is expected


def test_aliasContradicts() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nrequire_tls_for_passwords = on\nrequire_tls_for_simple_bind = off\n" + TAIL) == (
        "routes.ini [ldaproute] require_tls_for_simple_bind: contradicts require_tls_for_passwords "
        "(the same setting under its former name): keep one"
    )
    assert error("[listener:x]\nlisten = tcp:389\nrequire_tls_for_simple_bind = on\nrequire_tls_for_passwords = off\n" + TAIL) == (
        "routes.ini [listener:x] require_tls_for_simple_bind: contradicts require_tls_for_passwords "
        "(the same setting under its former name): keep one"
    )


def test_requireBool() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nrequire_tls_for_passwords = maybe\n" + TAIL) == (
        "routes.ini [ldaproute] require_tls_for_passwords: expected yes or no, not 'maybe'"
    )


def test_secretAttributes() -> None:
    assert listener("secret_attributes = userPassword, msDS-Secret\n").secretAttributes == ("userPassword", "msDS-Secret")


def test_secretAttributesBad() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nsecret_attributes = userPassword, bad name\n" + TAIL) == (
        "routes.ini [ldaproute] secret_attributes: bad attribute name 'bad name'"
    )
    assert error("[ldaproute]\nlisten = tcp:389\nsecret_attributes = ,\n" + TAIL) == (
        "routes.ini [ldaproute] secret_attributes: expected a comma list of attribute names"
    )


def test_hardenedExample() -> None:
    """deploy/routes.example.ini's hardened listener loads with the new key, and with the former name in its place."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "routes.example.ini")
    with open(path) as f:
        text = f.read()
    assert "\nrequire_tls_for_passwords = on\n" in text
    for variant in (text, text.replace("\nrequire_tls_for_passwords = on\n", "\nrequire_tls_for_simple_bind = on\n")):
        [hardened] = [item for item in Config.fromString(variant, path).listeners if item.name == "hardened"]
        assert hardened.requireTLSForPasswords is True
        assert "unicodePwd" in hardened.secretAttributes
