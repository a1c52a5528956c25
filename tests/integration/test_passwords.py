"""
No password crosses a cleartext client connection, end to end: ldap3 and
a raw socket client against an ldaproute process in front of a real slapd
that offers SASL PLAIN and LOGIN on every leg (so that only the proxy
stands between a cleartext client and its password).

  - every operation that carries a password, sent in cleartext, is answered
    13 and slapd's access log shows it never arrived (session and shared
    mode);
  - over StartTLS (terminate and passthrough) and LDAPS the same operations
    succeed;
  - the root DSE lists no PLAIN or LOGIN to a cleartext client, for each
    combination of client-leg and backend-leg TLS, and lists them over TLS;
  - StartTLS after a bind leaves the connection anonymous, through the
    proxy as with slapd directly.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import ldap3
import pytest

from ldaproute.wire import ber
from tests.certs import CA, ServerCert, makeCert
from tests.integration.proxyprocess import ProxyProcess
from tests.slapd import Slapd, freePort

PEOPLE = "ou=people,dc=example,dc=com"
#: PLAIN and LOGIN on cleartext links too (slapd's default hides them there),
#: and Proxied Authorization for shared mode's service identity
#: user WRITER may add entries under ou=people (in shared mode the proxy
#: asserts the client's identity, and the rootdn cannot be asserted)
WRITER = 35
PERMISSIVE = (
    "sasl-secprops noanonymous,maxssf=0\nauthz-policy to\n"
    f'access to dn.subtree="{PEOPLE}" by dn.exact="uid=user{WRITER},{PEOPLE}" write by * break\n'
)
PASSWORD_MODIFY = "1.3.6.1.4.1.4203.1.11.1"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(
        str(tmp_path_factory.mktemp("slapd")), entries=40, tls=True, accessLog=True,
        saslMaxSSF=None, extraGlobalConfig=PERMISSIVE,
    )
    server.start()
    try:
        ldif = f"dn: {server.saslUserDN}\nchangetype: modify\nadd: authzTo\nauthzTo: dn.regex:^uid=[^,]+,{PEOPLE}$\n"
        subprocess.run(
            ["ldapmodify", "-x", "-H", server.url, "-D", server.rootDN, "-w", server.rootPW],
            input=ldif, text=True, env=server.clientEnv(), check=True, capture_output=True, timeout=30,
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxyCert(testCA: CA, tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    return makeCert(testCA, str(tmp_path_factory.mktemp("proxycert")), ["localhost", "127.0.0.1"], "proxy")


class Proxy:
    """One proxy process with a listener per client-leg/backend-leg combination."""

    LISTENERS = ("clear", "clearbackend", "ldaps", "ldapsclear", "pass", "passlax", "lax")

    def __init__(self, directory: str, backend: Slapd, cert: ServerCert, mode: str) -> None:
        self.ports = {name: freePort() for name in self.LISTENERS}
        self.metricsPort = freePort()
        self.mode = mode
        tls = f"tls_cert = {cert.certFile}\ntls_key = {cert.keyFile}\n"
        ldaps = f"privateKey={cert.keyFile}:certKey={cert.certFile}"
        shared = ""
        if mode == "shared":
            shared = (
                "health_check = no\nshared_connections = 1\nbind_connections = 1\n"
                f"service_bind_dn = {backend.saslUserDN}\nservice_bind_password = {backend.saslPassword}\n"
            )
        p = self.ports
        listeners = {
            # name: (endpoint, extra keys, pool)
            "clear": (f"tcp:{p['clear']}:interface=127.0.0.1", tls, "tls"),
            "clearbackend": (f"tcp:{p['clearbackend']}:interface=127.0.0.1", tls, "plain"),
            "ldaps": (f"ssl:{p['ldaps']}:interface=127.0.0.1:{ldaps}", "", "tls"),
            "ldapsclear": (f"ssl:{p['ldapsclear']}:interface=127.0.0.1:{ldaps}", "", "plain"),
            "pass": (f"tcp:{p['pass']}:interface=127.0.0.1", "starttls = passthrough\n", "plain"),
            "passlax": (
                f"tcp:{p['passlax']}:interface=127.0.0.1", "starttls = passthrough\nrequire_tls_for_passwords = off\n", "plain"
            ),
            "lax": (f"tcp:{p['lax']}:interface=127.0.0.1", tls + "require_tls_for_passwords = off\n", "tls"),
        }
        if mode == "shared":  # passthrough pins a client to a backend connection: session mode only
            del listeners["pass"], listeners["passlax"]
            del self.ports["pass"], self.ports["passlax"]
        text = f"[ldaproute]\nmetrics = tcp:{self.metricsPort}:interface=127.0.0.1\nmode = {mode}\n"
        for name, (endpoint, extra, _) in listeners.items():
            text += f"[listener:{name}]\nlisten = {endpoint}\n{extra}"
        text += (
            f"[backend:tls]\nurl = {backend.ldapsURL}\nca_file = {backend.caFile}\n"
            f"[backend:plain]\nurl = {backend.url}\n"
            f"[pool:tls]\nbackends = tls\n{shared}[pool:plain]\nbackends = plain\n{shared}"
        )
        for name, (_, _, pool) in listeners.items():
            text += f"[route:{name}]\nlistener = {name}\npool = {pool}\n"
        self.process = ProxyProcess(directory, text, [p[name] for name in listeners] + [self.metricsPort])

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.process.log().splitlines():
            if line.strip().startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def refusedCount(self, listener: str, kind: str) -> float:
        url = f"http://127.0.0.1:{self.metricsPort}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        prefix = f'ldaproute_cleartext_secrets_refused_total{{kind="{kind}",listener="{listener}"}} '
        for line in body.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix):])
        return 0.0


def _proxy(mode: str, backend: Slapd, cert: ServerCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    started = Proxy(str(tmp_path_factory.mktemp("proxy")), backend, cert, mode)
    started.process.start()
    try:
        yield started
    finally:
        started.process.stop()


@pytest.fixture(scope="module")
def sessionProxy(backend: Slapd, proxyCert: ServerCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from _proxy("session", backend, proxyCert, tmp_path_factory)


@pytest.fixture(scope="module")
def sharedProxy(backend: Slapd, proxyCert: ServerCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from _proxy("shared", backend, proxyCert, tmp_path_factory)


def proxyFor(request: Any, mode: str) -> Proxy:
    proxy: Proxy = request.getfixturevalue(f"{mode}Proxy")
    return proxy


def combinations(cases: list[tuple[str, ...]]) -> list[Any]:
    """Each case in both modes, except passthrough, which is session mode only."""
    out = []
    for mode in ("session", "shared"):
        for case in cases:
            if mode == "shared" and case[0].startswith("pass"):
                continue
            out.append(pytest.param(mode, *case, id="-".join((mode,) + case[:2])))
    return out


# --- clients -----------------------------------------------------------------


def _tls() -> ldap3.Tls:
    return ldap3.Tls(validate=ssl.CERT_NONE)  # the legs under test, not certificate checks


def connect(port: int, leg: str, **kwargs: Any) -> ldap3.Connection:
    """An open ldap3 connection: C{leg} is clear, starttls or ldaps."""
    server = ldap3.Server("127.0.0.1", port=port, use_ssl=leg == "ldaps", tls=_tls(), get_info=ldap3.NONE)
    conn = ldap3.Connection(server, raise_exceptions=False, **kwargs)
    conn.open()
    if leg == "starttls":
        assert conn.start_tls(), conn.result
    return conn


def code(conn: ldap3.Connection) -> int:
    return int(conn.result["result"])


def saslRequest(messageID: int, mechanism: bytes, credentials: bytes | None) -> bytes:
    inner = ber.tlv(0x04, mechanism) + (ber.tlv(0x04, credentials) if credentials is not None else b"")
    return ber.message(messageID, ber.tlv(ber.BIND_REQUEST, ber.tlv(0x02, b"\x03") + ber.tlv(0x04, b"") + ber.tlv(0xA3, inner)))


def resultCode(pdu: bytes) -> int:
    """The resultCode of a response PDU, read with ldap3's decoder (not ours)."""
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder

    message, _ = decoder.decode(pdu, asn1Spec=LDAPMessage())
    op = message["protocolOp"].getComponent()
    return int(op["resultCode"])


