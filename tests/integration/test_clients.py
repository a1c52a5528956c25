"""
Real LDAP clients through the proxy give the same answers as directly against
slapd: the OpenLDAP command-line tools and ldap3, every operation, controls,
referrals, SASL, paged and 10,000-entry results.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import ldap3
import pytest
from ldaptor.protocols import pureldap

from tests import pdus
from tests.integration.proxy import ProxyProcess, singleBackendConfig, waitForPort
from tests.slapd import Slapd, SlapdFactory


@pytest.fixture(scope="module")
def proxy(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    process = ProxyProcess(str(tmp_path_factory.mktemp("proxy")), singleBackendConfig(slapd.url)).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


def run(slapd: Slapd, program: str, url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program, "-H", url, *args], capture_output=True, text=True, env=slapd.clientEnv(), timeout=60, input=input
    )


def assertSame(slapd: Slapd, proxy: ProxyProcess, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a client against slapd and through the proxy; everything it prints must match."""
    direct = run(slapd, program, slapd.url, *args)
    proxied = run(slapd, program, proxy.url, *args)
    assert (proxied.returncode, proxied.stdout, proxied.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    return proxied


def entries(output: str) -> int:
    return sum(1 for line in output.splitlines() if line.startswith("dn:"))


READS = {
    "whoami-anonymous": ("ldapwhoami", "-x"),
    "rootDSE": ("ldapsearch", "-x", "-b", "", "-s", "base", "+", "*"),
    "base": ("ldapsearch", "-x", "-b", "{suffix}", "-s", "base"),
    "one": ("ldapsearch", "-x", "-b", "{suffix}", "-s", "one"),
    "sub-filter": ("ldapsearch", "-x", "-b", "{people}", "-s", "sub", "(&(uid=user1*)(objectClass=person))", "cn", "mail"),
    "children": ("ldapsearch", "-x", "-b", "{groups}", "-s", "children", "member"),
    "paged": ("ldapsearch", "-x", "-LLL", "-b", "{suffix}", "-E", "pr=100/noprompt", "(objectClass=*)", "dn"),
    "continuation-references": ("ldapsearch", "-x", "-b", "{suffix}", "-s", "one", "(objectClass=*)", "dn"),
    "referral": ("ldapsearch", "-x", "-b", "{referral}", "-s", "base"),
    "manageDSAit-control": ("ldapsearch", "-x", "-M", "-b", "{referral}", "-s", "base"),
    "unsupported-critical-control": ("ldapsearch", "-x", "-b", "{people}", "-E", "!sss=uid", "(uid=user1)"),
    "noSuchObject": ("ldapsearch", "-x", "-b", "ou=missing,{suffix}"),
    "sizeLimit": ("ldapsearch", "-x", "-z", "5", "-b", "{people}", "(uid=*)", "dn"),
    "compare-true": ("ldapcompare", "-x", "{user3}", "uid:user3"),
    "compare-false": ("ldapcompare", "-x", "{user3}", "uid:user4"),
    "simple-bind": ("ldapwhoami", "-x", "-D", "{user5}", "-w", "pass5"),
    "wrong-password": ("ldapwhoami", "-x", "-D", "{user5}", "-w", "wrong"),
    "bound-search": ("ldapsearch", "-x", "-D", "cn=admin,{suffix}", "-w", "secret", "-b", "{user5}", "-s", "base", "userPassword"),
    "sasl-digest-md5": ("ldapwhoami", "-Y", "DIGEST-MD5", "-U", "sasluser", "-w", "saslpass", "-Q"),
    "sasl-scram-sha-1": ("ldapwhoami", "-Y", "SCRAM-SHA-1", "-U", "sasluser", "-w", "saslpass", "-Q"),
    "exop-whoami": ("ldapexop", "-x", "-D", "{user7}", "-w", "pass7", "whoami"),
    "exop-unknown": ("ldapexop", "-x", "1.2.3.4.5"),
}


@pytest.mark.parametrize("case", sorted(READS))
def test_readsMatchDirect(slapd: Slapd, proxy: ProxyProcess, case: str) -> None:
    program, *args = READS[case]
    names = {
        "suffix": slapd.suffix,
        "people": slapd.peopleDN,
        "groups": slapd.groupsDN,
        "referral": slapd.referralDN,
        "user3": slapd.userDN(3),
        "user5": slapd.userDN(5),
        "user7": slapd.userDN(7),
    }
    result = assertSame(slapd, proxy, program, *[arg.format(**names) for arg in args])
    if case == "paged":
        assert entries(result.stdout) > 2000
    if case == "continuation-references":
        assert "ref: ldap://other.example.com/ou=elsewhere" in result.stdout
    if case == "referral":
        assert result.returncode == 10 and "ldap://other.example.com/" in result.stdout
    if case.startswith("sasl"):
        assert result.returncode == 0 and "uid=sasluser" in result.stdout


def test_writes(slapd: Slapd, proxy: ProxyProcess) -> None:
    """ldapadd, ldapmodify, ldapmodrdn, ldappasswd, ldapdelete through the proxy change slapd."""
    admin = ("-x", "-D", slapd.rootDN, "-w", slapd.rootPW)
    dn = f"uid=newcomer,{slapd.peopleDN}"
    ldif = f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: newcomer\ncn: New Comer\nsn: Comer\n"
    added = run(slapd, "ldapadd", proxy.url, *admin, input=ldif)
    assert added.returncode == 0, added.stderr
    # the same add again fails the same way through the proxy and directly
    again = [run(slapd, "ldapadd", url, *admin, input=ldif) for url in (proxy.url, slapd.url)]
    assert again[0].returncode == again[1].returncode == 68
    assert again[0].stderr == again[1].stderr

    modify = f"dn: {dn}\nchangetype: modify\nreplace: description\ndescription: changed through ldaproute\n"
    assert run(slapd, "ldapmodify", proxy.url, *admin, input=modify).returncode == 0
    seen = run(slapd, "ldapsearch", slapd.url, "-x", "-LLL", "-b", dn, "-s", "base", "description")
    assert "description: changed through ldaproute" in seen.stdout

    password = run(slapd, "ldappasswd", proxy.url, *admin, "-s", "n3w-secret", dn)
    assert password.returncode == 0, password.stderr
    assert run(slapd, "ldapwhoami", slapd.url, "-x", "-D", dn, "-w", "n3w-secret").returncode == 0

    renamed = f"uid=renamed,{slapd.peopleDN}"
    assert run(slapd, "ldapmodrdn", proxy.url, *admin, "-r", dn, "uid=renamed").returncode == 0
    assert run(slapd, "ldapsearch", slapd.url, "-x", "-b", renamed, "-s", "base").returncode == 0

    assert run(slapd, "ldapdelete", proxy.url, *admin, renamed).returncode == 0
    assert run(slapd, "ldapsearch", slapd.url, "-x", "-b", renamed, "-s", "base").returncode == 32


def test_ldap3MatchesDirect(slapd: Slapd, proxy: ProxyProcess) -> None:
    """A second client library, its own codec: paged search, bind, compare, modify."""

    def session(url: str) -> tuple[list[tuple[str, dict[str, list[str]]]], bool, str]:
        connection = ldap3.Connection(ldap3.Server(url), slapd.userDN(9), slapd.userPassword(9), auto_bind=True)
        found = connection.extend.standard.paged_search(
            slapd.peopleDN, "(uid=user1*)", attributes=["cn", "mail"], paged_size=50, generator=False
        )
        result = [(entry["dn"], dict(entry["attributes"])) for entry in found]
        same = connection.compare(slapd.userDN(9), "uid", "user9")
        whoami = connection.extend.standard.who_am_i()
        connection.unbind()
        return result, same, whoami

    direct = session(slapd.url)
    proxied = session(proxy.url)
    assert proxied == direct
    assert len(direct[0]) == 1111


def test_tenThousandEntries(slapdFactory: SlapdFactory, tmp_path: object) -> None:
    big = slapdFactory(entries=10500)
    process = ProxyProcess(str(tmp_path), singleBackendConfig(big.url)).start()
    try:
        result = assertSame(big, process, "ldapsearch", "-x", "-LLL", "-b", big.peopleDN, "(objectClass=person)")
        assert entries(result.stdout) == 10500
    finally:
        assert process.stop() == 0


def _search(sock: socket.socket, messageID: int, base: str) -> None:
    """A base-scope search: one entry and a SearchResultDone."""
    sock.sendall(pdus.search(base, messageID=messageID, scope=pureldap.LDAP_SCOPE_baseObject))


def _readMessages(sock: socket.socket, count: int, timeout: float = 10.0) -> list[pureldap.LDAPMessage]:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            return _complete(data, count)
        except _NeedMore:
            chunk = sock.recv(65536)
            if not chunk:
                return _complete(data, 0)
            data += chunk


class _NeedMore(Exception):
    pass


def _complete(data: bytes, count: int) -> list[pureldap.LDAPMessage]:
    from ldaproute.wire import ber

    framed = ber.Framer(10**8).feed(data)
    if len(framed) < count:
        raise _NeedMore()
    return pdus.decode(b"".join(framed))


def test_backendKilledWithOperationOutstanding(slapdFactory: SlapdFactory, tmp_path: object) -> None:
    """
    slapd is frozen (SIGSTOP) so the searches stay outstanding, then killed
    and restarted on the same port: the searches, which had no answer yet,
    go out again once it accepts, and the client gets each complete answer
    once, with no error.
    """
    backend = slapdFactory(entries=10)
    process = ProxyProcess(str(tmp_path), singleBackendConfig(backend.url)).start()
    try:
        with socket.create_connection(("127.0.0.1", process.port)) as sock:
            _search(sock, 1, backend.suffix)
            direct = _readMessages(sock, 2)
            assert direct[-1].value.resultCode == 0
            backend.pause()
            _search(sock, 2, backend.suffix)
            _search(sock, 3, backend.peopleDN)
            time.sleep(0.3)
            backend.kill()
            backend.start()
            answers = _readMessages(sock, 2 * (len(direct) - 1) + 2)
            done = sorted((m.id, m.value.resultCode) for m in answers if type(m.value).__name__ == "LDAPSearchResultDone")
            assert done == [(2, 0), (3, 0)]
            entries = [m.id for m in answers if type(m.value).__name__ == "LDAPSearchResultEntry"]
            assert entries.count(2) == len(direct) - 1  # every entry once: none lost, none twice
            _search(sock, 4, backend.suffix)
            done = _readMessages(sock, 2)[-1]
            assert (done.id, done.value.resultCode) == (4, 0)
        assert "sent again on a new connection" in process.log()
    except BaseException:
        print(process.log())  # shown by pytest on failure
        raise
    finally:
        assert process.stop() == 0


def test_backendGoneLongerThanTheBudget(slapdFactory: SlapdFactory, tmp_path: object) -> None:
    """
    slapd killed and not restarted within the retry budget (1s here): the
    client is told with a Notice of Disconnection (the default
    on_backend_unavailable), as a directory that went away would.
    """
    backend = slapdFactory(entries=3)
    config = singleBackendConfig(backend.url).replace("backends = slapd\n", "backends = slapd\nretry_budget = 1s\n")
    process = ProxyProcess(str(tmp_path), config).start()
    try:
        with socket.create_connection(("127.0.0.1", process.port)) as sock:
            _search(sock, 1, backend.suffix)
            assert _readMessages(sock, 2)[-1].value.resultCode == 0
            backend.kill()
            started = time.monotonic()
            _search(sock, 2, backend.suffix)
            [notice] = _readMessages(sock, 1)
            waited = time.monotonic() - started
            assert (notice.id, notice.value.resultCode) == (0, 52)
            assert b"retry_budget of 1s" in notice.value.errorMessage
            assert 0.9 < waited < 3.0
            sock.settimeout(5)
            assert sock.recv(100) == b""  # then closed
    except BaseException:
        print(process.log())  # shown by pytest on failure
        raise
    finally:
        backend.start()
        assert process.stop() == 0


def test_backendDownAnswersUnavailable(tmp_path: object, freePort: object) -> None:
    """With on_backend_unavailable = answer, a backend down for the whole budget gets ldapwhoami a 52."""
    port = freePort()  # type: ignore[operator]
    config = singleBackendConfig(f"ldap://127.0.0.1:{port}", "on_backend_unavailable = answer\n").replace(
        "backends = slapd\n", "backends = slapd\nretry_budget = 1s\n"
    )
    process = ProxyProcess(str(tmp_path), config).start()
    try:
        result = subprocess.run(
            ["ldapwhoami", "-x", "-H", process.url], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 52
        assert "no backend of pool 'main' is reachable (tried: slapd)" in result.stderr
        assert "retry_budget of 1s" in result.stderr
    finally:
        assert process.stop() == 0


def test_garbageGetsNoticeAndOthersAreServed(slapd: Slapd, proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as other:
        _search(other, 1, slapd.suffix)
        assert _readMessages(other, 2)[-1].value.resultCode == 0
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: ldap.example.com\r\n\r\n")
            [notice] = _readMessages(sock, 1)
            assert (notice.id, notice.value.resultCode) == (0, 2)
            assert sock.recv(100) == b""  # closed
        _search(other, 2, slapd.suffix)
        assert _readMessages(other, 2)[-1].value.resultCode == 0
    assert proxy.log().count("Protocol error from") >= 1


def test_clientDisconnectClosesUpstream(slapd: Slapd, proxy: ProxyProcess) -> None:
    before = sum(1 for line in slapd.logLines() if " closed" in line)
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        _search(sock, 1, slapd.suffix)
        _readMessages(sock, 2)
    deadline = time.monotonic() + 10
    while sum(1 for line in slapd.logLines() if " closed" in line) <= before:
        assert time.monotonic() < deadline, "slapd never saw the upstream connection close"
        time.sleep(0.05)


def test_noCredentialInLogs(slapd: Slapd, proxy: ProxyProcess) -> None:
    run(slapd, "ldapwhoami", proxy.url, "-x", "-D", slapd.userDN(11), "-w", "pass11")
    run(slapd, "ldapwhoami", proxy.url, "-x", "-D", slapd.userDN(11), "-w", "Wr0ngPassw0rd")
    log = proxy.log()
    assert "pass11" not in log and "Wr0ngPassw0rd" not in log and "saslpass" not in log


def test_installedTwistdPlugin(slapd: Slapd, tmp_path: object) -> None:
    """
    The installed package: ``twistd --help`` lists the plugin and
    ``twistd -n ldaproute -c`` serves, then exits 0 on SIGTERM.  (The README's
    test command installs the checkout with pip first.)
    """
    twistd = shutil.which("twistd")
    assert twistd is not None, "twistd is not on PATH: install the package (pip install .)"
    outside = str(tmp_path)  # run outside the checkout so only the installed plugin can be found
    listed = subprocess.run([twistd, "--help"], capture_output=True, text=True, cwd=outside, timeout=60)
    assert "ldaproute" in listed.stdout, "the installed twisted/plugins/ldaproute_plugin.py was not found"
    helpText = subprocess.run([twistd, "-n", "ldaproute", "--help"], capture_output=True, text=True, cwd=outside, timeout=60)
    assert "--config=" in helpText.stdout and "--demo" in helpText.stdout
    process = ProxyProcess(outside, singleBackendConfig(slapd.url), command=[twistd, "-n", "--pidfile=", "ldaproute"])
    process.start()
    try:
        result = run(slapd, "ldapwhoami", process.url, "-x", "-D", slapd.userDN(2), "-w", "pass2")
        assert result.stdout.strip() == "dn:" + slapd.userDN(2)
    finally:
        assert process.stop() == 0, process.log()
