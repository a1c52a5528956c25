# -*- test-case-name: tests.integration.test_slapd_fixture -*-
"""
Tests for the slapd fixtures themselves, checked with OpenLDAP's own clients
(not our codec): data set, binds (simple, SASL), referrals, TLS, access log,
kill and restart.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.certs import CA, makeCert
from tests.integration.conftest import SlapdFactory
from tests.slapd import Slapd, SlapdNotFound


def run(
    instance: Slapd, program: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run an OpenLDAP client against C{instance}'s environment (CA trusted).
    """
    return subprocess.run(
        [program, *args],
        capture_output=True,
        text=True,
        env=instance.clientEnv() if env is None else env,
        timeout=30,
    )


def countDNs(output: str) -> int:
    return sum(1 for line in output.splitlines() if line.startswith("dn:"))


def test_userCount(slapd: Slapd) -> None:
    """
    All 2000 users come back from one search with paged results (500 a
    page): sizelimit is unlimited and the paged results control works.
    """
    result = run(
        slapd, "ldapsearch", "-x", "-LLL", "-H", slapd.url, "-b", slapd.peopleDN,
        "-E", "pr=500/noprompt", "(objectClass=inetOrgPerson)", "dn",
    )
    assert result.returncode == 0, result.stderr
    assert countDNs(result.stdout) == 2000


def test_simpleBind(slapd: Slapd) -> None:
    result = run(
        slapd, "ldapwhoami", "-x", "-H", slapd.url, "-D", slapd.userDN(1234),
        "-w", slapd.userPassword(1234),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dn:" + slapd.userDN(1234)


def test_wrongPassword(slapd: Slapd) -> None:
    result = run(slapd, "ldapwhoami", "-x", "-H", slapd.url, "-D", slapd.userDN(1), "-w", "nope")
    assert result.returncode == 49, result.stderr


def test_rootBind(slapd: Slapd) -> None:
    result = run(slapd, "ldapwhoami", "-x", "-H", slapd.url, "-D", slapd.rootDN, "-w", slapd.rootPW)
    assert result.returncode == 0, result.stderr


def test_groups(slapd: Slapd) -> None:
    """
    group0 holds every fourth user; admins holds user0 and user1.
    """
    result = run(
        slapd, "ldapsearch", "-x", "-LLL", "-H", slapd.url, "-b", slapd.groupDN(0),
        "-s", "base", "member",
    )
    assert result.returncode == 0, result.stderr
    members = [line for line in result.stdout.splitlines() if line.startswith("member:")]
    assert len(members) == 500
    assert f"member: {slapd.userDN(4)}" in members
    result = run(
        slapd, "ldapsearch", "-x", "-LLL", "-H", slapd.url, "-b", slapd.groupsDN,
        f"(member={slapd.userDN(1)})", "cn",
    )
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("cn:")) == [
        "cn: admins", "cn: group1",
    ]


