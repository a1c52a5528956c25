"""
ldaproute in front of a real Active Directory: a Samba 4 AD DC provisioned
by L{tests.samba} on 127.0.0.2, the proxy as a twistd subprocess on
127.0.0.1 (LDAP, Global Catalog and CLDAP listeners), driven by real
clients: ldapsearch, ldbsearch (GSS-SPNEGO/NTLM with sealing), net ads
lookup, and raw CLDAP pings.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests import certs, netlogon
from tests.samba import SambaDC, _need
from tests.slapd import freePort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAIN = "example.test"
#: net ads lookup has no port option (and ignores "cldap port"): it always
#: pings UDP 389, so the proxy gets a second CLDAP endpoint on 389 of its
#: own loopback address for that one test.
NET_ADS_ADDRESS = "127.0.0.3"


def freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def sambaTemplate(tmp_path_factory: pytest.TempPathFactory) -> SambaDC:
    """A provisioned, stopped domain with 2000 extra users, once per run."""
    dc = SambaDC(str(tmp_path_factory.mktemp("samba-template") / "dc"), users=2000)
    dc.provision()
    return dc


@pytest.fixture(scope="module")
def samba(sambaTemplate: SambaDC, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDC]:
    dc = SambaDC(str(tmp_path_factory.mktemp("samba") / "dc"))
    dc.cloneFrom(sambaTemplate)
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


class Proxy:
    """
    The proxy in front of the DC: LDAP and GC listeners with the simple bind
    policy relaxed (loopback cleartext), a C{secure} listener with the
    default policy and StartTLS (terminate) with a certificate from
    L{tests.certs}, and a C{gcs} listener (GC over TLS, like 3269) whose
    pool reaches the DC's 3269 over verified LDAPS.
    """

    def __init__(self, directory: str, samba: SambaDC) -> None:
        self.ldapPort = freePort()
        self.gcPort = freePort()
        self.securePort = freePort()
        self.gcsPort = freePort()
        self.cldapPort = freeUDPPort()
        ca = certs.makeCA(directory)
        self.cert = certs.makeCert(ca, directory, ("localhost", "127.0.0.1"))
        self.config = os.path.join(directory, "routes.ini")
        with open(self.config, "w") as f:
            f.write(f"""
