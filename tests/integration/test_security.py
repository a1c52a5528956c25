"""
TLS on both sides and the listener security policy, end to end: OpenLDAP's
CLI tools, ldap3, Python's ssl and raw sockets against the proxy (a child
process) in front of a real slapd with TLS.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import ldap3
import pytest

from ldaproute.wire import ber
from tests.certs import CA, ServerCert, makeCert
from tests.integration.proxyprocess import ProxyProcess
from tests.slapd import Slapd, freePort


@pytest.fixture(scope="module")
def proxyCert(testCA: CA, tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    """The proxy's own certificate, from a CA slapd's clients do not trust."""
    return makeCert(testCA, str(tmp_path_factory.mktemp("proxycert")), ["localhost", "127.0.0.1"], "proxy")


def backendSection(slapd: Slapd, extra: str = "", url: str | None = None) -> str:
    return (
        "[backend:slapd]\n"
        f"url = {url or slapd.url}\n"
        f"{extra}"
        "[pool:main]\n"
        "backends = slapd\n"
        "[route:all]\n"
        "pool = main\n"
    )


@pytest.fixture
def startProxy(tmp_path: Any) -> Iterator[Any]:
    started: list[ProxyProcess] = []

    def start(text: str, ports: list[int]) -> ProxyProcess:
        directory = tmp_path / f"proxy{len(started)}"
        directory.mkdir()
        proxy = ProxyProcess(str(directory), text, ports)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=30)


def clientEnv(slapd: Slapd, caFile: str) -> dict[str, str]:
    env = slapd.clientEnv()
    env["LDAPTLS_CACERT"] = caFile
    env["LDAPTLS_REQCERT"] = "demand"
    return env


def events(proxy: ProxyProcess) -> list[dict[str, Any]]:
    out = []
    for line in proxy.log().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def logMentions(slapd: Slapd, text: str) -> int:
    return sum(1 for line in slapd.logLines() if text.lower() in line.lower())


# --- raw LDAP over sockets (not our codec for reading answers) --------------


def startTLSRequest(messageID: int) -> bytes:
    return bytes.fromhex("301d02") + bytes([1, messageID]) + bytes.fromhex("7718801631") + b".3.6.1.4.1.1466.20037"


def recvExactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def readPDU(sock: socket.socket) -> bytes:
    """One LDAPMessage (short or long form length) from a blocking socket."""
    head = recvExactly(sock, 2)
    if head[1] < 0x80:
        return head + recvExactly(sock, head[1])
    extra = recvExactly(sock, head[1] & 0x7F)
    return head + extra + recvExactly(sock, int.from_bytes(extra, "big"))


def resultCodeOf(pdu: bytes) -> int:
    """The resultCode of a response PDU read by L{readPDU}."""
    envelope = ber.ResponseScanner(1 << 20).feed(pdu)[1]
    if envelope and envelope[0][2] != -1:
        return envelope[0][2]
    # not a bind/extended response: resultCode is the first element
    pos = 2 if pdu[1] < 0x80 else 2 + (pdu[1] & 0x7F)
    pos += 2 + pdu[pos + 1]  # messageID
    pos += 2 if pdu[pos + 1] < 0x80 else 2 + (pdu[pos + 1] & 0x7F)
    return pdu[pos + 2]


def peerCertAfterStartTLS(port: int, caFile: str) -> bytes:
    """Do StartTLS by hand on a socket, then return the server certificate (DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(startTLSRequest(1))
        response = readPDU(sock)
        assert resultCodeOf(response) == 0, response
        context = ssl.create_default_context(cafile=caFile)
        with context.wrap_socket(sock, server_hostname="localhost") as tlsSock:
            der = tlsSock.getpeercert(binary_form=True)
            assert der is not None
            return der


def certDER(path: str) -> bytes:
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# --- StartTLS on the client side ---------------------------------------------


def test_terminate(slapd: Slapd, proxyCert: ServerCert, startProxy: Any) -> None:
    """
    starttls = terminate: ldapwhoami -ZZ and ldap3 start_tls complete
    against the proxy's certificate, and the bind reaches slapd.
    """
    port = freePort()
    startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\n"
        f"tls_cert = {proxyCert.certFile}\ntls_key = {proxyCert.keyFile}\n" + backendSection(slapd),
        [port],
    )
    env = clientEnv(slapd, proxyCert.caFile)
    result = run(
        "ldapwhoami", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
        "-D", slapd.userDN(11), "-w", slapd.userPassword(11), env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dn:" + slapd.userDN(11)
    assert peerCertAfterStartTLS(port, proxyCert.caFile) == certDER(proxyCert.certFile)

    tlsConfig = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=proxyCert.caFile)
    server = ldap3.Server("localhost", port=port, tls=tlsConfig, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, slapd.userDN(12), slapd.userPassword(12))
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    assert conn.extend.standard.who_am_i() == "dn:" + slapd.userDN(12)
    # RFC 4511 4.14.1: a second StartTLS is refused, the session carries on
    assert not conn.start_tls(read_server_info=False) or conn.result["result"] == ber.OPERATIONS_ERROR
    conn.unbind()