def loginBind(port: int, leg: str, user: str, password: str) -> int:
    """SASL LOGIN over a raw socket (ldap3 has no LOGIN): the final result code."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if leg == "ldaps":
            sock = context.wrap_socket(sock)
        framer = ber.Framer(1 << 20)

        def call(pdu: bytes) -> int:
            sock.sendall(pdu)
            while True:
                data = sock.recv(65536)
                assert data, "connection closed"
                pdus = framer.feed(data)
                if pdus:
                    return resultCode(pdus[0])

        result = call(saslRequest(1, b"LOGIN", None))
        for messageID, step in ((2, user), (3, password)):
            if result != ber.SASL_BIND_IN_PROGRESS:
                return result
            result = call(saslRequest(messageID, b"LOGIN", step.encode()))
        return result
    finally:
        sock.close()


def slapdSaw(backend: Slapd, text: str) -> int:
    return sum(1 for line in backend.logLines() if text in line)


# --- cleartext: refused, never forwarded -------------------------------------


@pytest.mark.parametrize("mode", ["session", "shared"])
def test_cleartextRefused(request: Any, backend: Slapd, mode: str) -> None:
    """
    The issue's set-up (the proxy's link to slapd is TLS, where slapd would
    accept every one of these): each is answered 13 in cleartext and
    slapd's log shows none of them.
    """
    proxy = proxyFor(request, mode)
    port = proxy.ports["clear"]
    victim = backend.userDN(3)
    newcomer = f"uid=newcomer-{proxy.mode},{PEOPLE}"
    before = {
        "bind": slapdSaw(backend, f'BIND dn="{victim}"'),
        "sasl": slapdSaw(backend, "method=163"),
        "ext": slapdSaw(backend, f"EXT oid={PASSWORD_MODIFY}"),
        "add": slapdSaw(backend, f'ADD dn="{newcomer}"'),
        "mod": slapdSaw(backend, f'MOD dn="{victim}"'),
        "cmp": slapdSaw(backend, f'CMP dn="{victim}"'),
    }
    refused: dict[str, int] = {}

    conn = connect(port, "clear", user=victim, password=backend.userPassword(3))
    conn.bind()
    refused["simple_bind"] = code(conn)
    assert "StartTLS" in conn.result["message"] and "ldaps" in conn.result["message"]
    conn.unbind()

    plain = connect(
        port, "clear", authentication=ldap3.SASL, sasl_mechanism=ldap3.PLAIN,
        sasl_credentials=(None, backend.saslUser, backend.saslPassword),
    )
    plain.bind()
    refused["sasl_bind"] = code(plain)
    plain.unbind()
    assert loginBind(port, "clear", backend.saslUser, backend.saslPassword) == ber.CONFIDENTIALITY_REQUIRED

    conn = connect(port, "clear")
    conn.extend.standard.modify_password(victim, backend.userPassword(3), "new-password")
    refused["password_modify"] = code(conn)
    conn.add(newcomer, ["inetOrgPerson"], {"cn": "n", "sn": "n", "userPassword": "pw-newcomer"})
    refused["add"] = code(conn)
    conn.modify(victim, {"userPassword": [(ldap3.MODIFY_REPLACE, ["pw-modify"])]})
    refused["modify"] = code(conn)
    conn.compare(victim, "userPassword", backend.userPassword(3))
    refused["compare"] = code(conn)
    # the connection stays usable: an anonymous search goes through
    assert conn.search(PEOPLE, "(uid=user4)", attributes=["uid"]) and len(conn.entries) == 1
    conn.unbind()

    assert refused == dict.fromkeys(refused, ber.CONFIDENTIALITY_REQUIRED)
    time.sleep(0.3)  # slapd writes its log asynchronously
    after = {
        "bind": slapdSaw(backend, f'BIND dn="{victim}"'),
        "sasl": slapdSaw(backend, "method=163"),
        "ext": slapdSaw(backend, f"EXT oid={PASSWORD_MODIFY}"),
        "add": slapdSaw(backend, f'ADD dn="{newcomer}"'),
        "mod": slapdSaw(backend, f'MOD dn="{victim}"'),
        "cmp": slapdSaw(backend, f'CMP dn="{victim}"'),
    }
    assert after == before
    # one warning per refusal, never the secret; counted by kind
    deadline = time.monotonic() + 10  # the proxy's log reaches the file when it is flushed
    while True:
        warnings = [event for event in proxy.events() if "TLS is required for passwords" in event.get("log_format", "")]
        if len(warnings) >= 7 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(warnings) == 7, warnings
    assert {event["kind"] for event in warnings} == {
        "simple bind", "sasl bind", "password modify", "add", "modify", "compare"
    }
    assert {event.get("mechanism") for event in warnings} >= {"PLAIN", "LOGIN"}
    log = proxy.process.log()
    for secret in (backend.userPassword(3), backend.saslPassword, "pw-newcomer", "pw-modify", "new-password"):
        assert secret not in log
    assert proxy.refusedCount("clear", "sasl_bind") == 2
    for kind in ("simple_bind", "password_modify", "add", "modify", "compare"):
        assert proxy.refusedCount("clear", kind) == 1, kind


# --- inside TLS: the same operations succeed ---------------------------------

LEGS = [("clear", "starttls"), ("ldaps", "ldaps"), ("clearbackend", "starttls"), ("pass", "starttls")]


@pytest.mark.parametrize("mode, listener, leg", combinations(LEGS))
def test_insideTLS(request: Any, backend: Slapd, mode: str, listener: str, leg: str) -> None:
    """Simple bind, PLAIN, LOGIN, Password Modify, modify, compare and add go through over TLS."""
    proxy = proxyFor(request, mode)
    port = proxy.ports[listener]
    i = {"clear": 10, "ldaps": 11, "clearbackend": 12, "pass": 13}[listener] + (10 if proxy.mode == "shared" else 0)
    dn, password = backend.userDN(i), backend.userPassword(i)
    conn = connect(port, leg, user=dn, password=password)
    assert conn.bind(), conn.result
    assert conn.extend.standard.who_am_i() == f"dn:{dn}"
    conn.compare(dn, "userPassword", password)
    assert code(conn) in (5, 6), conn.result  # compareFalse/True: slapd answered (it compares the stored hash)
    assert conn.modify(dn, {"description": [(ldap3.MODIFY_REPLACE, ["x"])]}), conn.result
    assert conn.extend.standard.modify_password(dn, password, password + "-2"), conn.result
    assert conn.modify(dn, {"userPassword": [(ldap3.MODIFY_REPLACE, [password])]}), conn.result
    conn.unbind()
    if proxy.mode == "session":  # shared mode verifies simple binds only
        plain = connect(
            port, leg, authentication=ldap3.SASL, sasl_mechanism=ldap3.PLAIN,
            sasl_credentials=(None, backend.saslUser, backend.saslPassword),
        )
        assert plain.bind(), plain.result
        assert plain.extend.standard.who_am_i() == f"dn:{backend.saslUserDN}"
        plain.unbind()
        if leg == "ldaps":
            assert loginBind(port, leg, backend.saslUser, backend.saslPassword) == ber.SUCCESS
    writer = connect(port, leg, user=backend.userDN(WRITER), password=backend.userPassword(WRITER))
    assert writer.bind(), writer.result
    newcomer = f"uid=tls-{listener}-{proxy.mode},{PEOPLE}"
    assert writer.add(newcomer, ["inetOrgPerson"], {"cn": "n", "sn": "n", "userPassword": "pw"}), writer.result
    writer.unbind()


# --- the root DSE ----------------------------------------------------------------


def mechanisms(port: int, leg: str) -> set[str]:
    conn = connect(port, leg)
    assert conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["supportedSASLMechanisms"]), conn.result
    values = conn.response[0]["raw_attributes"].get("supportedSASLMechanisms", [])
    conn.unbind()
    return {value.decode() for value in values}


ROOT_DSE = [
    # listener, client leg, backend leg
    ("clear", "clear", "ldaps"),
    ("clearbackend", "clear", "none"),
    ("pass", "clear", "none"),
    ("clear", "starttls", "ldaps"),
    ("clearbackend", "starttls", "none"),
    ("ldaps", "ldaps", "ldaps"),
    ("ldapsclear", "ldaps", "none"),
    ("pass", "starttls", "client's own, passed through"),
]


@pytest.mark.parametrize("mode, listener, leg, backendLeg", combinations(ROOT_DSE))
def test_rootDSE(request: Any, backend: Slapd, mode: str, listener: str, leg: str, backendLeg: str) -> None:
    """A cleartext client is offered no PLAIN or LOGIN; a TLS client is offered what slapd offers."""
    proxy = proxyFor(request, mode)
    direct = mechanisms(backend.port, "clear")
    assert {"PLAIN", "LOGIN", "SCRAM-SHA-256"} <= direct  # what the backend offers on every leg
    seen = mechanisms(proxy.ports[listener], leg)
    if leg == "clear":
        assert seen == direct - {"PLAIN", "LOGIN"}
    else:
        assert seen == direct


# --- StartTLS after a bind ----------------------------------------------------------


def whoAmI(conn: ldap3.Connection) -> str:
    return conn.extend.standard.who_am_i() or ""


STARTTLS_AFTER_BIND = [("lax", "terminate"), ("passlax", "passthrough")]


def startTLSAfterBind(port: int, backend: Slapd) -> None:
    """Bound in cleartext, then StartTLS: anonymous, upstream too; a new bind inside TLS works."""
    dn = backend.userDN(30)
    conn = connect(port, "clear", user=dn, password=backend.userPassword(30))
    assert conn.bind(), conn.result
    assert whoAmI(conn) == f"dn:{dn}"
    assert ownPassword(conn, dn)  # self may read its own userPassword
    assert conn.start_tls(), conn.result
    assert whoAmI(conn) == ""
    assert not ownPassword(conn, dn)  # anonymous may not
    assert conn.bind(), conn.result
    assert whoAmI(conn) == f"dn:{dn}"
    conn.unbind()


def ownPassword(conn: ldap3.Connection, dn: str) -> bool:
    assert conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword"]), conn.result
    return bool(conn.response[0]["raw_attributes"].get("userPassword"))


def test_startTLSAfterBindWithSlapd(backend: Slapd) -> None:
    """What slapd itself does, the behaviour the proxy matches."""
    startTLSAfterBind(backend.port, backend)


@pytest.mark.parametrize("mode, listener, starttls", combinations(STARTTLS_AFTER_BIND))
def test_startTLSAfterBind(request: Any, backend: Slapd, mode: str, listener: str, starttls: str) -> None:
    """The proxy in terminate mode (both modes) and passthrough behaves as slapd does."""
    startTLSAfterBind(proxyFor(request, mode).ports[listener], backend)