[ldaproute]
listen = tcp:{self.ldapPort}:interface=127.0.0.1
cldap = udp:{self.cldapPort}:interface=127.0.0.1, udp:389:interface={NET_ADS_ADDRESS}
cldap_timeout = 1s
cldap_rate_limit = 200
; the tests bind with passwords over loopback cleartext
require_tls_for_simple_bind = off
[listener:gc]
listen = tcp:{self.gcPort}:interface=127.0.0.1
require_tls_for_simple_bind = off
[listener:secure]
listen = tcp:{self.securePort}:interface=127.0.0.1
; the default policy: require_tls_for_simple_bind = on; StartTLS terminated here
tls_cert = {self.cert.certFile}
tls_key = {self.cert.keyFile}
[listener:gcs]
listen = ssl:{self.gcsPort}:interface=127.0.0.1:privateKey={self.cert.keyFile}:certKey={self.cert.certFile}
[backend:dc1]
url = ldap://{samba.address}:389
[backend:dc1-gc]
url = ldap://{samba.address}:3268
[backend:dc1-gcs]
url = ldaps://{samba.address}:3269
tls = ldaps
ca_file = {samba.caFile}
server_name = {samba.hostName}.{samba.dnsDomain}
[pool:ad]
backends = dc1
[pool:gc]
backends = dc1-gc
[pool:gcs]
backends = dc1-gcs
[route:gc]
listener = gc
pool = gc
[route:gcs]
listener = gcs
pool = gcs
[route:all]
pool = ad
""")
        self.log = os.path.join(directory, "proxy.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "twisted", "ldaproute", "-c", self.config],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self.process.returncode}:\n{self.logText()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.ldapPort), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the proxy did not listen in 20 s:\n{self.logText()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def logText(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()


@pytest.fixture(scope="module")
def proxy(samba: SambaDC, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    instance = Proxy(str(tmp_path_factory.mktemp("proxy")), samba)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def ldapsearch(
    samba: SambaDC,
    url: str,
    *args: str,
    check: bool = True,
    bindDN: str | None = None,
    password: str | None = None,
    caFile: str | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [
        _need("ldapsearch"), "-x", "-H", url, "-D", bindDN or samba.adminPrincipal,
        "-w", samba.adminPassword if password is None else password, *args,
    ]
    env = samba.clientEnv()
    if caFile is not None:
        env["LDAPTLS_CACERT"] = caFile
        env.pop("LDAPNOINIT", None)  # it would make libldap ignore LDAPTLS_* too
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


# --- CLDAP -------------------------------------------------------------------------


def test_cldapPingAnsweredAsTheDCAnswers(samba: SambaDC, proxy: Proxy) -> None:
    for ntVersion in (0x16, 0x6, 0x1E):
        directMessages, directRaw, _ = netlogon.ping((samba.address, 389), DOMAIN, 4242, ntVersion)
        proxiedMessages, proxiedRaw, _ = netlogon.ping(("127.0.0.1", proxy.cldapPort), DOMAIN, 4242, ntVersion)
        assert [m.id for m in proxiedMessages] == [4242, 4242]
        assert [type(m.value) for m in proxiedMessages] == [type(m.value) for m in directMessages]
        assert proxiedMessages[-1].value.resultCode == 0
        direct = netlogon.decodeNetlogon(netlogon.netlogonOf(directMessages), ntVersion)
        proxied = netlogon.decodeNetlogon(netlogon.netlogonOf(proxiedMessages), ntVersion)
        assert proxied["DnsDomainName"] == DOMAIN and proxied["NetbiosComputerName"] == "DC1"
        for field, value in direct.items():
            assert proxied[field] == value, field
        assert proxiedRaw == directRaw


def test_cldapRoundTrip(samba: SambaDC, proxy: Proxy) -> None:
    """Round trip, median of 200 pings each way (printed for the report)."""
    direct = [netlogon.ping((samba.address, 389), DOMAIN, i + 1)[2] for i in range(200)]
    proxied = [netlogon.ping(("127.0.0.1", proxy.cldapPort), DOMAIN, i + 1)[2] for i in range(200)]
    directMs, proxiedMs = statistics.median(direct) * 1000, statistics.median(proxied) * 1000
    print(f"\nCLDAP ping round trip, median of 200: direct {directMs:.3f} ms, through the proxy {proxiedMs:.3f} ms")
    assert proxiedMs < directMs + 20


def test_netAdsLookupThroughTheProxy(samba: SambaDC, proxy: Proxy) -> None:
    conf = os.path.join(os.path.dirname(proxy.config), "client.conf")
    with open(conf, "w") as f:
        f.write(f"[global]\n\trealm = {samba.realm}\n\tworkgroup = {samba.domain}\n")
    result = subprocess.run(
        [_need("net"), "ads", "lookup", "-s", conf, "-S", NET_ADS_ADDRESS, f"--realm={samba.realm}"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, (result.stdout, result.stderr, proxy.logText()[-2000:])
    assert "Response Type: LOGON_SAM_LOGON_RESPONSE_EX" in result.stdout
    assert "Domain Controller: dc1.example.test" in result.stdout


def test_cldapAbuseGetsNoReply(samba: SambaDC, proxy: Proxy) -> None:
    """
    Malformed datagrams get no reply (dropped and counted in the relay,
    see tests/test_cldap.py for the counts); a flood beyond the rate limit
    gets at most the limit's worth of replies; good pings still work.
    """
    bad = [b"\x00", b"GET / HTTP/1.0\r\n\r\n", b"\x30\x84\xff\xff\xff\xff", netlogon.pingRequest(5, DOMAIN)[:-3],
           b"\x30\x03\x02\x01\x01", b"\x30" * 200]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for datagram in bad * 10:
            s.sendto(datagram, ("127.0.0.1", proxy.cldapPort))
        with pytest.raises(socket.timeout):
            s.recvfrom(65535)
        # flood: 600 pings at once from one source; limit 200/s, burst 200
        for i in range(600):
            s.sendto(netlogon.pingRequest(i + 1, DOMAIN), ("127.0.0.1", proxy.cldapPort))
        replies = 0
        try:
            while True:
                s.recvfrom(65535)
                replies += 1
        except socket.timeout:
            pass
    print(f"\nCLDAP abuse: {len(bad) * 10} malformed datagrams, 0 replies; "
          f"flood of 600 pings, {replies} replies, {600 - replies} dropped")
    assert replies <= 260
    time.sleep(1.0)
    messages, _, _ = netlogon.ping(("127.0.0.1", proxy.cldapPort), DOMAIN, 99)
    assert messages[-1].value.resultCode == 0


# --- LDAP habits ------------------------------------------------------------------------


def test_globalCatalogForestWideSearch(samba: SambaDC, proxy: Proxy) -> None:
    args = ("-b", "", "-LLL", "(sAMAccountName=alice)", "dn", "sAMAccountName")
    direct = ldapsearch(samba, f"ldap://{samba.address}:3268", *args).stdout
    proxied = ldapsearch(samba, f"ldap://127.0.0.1:{proxy.gcPort}", *args).stdout
    assert f"dn: CN=alice,CN=Users,{samba.baseDN}" in proxied
    assert proxied == direct
    # the same base "" search on the domain port is not forest-wide
    domain = ldapsearch(samba, f"ldap://127.0.0.1:{proxy.ldapPort}", *args, check=False)
    assert "CN=alice" not in domain.stdout


def test_pagedResultsThousandsOfUsers(samba: SambaDC, proxy: Proxy) -> None:
    args = ("-b", f"CN=Users,{samba.baseDN}", "-E", "pr=100/noprompt", "(sAMAccountName=user*)", "dn")
    proxied = ldapsearch(samba, f"ldap://127.0.0.1:{proxy.ldapPort}", *args).stdout
    direct = ldapsearch(samba, f"ldap://{samba.address}", *args).stdout
    assert proxied.count("\ndn: ") == 2000
    assert "# numResponses: 2021" in proxied  # 2000 entries in 21 pages of 100 (last empty)
    assert proxied == direct


def test_continuationReferencesRelayedIntact(samba: SambaDC, proxy: Proxy) -> None:
    args = ("-b", samba.baseDN, "-s", "one", "(objectClass=*)", "dn")
    proxied = ldapsearch(samba, f"ldap://127.0.0.1:{proxy.ldapPort}", *args).stdout
    direct = ldapsearch(samba, f"ldap://{samba.address}", *args).stdout
    assert f"ref: ldap://{DOMAIN}/CN=Configuration,{samba.baseDN}" in proxied
    assert proxied == direct


def test_sealedSASLSessionRelayedOpaquely(samba: SambaDC, proxy: Proxy) -> None:
    """
    ldbsearch binds with GSS-SPNEGO (NTLMSSP; Kerberos off) and seals the
    session; the proxy must pin it and relay SASL buffers untouched.
    """
    argv = [
        _need("ldbsearch"), "-H", f"ldap://127.0.0.1:{proxy.ldapPort}",
        "-U", f"Administrator%{samba.adminPassword}", f"--configfile={samba.confPath}",
        "--use-kerberos=disabled", "--option=client ldap sasl wrapping=seal",
        "-b", samba.baseDN, "(|(sAMAccountName=alice)(sAMAccountName=user1999))", "sAMAccountName",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "sAMAccountName: alice" in result.stdout and "sAMAccountName: user1999" in result.stdout
    log = proxy.logText()  # JSON lines: the event's format and fields
    assert "negotiated a SASL security layer" in log and '"mechanism": "GSS-SPNEGO"' in log


# --- simple bind policy, GC over TLS, TLS closure, Notice of Disconnection ---------------


def ldapmodify(samba: SambaDC, ldif: str) -> None:
    """Apply C{ldif} on the DC directly, as Administrator."""
    argv = [_need("ldapmodify"), "-x", "-H", samba.url, "-D", samba.adminPrincipal, "-w", samba.adminPassword]
    result = subprocess.run(argv, input=ldif, capture_output=True, text=True, timeout=60, env=samba.clientEnv())
    assert result.returncode == 0, result.stderr


def badPwdCount(samba: SambaDC, dn: str) -> int:
    """The account's badPwdCount, read on the DC directly, as Administrator."""
    out = ldapsearch(samba, samba.url, "-b", dn, "-s", "base", "-LLL", "badPwdCount").stdout
    for line in out.splitlines():
        if line.startswith("badPwdCount: "):
            return int(line.split(": ", 1)[1])
    return 0