def test_terminateSecondStartTLSAndFailedHandshake(slapd: Slapd, proxyCert: ServerCert, startProxy: Any) -> None:
    """A client that fails the handshake is disconnected; a second StartTLS gets operationsError."""
    port = freePort()
    proxy = startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\n"
        f"tls_cert = {proxyCert.certFile}\ntls_key = {proxyCert.keyFile}\n" + backendSection(slapd),
        [port],
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(startTLSRequest(1))
        assert resultCodeOf(readPDU(sock)) == 0
        context = ssl.create_default_context(cafile=proxyCert.caFile)
        with context.wrap_socket(sock, server_hostname="localhost") as tlsSock:
            tlsSock.sendall(startTLSRequest(2))
            assert resultCodeOf(readPDU(tlsSock)) == ber.OPERATIONS_ERROR
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(startTLSRequest(1))
        assert resultCodeOf(readPDU(sock)) == 0
        sock.sendall(b"\x16\x03\x01\x00\x05garbage-not-a-client-hello")
        sock.settimeout(10)
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any("TLS handshake with" in e.get("log_format", "") for e in events(proxy)):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no handshake failure event:\n" + proxy.log())


def test_passthrough(slapd: Slapd, proxyCert: ServerCert, startProxy: Any) -> None:
    """
    starttls = passthrough: the client sees slapd's own certificate, and
    binds end to end over that TLS session.
    """
    port = freePort()
    startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nstarttls = passthrough\n" + backendSection(slapd),
        [port],
    )
    assert slapd.caFile is not None and slapd.serverCert is not None
    env = clientEnv(slapd, slapd.caFile)
    result = run(
        "ldapwhoami", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
        "-D", slapd.userDN(21), "-w", slapd.userPassword(21), env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dn:" + slapd.userDN(21)
    assert peerCertAfterStartTLS(port, slapd.caFile) == certDER(slapd.serverCert.certFile)

    tlsConfig = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=slapd.caFile)
    server = ldap3.Server("localhost", port=port, tls=tlsConfig, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, slapd.userDN(22), slapd.userPassword(22))
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    assert conn.search(slapd.peopleDN, "(uid=user22)", attributes=["uid"])
    assert len(conn.entries) == 1
    conn.unbind()


def test_passthroughRefusedStaysCleartext(slapdFactory: Any, startProxy: Any) -> None:
    """passthrough to a backend without TLS: its refusal reaches the client, who carries on in clear."""
    plain = slapdFactory(tls=False)
    port = freePort()
    startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nstarttls = passthrough\n" + backendSection(plain),
        [port],
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(startTLSRequest(1))
        assert resultCodeOf(readPDU(sock)) != 0
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server)
    conn.open()
    with pytest.raises(ldap3.core.exceptions.LDAPStartTLSError):
        conn.start_tls(read_server_info=False)
    assert conn.search(plain.peopleDN, "(uid=user3)", attributes=["uid"])
    assert len(conn.entries) == 1


