"""Configuration mistakes in the CLDAP keys, each with its full message."""

from __future__ import annotations

import pytest

from ldaproute.config import Config, ConfigError

BASE = """
[ldaproute]
listen = tcp:389
{globals}
[backend:dc1]
url = ldap://dc1.example.test
{backend}
[pool:ad]
backends = dc1
[route:all]
pool = ad
{route}
"""


def load(globals: str = "", backend: str = "", route: str = "") -> Config:
    return Config.fromString(BASE.format(globals=globals, backend=backend, route=route))


def test_defaults() -> None:
    config = load()
    assert config.cldapEndpoints == ()
    assert (config.cldapTimeout, config.cldapMaxDatagram, config.cldapRateLimit) == (2.0, 1400, 20)
    assert (config.cldapAmplification, config.cldapRootDSETTL) == (8, 60.0)
    assert config.backends["dc1"].cldapPort == 389


def test_values() -> None:
    config = load(
        "cldap = udp:389, udp:10389:interface=127.0.0.1\ncldap_timeout = 500ms\ncldap_max_datagram = 1200\n"
        "cldap_rate_limit = 50\ncldap_amplification = 4\ncldap_rootdse_ttl = 5m",
        "cldap_port = none",
        "listener = cldap",
    )
    assert config.cldapEndpoints == ("udp:389", "udp:10389:interface=127.0.0.1")
    assert (config.cldapTimeout, config.cldapMaxDatagram, config.cldapRateLimit) == (0.5, 1200, 50)
    assert (config.cldapAmplification, config.cldapRootDSETTL) == (4, 300.0)
    assert config.backends["dc1"].cldapPort is None
    assert config.routes[0].listener == "cldap"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"globals": "cldap = tcp:389"},
         "routes.ini [ldaproute] cldap: bad endpoint 'tcp:389': a CLDAP endpoint is udp:PORT or udp:PORT:interface=ADDRESS"),
        ({"globals": "cldap = udp:x"}, "routes.ini [ldaproute] cldap: bad endpoint 'udp:x': port 'x' is not a number"),
        ({"globals": "cldap = udp:70000"}, "routes.ini [ldaproute] cldap: bad endpoint 'udp:70000': port 70000 is out of range"),
        ({"globals": "cldap = udp:389:iface=1.2.3.4"},
         "routes.ini [ldaproute] cldap: bad endpoint 'udp:389:iface=1.2.3.4': unknown option 'iface=1.2.3.4': only interface=ADDRESS"),
        ({"globals": "cldap = udp:389:interface=dc1"},
         "routes.ini [ldaproute] cldap: bad endpoint 'udp:389:interface=dc1': interface 'dc1' is not an IP address"),
        ({"globals": "cldap = "}, "routes.ini [ldaproute] cldap: expected at least one UDP endpoint such as udp:389"),
        ({"globals": "cldap_timeout = soon"},
         "routes.ini [ldaproute] cldap_timeout: expected a duration such as 5s or 250ms, not 'soon'"),
        ({"globals": "cldap_max_datagram = 100"},
         "routes.ini [ldaproute] cldap_max_datagram: expected a UDP payload size from 512 to 65507 bytes, not 100"),
        ({"globals": "cldap_rate_limit = 0"}, "routes.ini [ldaproute] cldap_rate_limit: expected a number above zero, not 0"),
        ({"globals": "cldap_amplification = x"},
         "routes.ini [ldaproute] cldap_amplification: expected a whole number, not 'x'"),
        ({"globals": "cldap_rootdse_ttl = -1s"},
         "routes.ini [ldaproute] cldap_rootdse_ttl: expected a duration above zero, not '-1s'"),
        ({"backend": "cldap_port = 99999"},
         "routes.ini [backend:dc1] cldap_port: expected a UDP port up to 65535 or none, not 99999"),
        ({"backend": "cldap_port = maybe"}, "routes.ini [backend:dc1] cldap_port: expected a whole number, not 'maybe'"),
        ({"route": "listener = cldap"}, "routes.ini [route:all] listener: unknown listener 'cldap'"),
    ],
)
def test_mistakes(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(**kwargs)
    assert str(e.value) == message