def test_cleartextSimpleBindRefusedBeforeTheDC(samba: SambaDC, proxy: Proxy) -> None:
    """
    With the default policy a cleartext simple bind gets
    confidentialityRequired (13) from the proxy and the DC never sees it
    (badPwdCount unchanged); the same bind after StartTLS reaches the DC.
    """
    # Samba counts bad passwords only while a lockout threshold is set
    ldapmodify(samba, f"dn: {samba.baseDN}\nchangetype: modify\nreplace: lockoutThreshold\nlockoutThreshold: 100\n")
    alice = f"CN=alice,CN=Users,{samba.baseDN}"
    wrongPassword, rightPassword = "Wr0ng!Guess-7", "Alice!Passw0rd"
    url = f"ldap://127.0.0.1:{proxy.securePort}"
    rootDSE = ("-b", "", "-s", "base", "-LLL", "dnsHostName")
    # the DC counts a wrong password sent to it directly (the check works)
    before = badPwdCount(samba, alice)
    direct = ldapsearch(samba, samba.url, *rootDSE, check=False, bindDN=alice, password=wrongPassword)
    assert direct.returncode == 49, direct.stderr
    assert badPwdCount(samba, alice) == before + 1
    before += 1

    for password in (wrongPassword, rightPassword):
        refused = ldapsearch(samba, url, *rootDSE, check=False, bindDN=alice, password=password)
        assert refused.returncode == 13, (refused.stdout, refused.stderr)
        assert "Confidentiality required (13)" in refused.stderr
        assert "needs TLS here: use StartTLS or ldaps" in refused.stderr
    assert badPwdCount(samba, alice) == before  # never reached the DC

    wrong = ldapsearch(samba, url, "-ZZ", *rootDSE, check=False, bindDN=alice, password=wrongPassword,
                       caFile=proxy.cert.caFile)
    assert wrong.returncode == 49, (wrong.stdout, wrong.stderr)
    assert badPwdCount(samba, alice) == before + 1  # reached the DC
    right = ldapsearch(samba, url, "-ZZ", "-b", samba.baseDN, "-LLL", "(sAMAccountName=alice)", "sAMAccountName",
                       bindDN=alice, password=rightPassword, caFile=proxy.cert.caFile)
    assert "sAMAccountName: alice" in right.stdout
    assert badPwdCount(samba, alice) == 0  # a good bind resets it on AD
    log = proxy.logText()
    events = [json.loads(line) for line in log.replace("\x1e", "\n").splitlines() if line.startswith("{")]
    refusals = [e for e in events if e.get("log_format", "").startswith("cleartext {kind} refused")]
    assert [(e["kind"], e["resultCode"], e["bindDN"]) for e in refusals] == [("simple bind", 13, alice)] * 2
    assert wrongPassword not in log and rightPassword not in log