def test_starttlsOff(slapd: Slapd, startProxy: Any) -> None:
    """starttls = off: protocolError, and the connection stays usable."""
    port = freePort()
    startProxy("[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\n" + backendSection(slapd), [port])
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server)
    conn.open()
    with pytest.raises(ldap3.core.exceptions.LDAPStartTLSError, match="protocolError"):
        conn.start_tls(read_server_info=False)
    assert conn.result["result"] == ber.PROTOCOL_ERROR
    assert conn.search(slapd.peopleDN, "(uid=user3)", attributes=["uid"])
    assert len(conn.entries) == 1


def test_ldapsListener(slapd: Slapd, proxyCert: ServerCert, startProxy: Any) -> None:
    """An ssl: endpoint is an LDAPS listener; simple binds are allowed on it."""
    port = freePort()
    startProxy(
        "[ldaproute]\n"
        f"listen = ssl:{port}:interface=127.0.0.1:privateKey={proxyCert.keyFile}:certKey={proxyCert.certFile}\n"
        + backendSection(slapd),
        [port],
    )
    result = run(
        "ldapsearch", "-x", "-LLL", "-H", f"ldaps://127.0.0.1:{port}",
        "-D", slapd.userDN(31), "-w", slapd.userPassword(31),
        "-b", slapd.peopleDN, "(uid=user31)", "uid",
        env=clientEnv(slapd, proxyCert.caFile),
    )
    assert result.returncode == 0, result.stderr
    assert "uid: user31" in result.stdout


# --- TLS on the backend side -------------------------------------------------


