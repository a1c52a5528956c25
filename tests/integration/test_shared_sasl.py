"""
SASL binds through shared mode against a real slapd (cyrus-sasl's SCRAM and
DIGEST-MD5 from libsasl2-modules, with ldapwhoami and ldapsearch): the
exchange runs on a bind connection, the proxy learns the identity with Who
Am I there and asserts it with Proxied Authorization, so Who Am I through
the proxy names the SASL user (not the service account) and a search runs
with the user's rights.  A DIGEST-MD5 bind that would negotiate a security
layer is refused with a message naming C{mode = session}.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.integration.conftest import SlapdFactory
from tests.integration.test_shared import run, tool
from tests.slapd import Slapd

#: description readable only by its own entry: shows whose identity ran the search
BACKEND_GLOBAL = "authz-policy to\naccess to attrs=description by self read by * none\n"
SERVICE_PASSWORD = "svc-secret"


def serviceDN(server: Slapd) -> str:
    return f"cn=proxysvc,{server.systemDN}"


def prepared(server: Slapd) -> Slapd:
    """A service account allowed to assert the SASL user (and people), and a description only the SASL user reads."""
    ldif = (
        f"dn: {serviceDN(server)}\nchangetype: add\nobjectClass: organizationalRole\n"
        f"objectClass: simpleSecurityObject\ncn: proxysvc\nuserPassword: {SERVICE_PASSWORD}\n"
        f"authzTo: dn.exact:{server.saslUserDN}\nauthzTo: dn.regex:^uid=[^,]+,{server.peopleDN}$\n\n"
        f"dn: {server.saslUserDN}\nchangetype: modify\nadd: description\ndescription: only-sasluser-reads-this\n"
    )
    subprocess.run(
        [tool("ldapmodify"), "-x", "-H", server.url, "-D", server.rootDN, "-w", server.rootPW],
        input=ldif, text=True, env=server.clientEnv(), check=True, capture_output=True, timeout=30,
    )
    return server


@pytest.fixture
def backend(slapdFactory: SlapdFactory) -> Slapd:
    return prepared(slapdFactory(entries=10, accessLog=True, extraGlobalConfig=BACKEND_GLOBAL))


def sharedConfig(server: Slapd) -> str:
    return (
        "mode = shared\n"
        f"[backend:slapd]\nurl = {server.url}\n"
        "[pool:main]\nbackends = slapd\nhealth_check = no\n"
        "shared_connections = 1\nbind_connections = 1\nmax_bind_connections = 1\n"
        f"service_bind_dn = {serviceDN(server)}\nservice_bind_password = {SERVICE_PASSWORD}\n"
        "[route:all]\npool = main\n"
    )


def sasl(server: Slapd, mechanism: str, *options: str) -> tuple[str, ...]:
    return ("-Y", mechanism, "-U", server.saslUser, "-w", server.saslPassword, "-Q", *options)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "DIGEST-MD5"])
def test_saslBindAssertsTheUser(backend: Slapd, proxyFactory: Any, mechanism: str) -> None:
    proxy = proxyFactory(sharedConfig(backend))
    whoami = run(backend, tool("ldapwhoami"), "-H", proxy.url, *sasl(backend, mechanism))
    assert whoami.strip() == f"dn:{backend.saslUserDN}", proxy.log()[-2000:]
    # the search runs as the SASL user: its own description is visible ...
    search = ("-LLL", "-b", backend.saslUserDN, "-s", "base", "description")
    out = run(backend, tool("ldapsearch"), "-H", proxy.url, *sasl(backend, mechanism), *search)
    assert "description: only-sasluser-reads-this" in out, out
    # ... and not to anyone else through the proxy (the service account's rights are not lent)
    out = run(backend, tool("ldapsearch"), "-x", "-H", proxy.url, "-D", backend.userDN(1), "-w", backend.userPassword(1), *search)
    assert "uid=sasluser" in out and "description" not in out, out
    authz = [line for line in backend.logLines() if "PROXYAUTHZ" in line]
    assert any(backend.saslUserDN in line for line in authz), authz[:5]


def test_digestWithSecurityLayerRefused(slapdFactory: SlapdFactory, proxyFactory: Any) -> None:
    # slapd offering layers (maxssf unlimited): cyrus' client picks qop=auth-conf by default
    server = prepared(slapdFactory(entries=10, extraGlobalConfig=BACKEND_GLOBAL, saslMaxSSF=None))
    proxy = proxyFactory(sharedConfig(server))
    out = run(server, tool("ldapwhoami"), "-H", proxy.url, *sasl(server, "DIGEST-MD5"), check=False)
    assert "(7)" in out and "mode = session" in out, out
    # without a layer the same mechanism works, and SCRAM never has one
    for options in (sasl(server, "DIGEST-MD5", "-O", "maxssf=0"), sasl(server, "SCRAM-SHA-256")):
        out = run(server, tool("ldapwhoami"), "-H", proxy.url, *options)
        assert out.strip() == f"dn:{server.saslUserDN}", out