def test_globalCatalogOverTLS(samba: SambaDC, proxy: Proxy) -> None:
    """
    An ssl: listener (as 3269) routed to the DC's 3269 over LDAPS verified
    against the DC's CA and name: a forest-wide search with base "" answers
    as the DC's GC does, directly on 3268 and on 3269.
    """
    args = ("-b", "", "-LLL", "(objectClass=user)", "dn", "sAMAccountName")
    direct = ldapsearch(samba, f"ldap://{samba.address}:3268", *args).stdout
    directTLS = ldapsearch(samba, f"ldaps://{samba.address}:3269", *args, caFile=samba.caFile).stdout
    proxied = ldapsearch(samba, f"ldaps://127.0.0.1:{proxy.gcsPort}", *args, caFile=proxy.cert.caFile).stdout
    assert f"dn: CN=alice,CN=Users,{samba.baseDN}" in proxied
    assert proxied.count("\ndn: ") >= 2000
    assert proxied == direct == directTLS
    # a client that does not trust the proxy's CA is refused by the client library
    untrusting = ldapsearch(samba, f"ldaps://127.0.0.1:{proxy.gcsPort}", *args, check=False, caFile=samba.caFile)
    assert untrusting.returncode != 0


class _LDAPStream:
    """Blocking LDAP over a socket (plain or TLS): send PDUs, read until a final response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def call(self, request: bytes, messageID: int) -> list:  # type: ignore[type-arg]
        from ldaproute.wire import ber
        from tests import pdus

        self.sock.sendall(request)
        messages = []
        while True:
            for pdu in ber.Framer(1 << 24).feed(self._read()):
                message = pdus.decode(pdu)[0]
                messages.append(message)
                if message.id == messageID and type(message.value).__name__ != "LDAPSearchResultEntry":
                    return messages

    def _read(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError("connection closed")
        return data


def test_cleartextUnbindAfterTLSClosure(samba: SambaDC, proxy: Proxy) -> None:
    """
    StartTLS (terminate), a bind and a search inside TLS, then the client
    removes TLS (close_notify, RFC 4511 4.14.3) and sends a cleartext
    Unbind, as some AD clients do.  The proxy answers the close_notify with
    its own and closes the connection (it does not carry a bound session
    on in cleartext): no protocol error, no traceback.
    """
    import ssl

    from ldaptor.protocols import pureldap

    from ldaproute.wire import ber
    from ldaproute.wire.pdu import startTLSRequest
    from tests import pdus

    logBefore = len(proxy.logText())
    plain = socket.create_connection(("127.0.0.1", proxy.securePort), timeout=10)
    [answer] = _LDAPStream(plain).call(startTLSRequest(1), 1)
    assert answer.value.resultCode == 0
    context = ssl.create_default_context(cafile=proxy.cert.caFile)
    tls = context.wrap_socket(plain, server_hostname="127.0.0.1")
    stream = _LDAPStream(tls)
    [bound] = stream.call(pdus.bind(samba.adminDN, samba.adminPassword, 2), 2)
    assert bound.value.resultCode == 0
    found = stream.call(pdus.search(samba.baseDN, 3, scope=pureldap.LDAP_SCOPE_baseObject), 3)
    assert [type(m.value).__name__ for m in found] == ["LDAPSearchResultEntry", "LDAPSearchResultDone"]
    assert found[-1].value.resultCode == 0
    started = time.monotonic()
    plain = tls.unwrap()  # our close_notify, and the proxy's in return
    unwrapMs = (time.monotonic() - started) * 1000
    try:
        plain.sendall(ber.unbindRequest(4))
        rest = plain.recv(65536)
    except ConnectionResetError:
        rest = b""  # the proxy had closed: the kernel refused the late Unbind
    finally:
        plain.close()
    assert rest == b""  # nothing after the close_notify: no Notice of Disconnection
    print(f"\nTLS closure: the proxy answered close_notify in {unwrapMs:.1f} ms")
    deadline = time.monotonic() + 5
    while "removed TLS" not in proxy.logText()[logBefore:] and time.monotonic() < deadline:
        time.sleep(0.05)
    log = proxy.logText()[logBefore:]
    assert "removed TLS" in log
    for bad in ("Protocol error", "Traceback", "Unhandled", '"log_level": {"name": "warn"',
                '"log_level": {"name": "error"', '"log_level": {"name": "critical"'):
        assert bad not in log, log