def whoamiThroughCleartext(port: int, slapd: Slapd, i: int) -> subprocess.CompletedProcess[str]:
    return run(
        "ldapwhoami", "-x", "-H", f"ldap://127.0.0.1:{port}",
        "-D", slapd.userDN(i), "-w", slapd.userPassword(i), env=slapd.clientEnv(),
    )


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
def test_backendTLS(slapd: Slapd, startProxy: Any, mode: str) -> None:
    """Backend tls = ldaps / starttls, verified against slapd's CA and name."""
    port = freePort()
    url = slapd.ldapsURL if mode == "ldaps" else slapd.url
    assert url is not None and slapd.caFile is not None
    extra = f"tls = {mode}\nca_file = {slapd.caFile}\nserver_name = localhost\n"
    proxy = startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\n"
        + backendSection(slapd, extra, url.rstrip("/")),
        [port],
    )
    result = whoamiThroughCleartext(port, slapd, 41)
    assert result.returncode == 0, result.stderr + proxy.log()
    assert result.stdout.strip() == "dn:" + slapd.userDN(41)
    # slapd saw an encrypted connection (tls_ssf in its stats log)
    assert any("tls_ssf=" in line for line in slapd.logLines())


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
@pytest.mark.parametrize("problem", ["name", "ca"])
def test_backendTLSVerificationFails(
    slapd: Slapd, testCA: CA, startProxy: Any, mode: str, problem: str
) -> None:
    """
    A certificate for another name, or from an untrusted CA, is a failed
    backend connection (52 to the client, an error event), never cleartext.
    """
    port = freePort()
    url = slapd.ldapsURL if mode == "ldaps" else slapd.url
    assert url is not None and slapd.caFile is not None
    if problem == "name":
        extra = f"tls = {mode}\nca_file = {slapd.caFile}\nserver_name = wrong.example.org\n"
    else:
        extra = f"tls = {mode}\nca_file = {testCA.certFile}\n"
    proxy = startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\n"
        # a TLS failure is retried within the budget like any other: keep it short, answered 52
        "on_backend_unavailable = answer\n"
        + backendSection(slapd, extra, url.rstrip("/")).replace("backends = slapd\n", "backends = slapd\nretry_budget = 300ms\n"),
        [port],
    )
    before = logMentions(slapd, f'BIND dn="{slapd.userDN(42)}"')
    result = whoamiThroughCleartext(port, slapd, 42)
    assert result.returncode != 0
    assert "(52)" in result.stderr or "Server is unavailable" in result.stderr, result.stderr
    assert logMentions(slapd, f'BIND dn="{slapd.userDN(42)}"') == before
    failures = [e for e in events(proxy) if "TLS to backend" in e.get("log_format", "")]
    assert failures, proxy.log()
    reason = failures[0]["reason"].lower()
    assert ("verif" in reason or "certificate" in reason or "hostname" in reason), reason


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
@pytest.mark.parametrize("problem", [None, "name"])
def test_backendTLSInSharedMode(slapd: Slapd, startProxy: Any, mode: str, problem: str | None) -> None:
    """
    Shared mode's connections are the same backend connections: TLS
    (StartTLS too, once a configuration error there) is verified the same
    way, and a bad certificate is a failed connection (52), never cleartext.
    """
    port = freePort()
    url = slapd.ldapsURL if mode == "ldaps" else slapd.url
    assert url is not None and slapd.caFile is not None
    name = "wrong.example.org" if problem == "name" else "localhost"
    extra = f"tls = {mode}\nca_file = {slapd.caFile}\nserver_name = {name}\n"
    proxy = startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\nmode = shared\n"
        "on_backend_unavailable = answer\n"
        + backendSection(slapd, extra, url.rstrip("/")).replace("backends = slapd\n", "backends = slapd\nretry_budget = 300ms\n"),
        [port],
    )
    before = logMentions(slapd, "tls_ssf=")
    result = run(
        "ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{port}", "-b", slapd.peopleDN, "(uid=user43)", "uid",
        env=slapd.clientEnv(),
    )
    if problem is None:
        assert result.returncode == 0, result.stderr + proxy.log()
        assert "uid: user43" in result.stdout
        assert logMentions(slapd, "tls_ssf=") > before  # slapd saw the shared connection encrypted
        return
    assert result.returncode != 0
    assert "(52)" in result.stderr or "Server is unavailable" in result.stderr, result.stderr
    failures = [e for e in events(proxy) if "TLS to backend" in e.get("log_format", "")]
    assert failures, proxy.log()


# --- policy ------------------------------------------------------------------


def test_cleartextSimpleBindRefused(slapd: Slapd, startProxy: Any) -> None:
    """require_tls_for_simple_bind (default): 13, and slapd never sees the bind."""
    port = freePort()
    startProxy("[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\n" + backendSection(slapd), [port])
    dn = slapd.userDN(51)
    result = whoamiThroughCleartext(port, slapd, 51)
    assert result.returncode == 13 or "(13)" in result.stderr, result.stderr
    assert "Confidentiality required" in result.stderr
    time.sleep(0.2)
    assert logMentions(slapd, f'BIND dn="{dn}"') == 0
    # anonymous binds are unaffected
    anonymous = run("ldapwhoami", "-x", "-H", f"ldap://127.0.0.1:{port}", env=slapd.clientEnv())
    assert anonymous.returncode == 0, anonymous.stderr


def bindCode(port: int, dn: str, password: str, source: str = "127.0.0.1") -> int:
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, dn, password, source_address=source)
    conn.open()
    conn.bind()
    code = conn.result["result"]
    conn.unbind()
    return int(code)


