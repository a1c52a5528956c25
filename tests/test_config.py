"""routes.ini loading: every mistake is one sentence naming file, section and key."""

from __future__ import annotations

import pytest
from twisted.python.filepath import FilePath

from ldaproute.wire import ber
from ldaproute.config import BackendURL, Config, ConfigError

GOOD = """
[ldaproute]
listen = tcp:10389:interface=127.0.0.1, tcp:10390:interface=127.0.0.1
max_pdu_bytes = 1000000

[listener:gc]
listen = tcp:13268:interface=127.0.0.1

[backend:a]
url = ldap://127.0.0.1:389
[backend:b]
url = ldaps://dc2.example.com
weight = 3

[pool:main]
backends = a, b
connect_timeout = 250ms

[route:readonly]
suffix = ou=Legacy , dc=Example,dc=com
operations = write
reject = 53 the legacy subtree is read-only

[route:gc]
listener = gc
pool = main

[route:all]
pool = main
"""


def load(text: str) -> Config:
    return Config.fromString(text, "routes.ini")


def mistake(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return str(caught.value)


MINIMAL = "[ldaproute]\nlisten = tcp:10389\n[backend:a]\nurl = ldap://h:1\n[pool:p]\nbackends = a\n[route:r]\npool = p\n"


def test_good() -> None:
    config = load(GOOD)
    assert [listener.name for listener in config.listeners] == ["default", "gc"]
    assert config.listeners[0].endpoints == ("tcp:10389:interface=127.0.0.1", "tcp:10390:interface=127.0.0.1")
    assert config.maxPDUBytes == 1_000_000
    assert config.backends["b"].url == BackendURL("ldaps", "dc2.example.com", 636)
    assert config.backends["b"].weight == 3
    assert [b.name for b in config.pools["main"].backends] == ["a", "b"]
    assert config.pools["main"].connectTimeout == 0.25
    readonly, gc, everything = config.routes
    assert readonly.reject is not None and readonly.reject.resultCode == 53
    assert readonly.reject.message == "the legacy subtree is read-only"
    assert readonly.operations is not None and ber.ADD_REQUEST in readonly.operations.tags
    assert readonly.suffix is not None and readonly.suffix.rdns[0] == (("ou", "legacy"),)
    assert gc.listener == "gc"
    assert everything.pool == "main"


def test_minimal() -> None:
    assert load(MINIMAL).maxPDUBytes == ber.DEFAULT_MAX_PDU_BYTES


def test_exampleFileLoads() -> None:
    example = FilePath(__file__).parent().parent().child("deploy").child("routes.example.ini")
    Config.fromFile(example)


def test_missingFile(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match=r"^/nonexistent/routes.ini: cannot read the file: No such file"):
        Config.fromFile("/nonexistent/routes.ini")


@pytest.mark.parametrize(
    "text,message",
    [
        (MINIMAL + "[frobnicator:x]\n", "routes.ini [frobnicator:x]: unknown section: expected [ldaproute], "
         "[listener:NAME], [backend:NAME], [pool:NAME], [route:NAME] or [expect:NAME]"),
        (MINIMAL + "[pool]\nbackends = a\n", "routes.ini [pool]: unknown section: expected [ldaproute], "
         "[listener:NAME], [backend:NAME], [pool:NAME], [route:NAME] or [expect:NAME]"),
        (MINIMAL.replace("url = ldap://h:1", "url = ldap://h:1\ncolour = blue"),
         "routes.ini [backend:a] colour: unknown key (this section takes: "),
        (MINIMAL.replace("backends = a", "backends = a, a3"), "routes.ini [pool:p] backends: unknown backend 'a3'"),
        (MINIMAL.replace("backends = a", "backends = a, a"), "routes.ini [pool:p] backends: a backend is listed twice"),
        (MINIMAL.replace("url = ldap://h:1", "url = http://h:1"),
         "routes.ini [backend:a] url: bad URL 'http://h:1': the scheme must be ldap, ldaps or ldapi"),
        (MINIMAL.replace("url = ldap://h:1", "url = ldap://h:99999"),
         "routes.ini [backend:a] url: bad URL 'ldap://h:99999': Port out of range 0-65535"),
        (MINIMAL.replace("url = ldap://h:1", "url = ldap://h:1/dc=x"),
         "routes.ini [backend:a] url: bad URL 'ldap://h:1/dc=x': a backend URL names a server only, no DN or query"),
        (MINIMAL.replace("url = ldap://h:1\n", ""), "routes.ini [backend:a] url: missing: give the server's address as ldap://host:port"),
        (MINIMAL.replace("listen = tcp:10389", "listen = tcpp:10389"),
         "routes.ini [ldaproute] listen: bad endpoint 'tcpp:10389': Unknown endpoint type: 'tcpp'"),
        (MINIMAL.replace("listen = tcp:10389", "listen = tcp:notaport"),
         "routes.ini [ldaproute] listen: bad endpoint 'tcp:notaport': invalid literal for int() with base 10: 'notaport'"),
        (MINIMAL.replace("[ldaproute]\nlisten = tcp:10389\n", ""),
         "routes.ini [ldaproute] listen: missing: give at least one endpoint, such as tcp:389"),
        (MINIMAL.replace("[route:r]\npool = p\n", ""), "routes.ini: no route: add a [route:NAME] section with pool = NAME"),
        (MINIMAL.replace("pool = p", "pool = q"), "routes.ini [route:r] pool: unknown pool 'q'"),
        (MINIMAL.replace("pool = p", "suffix = dc=x"),
         "routes.ini [route:r] pool: missing: a route needs a pool, or reject = CODE MESSAGE"),
        (MINIMAL.replace("pool = p", "pool = p\nreject = 53 no"),
         "routes.ini [route:r] reject: a route takes either pool or reject, not both"),
        (MINIMAL.replace("pool = p", "reject = fifty"),
         "routes.ini [route:r] reject: expected a result code and a message, as '53 read-only', not 'fifty'"),
        (MINIMAL.replace("pool = p", "pool = p\nsuffix = dc=x,,dc=y"), "routes.ini [route:r] suffix: bad DN 'dc=x,,dc=y': '' is not attribute=value"),
        (MINIMAL.replace("pool = p", "pool = p\noperations = read, destroy"),
         "routes.ini [route:r] operations: unknown operation 'destroy': expected read, write, bind, extended[:OID] "
         "or search, compare, add, delete, modify, modifydn"),
        (MINIMAL.replace("pool = p", "pool = p\nclient_network = 10.0.0.0/33"),
         "routes.ini [route:r] client_network: bad network '10.0.0.0/33': expected CIDR such as 10.0.0.0/8"),
        (MINIMAL.replace("pool = p", "pool = p\nlistener = gc"), "routes.ini [route:r] listener: unknown listener 'gc'"),
        (MINIMAL.replace("pool = p", "pool = p\nbind_dn = nonsense"), "routes.ini [route:r] bind_dn: bad DN 'nonsense': 'nonsense' is not attribute=value"),
        (MINIMAL + "max_pdu_bytes = -1\n", "routes.ini [route:r] max_pdu_bytes: unknown key (this section takes: "),
        (MINIMAL.replace("listen = tcp:10389", "listen = tcp:10389\nmax_pdu_bytes = 0"),
         "routes.ini [ldaproute] max_pdu_bytes: expected a number above zero, not 0"),
        (MINIMAL.replace("connect_timeout", "x") + "[pool:q]\nbackends = a\nconnect_timeout = soon\n",
         "routes.ini [pool:q] connect_timeout: expected a duration such as 5s or 250ms, not 'soon'"),
        (MINIMAL + "[route:r]\npool = p\n", "routes.ini [route:r]: this section appears twice"),
        (MINIMAL.replace("pool = p", "pool = p\npool = p"), "routes.ini [route:r] pool: this key appears twice in the section"),
        ("listen tcp:1\n", "routes.ini: not an INI file: File contains no section headers."),
        (MINIMAL + "[listener:x]\n", "routes.ini [listener:x] listen: missing: a listener needs at least one endpoint"),
        (MINIMAL + "[backend:a b]\nurl = ldap://h\n", "routes.ini [backend:a b]: bad name 'a b': use letters, digits, '-', '_' and '.'"),
    ],
)
def test_mistakes(text: str, message: str) -> None:
    """The whole sentence (for unknown keys: up to the list of known keys, which grows)."""
    if message.endswith("(this section takes: "):
        assert mistake(text).startswith(message)
    else:
        assert mistake(text) == message


def test_ldapiURL() -> None:
    assert BackendURL.fromString("ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi") == BackendURL("ldapi", "/var/run/slapd/ldapi", 0)


def test_extendedOIDs() -> None:
    config = load(MINIMAL.replace("pool = p", "pool = p\noperations = extended:1.3.6.1.4.1.4203.1.11.3"))
    operations = config.routes[0].operations
    assert operations is not None
    assert operations.extendedOIDs == {b"1.3.6.1.4.1.4203.1.11.3"}