@pytest.mark.parametrize("mechanism", ["DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_saslBind(slapd: Slapd, mechanism: str) -> None:
    """
    A multi-step SASL bind over plain ldap:// maps to the SASL user's entry,
    with no security layer (SSF 0), so the stream stays plain LDAP.
    """
    result = run(
        slapd, "ldapwhoami", "-Y", mechanism, "-U", slapd.saslUser, "-w", slapd.saslPassword,
        "-H", slapd.url,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dn:" + slapd.saslUserDN
    assert "SASL SSF: 0" in result.stderr


def test_saslWrongPassword(slapd: Slapd) -> None:
    result = run(
        slapd, "ldapwhoami", "-Y", "DIGEST-MD5", "-U", slapd.saslUser, "-w", "wrong",
        "-H", slapd.url,
    )
    assert result.returncode == 49, result.stderr


def test_referralOnBaseSearch(slapd: Slapd) -> None:
    """
    A base search on the referral entry is answered with referral (10) and
    the entry's ref URL.
    """
    result = run(slapd, "ldapsearch", "-x", "-H", slapd.url, "-b", slapd.referralDN, "-s", "base")
    assert result.returncode == 10, result.stderr
    assert "result: 10 Referral" in result.stdout
    assert f"ref: {slapd.referralURL}" in result.stdout


def test_searchContinuationReference(slapd: Slapd) -> None:
    result = run(slapd, "ldapsearch", "-x", "-H", slapd.url, "-b", slapd.suffix, "-s", "one")
    assert result.returncode == 0, result.stderr
    assert "# numReferences: 1" in result.stdout
    assert f"ref: {slapd.referralURL}" in result.stdout


def test_startTLS(slapd: Slapd) -> None:
    assert slapd.caFile is not None
    env = dict(slapd.clientEnv(), LDAPTLS_CACERT=slapd.caFile)
    result = run(
        slapd, "ldapwhoami", "-x", "-ZZ", "-H", slapd.url, "-D", slapd.userDN(7),
        "-w", slapd.userPassword(7), env=env,
    )
    assert result.returncode == 0, result.stderr
    assert any("TLS established" in line for line in slapd.logLines())


def test_startTLSUntrusted(slapd: Slapd, tmp_path: os.PathLike[str]) -> None:
    """
    Without our CA the client refuses the certificate: verification is real.
    """
    env = slapd.clientEnv()
    env.pop("LDAPTLS_CACERT")
    env["LDAPTLS_CACERTDIR"] = str(tmp_path)
    result = run(slapd, "ldapwhoami", "-x", "-ZZ", "-H", slapd.url, env=env)
    assert result.returncode != 0


def test_ldaps(slapd: Slapd) -> None:
    assert slapd.ldapsURL is not None
    result = run(
        slapd, "ldapwhoami", "-x", "-H", slapd.ldapsURL, "-D", slapd.userDN(8),
        "-w", slapd.userPassword(8),
    )
    assert result.returncode == 0, result.stderr


def test_accessLog(slapd: Slapd) -> None:
    """
    With accessLog, each operation that reached slapd is in logLines().
    """
    marker = "marker-" + uuid.uuid4().hex
    run(slapd, "ldapsearch", "-x", "-H", slapd.url, "-b", slapd.suffix, f"(description={marker})")
    assert any("SRCH" in line and marker in line for line in slapd.logLines())


def test_killAndRestart(slapdFactory: SlapdFactory) -> None:
    """
    kill() is a SIGKILL that leaves nothing listening; start() brings the
    same data back on the same port; restart() replaces the process.
    """
    instance = slapdFactory(entries=10)
    firstPID = instance.pid
    assert firstPID is not None
    instance.kill()
    assert instance.pid is None
    result = run(instance, "ldapwhoami", "-x", "-H", instance.url, "-o", "nettimeout=2")
    assert result.returncode != 0
    instance.start()
    assert instance.pid not in (None, firstPID)
    secondPID = instance.pid
    instance.restart()
    assert instance.pid not in (None, secondPID)
    result = run(
        instance, "ldapwhoami", "-x", "-H", instance.url, "-D", instance.userDN(9),
        "-w", instance.userPassword(9),
    )
    assert result.returncode == 0, result.stderr


def test_otherSuffix(slapdFactory: SlapdFactory) -> None:
    """
    A second backend with its own suffix, for multi-backend routing tests.
    """
    instance = slapdFactory(suffix="dc=corp,dc=example,dc=com", entries=10)
    assert instance.userDN(3) == "uid=user3,ou=people,dc=corp,dc=example,dc=com"
    result = run(
        instance, "ldapsearch", "-x", "-LLL", "-H", instance.url, "-b", instance.suffix,
        "(objectClass=inetOrgPerson)", "dn",
    )
    assert result.returncode == 0, result.stderr
    assert countDNs(result.stdout) == 10


def test_passwordModify(slapdFactory: SlapdFactory) -> None:
    """
    A user changes their own password with the Password Modify exop.
    """
    instance = slapdFactory(entries=5)
    dn = instance.userDN(2)
    result = run(
        instance, "ldappasswd", "-x", "-H", instance.url, "-D", dn,
        "-w", instance.userPassword(2), "-s", "newpass",
    )
    assert result.returncode == 0, result.stderr
    result = run(instance, "ldapwhoami", "-x", "-H", instance.url, "-D", dn, "-w", "newpass")
    assert result.returncode == 0, result.stderr


def test_ldapiAndSharedCA(slapdFactory: SlapdFactory, testCA: CA, tmp_path: os.PathLike[str]) -> None:
    """
    ldapi=True adds a unix socket listener; a certificate from the session CA
    can be given as tls=.
    """
    cert = makeCert(testCA, str(tmp_path), ["127.0.0.1"])
    instance = slapdFactory(entries=1, ldapi=True, tls=cert)
    assert instance.caFile == testCA.certFile
    assert instance.ldapiURL is not None
    result = run(instance, "ldapwhoami", "-x", "-H", instance.ldapiURL)
    assert result.returncode == 0, result.stderr
    result = run(instance, "ldapwhoami", "-x", "-ZZ", "-H", instance.url)
    assert result.returncode == 0, result.stderr


def test_missingSlapdFails(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """
    A missing slapd raises SlapdNotFound naming the packages to install.
    """
    monkeypatch.setenv("SLAPD", os.path.join(str(tmp_path), "no-such-slapd"))
    with pytest.raises(SlapdNotFound, match="SLAPD="):
        Slapd(str(tmp_path))
    monkeypatch.delenv("SLAPD")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda *a, **kw: None)
    with pytest.raises(SlapdNotFound, match="install the Debian packages slapd ldap-utils"):
        Slapd(str(tmp_path))