def test_bindThrottle(slapd: Slapd, startProxy: Any) -> None:
    """
    Failed binds per address and per DN: past the threshold the right
    password is refused (53) without reaching slapd, until the window
    passes; another address binding another DN is unaffected.
    """
    port = freePort()
    startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\n"
        "bind_throttle_failures = 3\nbind_throttle_window = 3s\n" + backendSection(slapd),
        [port],
    )
    victim, other = slapd.userDN(61), slapd.userDN(62)
    for _ in range(3):
        assert bindCode(port, victim, "wrong") == ber.INVALID_CREDENTIALS
    started = time.monotonic()
    seen = logMentions(slapd, f'BIND dn="{victim}"')
    assert bindCode(port, victim, slapd.userPassword(61)) == ber.UNWILLING_TO_PERFORM
    # from another address the DN is still throttled; another DN from the
    # first address is throttled too (per address)
    assert bindCode(port, victim, slapd.userPassword(61), "127.0.0.2") == ber.UNWILLING_TO_PERFORM
    assert bindCode(port, other, slapd.userPassword(62)) == ber.UNWILLING_TO_PERFORM
    # another address and another DN: unaffected
    assert bindCode(port, other, slapd.userPassword(62), "127.0.0.2") == ber.SUCCESS
    time.sleep(0.3)
    assert logMentions(slapd, f'BIND dn="{victim}"') == seen
    time.sleep(max(0.0, 3.2 - (time.monotonic() - started)))
    assert bindCode(port, victim, slapd.userPassword(61)) == ber.SUCCESS


def readUntilClosed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    sock.settimeout(timeout)
    started = time.monotonic()
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def isNoticeOfDisconnection(data: bytes, code: int) -> bool:
    return ber.NOTICE_OF_DISCONNECTION_OID in data and resultCodeOf(data) == code


def test_slowLoris(slapd: Slapd, startProxy: Any) -> None:
    """A PDU not completed within pdu_timeout ends the connection."""
    port = freePort()
    startProxy(
        "[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\npdu_timeout = 1s\n" + backendSection(slapd),
        [port],
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x30\x20\x02\x01")  # a search that never finishes arriving
        time.sleep(0.5)
        sock.sendall(b"\x01")
        data, elapsed = readUntilClosed(sock, 10)
    assert isNoticeOfDisconnection(data, ber.PROTOCOL_ERROR), data
    assert 0.3 < elapsed < 3


def test_idleTimeout(slapd: Slapd, startProxy: Any) -> None:
    """idle_timeout closes a silent connection; traffic keeps one open."""
    port = freePort()
    startProxy(
        "[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\nidle_timeout = 1s\n" + backendSection(slapd),
        [port],
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        data, elapsed = readUntilClosed(sock, 10)
    assert isNoticeOfDisconnection(data, ber.UNAVAILABLE), data
    assert 0.8 < elapsed < 3
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, auto_bind=True)
    for _ in range(3):
        time.sleep(0.6)
        assert conn.search(slapd.peopleDN, "(uid=user1)", attributes=["uid"])


def test_connectionLimits(slapd: Slapd, startProxy: Any) -> None:
    """max_connections_per_address and max_connections, with real sockets."""
    port = freePort()
    startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\nmax_connections = 3\nmax_connections_per_address = 2\n"
        + backendSection(slapd),
        [port],
    )

    def connect(source: str) -> socket.socket:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        return sock

    a1, a2 = connect("127.0.0.1"), connect("127.0.0.1")
    a3 = connect("127.0.0.1")
    data, _ = readUntilClosed(a3, 5)
    assert isNoticeOfDisconnection(data, ber.BUSY), data
    b1 = connect("127.0.0.2")
    b2 = connect("127.0.0.2")
    data, _ = readUntilClosed(b2, 5)
    assert isNoticeOfDisconnection(data, ber.BUSY) and b"limit of 3" in data, data
    # a closed connection frees its place
    a1.close()
    time.sleep(0.3)
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, auto_bind=True, source_address="127.0.0.2")
    assert conn.search(slapd.peopleDN, "(uid=user1)", attributes=["uid"])
    for sock in (a2, a3, b1, b2):
        sock.close()


def test_allowlist(slapd: Slapd, startProxy: Any) -> None:
    """client_network: other addresses are closed at accept, without a byte."""
    port = freePort()
    startProxy(
        "[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\nclient_network = 127.0.0.2/32\n"
        + backendSection(slapd),
        [port],
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.1", 0)) as sock:
        data, elapsed = readUntilClosed(sock, 5)
    assert data == b"" and elapsed < 1
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, auto_bind=True, source_address="127.0.0.2")
    assert conn.search(slapd.peopleDN, "(uid=user1)", attributes=["uid"])


def test_maxOutstanding(slapd: Slapd, startProxy: Any) -> None:
    """Past max_outstanding, a request is answered busy (51) at once."""
    port = freePort()
    startProxy(
        "[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\nmax_outstanding = 1\n" + backendSection(slapd),
        [port],
    )
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, client_strategy=ldap3.ASYNC, auto_bind=True)
    first = conn.search(slapd.peopleDN, "(objectClass=*)", attributes=["*"], paged_size=None)
    second = conn.search(slapd.peopleDN, "(uid=user1)", attributes=["uid"])
    _, result2 = conn.get_response(second)
    assert result2["result"] == ber.BUSY
    _, result1 = conn.get_response(first, timeout=30)
    assert result1["result"] == 0
    conn.unbind()


def test_allowAnonymousOff(slapd: Slapd, startProxy: Any) -> None:
    """allow_anonymous = off: searches before a bind get 50; after a bind they work."""
    port = freePort()
    startProxy(
        "[ldaproute]\n" f"listen = tcp:{port}:interface=127.0.0.1\nallow_anonymous = off\n"
        "require_tls_for_simple_bind = off\n" + backendSection(slapd),
        [port],
    )
    server = ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, slapd.userDN(71), slapd.userPassword(71))
    conn.open()
    assert not conn.search(slapd.peopleDN, "(uid=user1)")
    assert conn.result["result"] == ber.INSUFFICIENT_ACCESS_RIGHTS
    assert conn.bind()
    assert conn.search(slapd.peopleDN, "(uid=user1)", attributes=["uid"])


def test_certificateReloadedOnSIGHUP(slapd: Slapd, testCA: CA, startProxy: Any, tmp_path: Any) -> None:
    """
    SIGHUP re-reads tls_cert/tls_key: new StartTLS handshakes get the new
    certificate while a session established before keeps working.
    """
    import shutil
    import signal
    import time

    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = makeCert(testCA, str(tmp_path / "first"), ["localhost", "127.0.0.1"], "proxy")
    second = makeCert(testCA, str(tmp_path / "second"), ["localhost", "127.0.0.1"], "proxy")
    live = tmp_path / "live"
    live.mkdir()
    certFile, keyFile = str(live / "cert.pem"), str(live / "key.pem")
    shutil.copy(first.certFile, certFile)
    shutil.copy(first.keyFile, keyFile)
    port = freePort()
    proxy = startProxy(
        "[ldaproute]\n"
        f"listen = tcp:{port}:interface=127.0.0.1\n"
        f"tls_cert = {certFile}\ntls_key = {keyFile}\n" + backendSection(slapd),
        [port],
    )
    assert peerCertAfterStartTLS(port, first.caFile) == certDER(first.certFile)

    tlsConfig = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=first.caFile)
    server = ldap3.Server("localhost", port=port, tls=tlsConfig, get_info=ldap3.NONE)
    before = ldap3.Connection(server, slapd.userDN(21), slapd.userPassword(21))
    before.open()
    assert before.start_tls() and before.bind()

    shutil.copy(second.certFile, certFile)
    shutil.copy(second.keyFile, keyFile)
    proxy.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while peerCertAfterStartTLS(port, second.caFile) != certDER(second.certFile):
        assert time.monotonic() < deadline, "the new certificate was not served after SIGHUP"
        time.sleep(0.1)
    # the session from before the reload carries on over its TLS
    assert before.extend.standard.who_am_i() == "dn:" + slapd.userDN(21)
    before.unbind()
