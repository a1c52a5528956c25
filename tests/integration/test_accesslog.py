"""
The access log against real slapd traffic: every operation kind, driven
by OpenLDAP's command-line clients through the proxy as a real twistd
process, gives its own fields (issue 12: a SASL bind shows its mechanism,
never its credentials), on one line each with C{conn=N op=M}, in a file
(C{access_log = PATH}, JSON lines here; the text form has the same fields,
see tests/test_accesslog.py), reopened on SIGUSR1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.test_operations import Proxy, program, quietPort, routesIni, waitFor
from tests.slapd import Slapd


@pytest.fixture
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def factory(routes: str, metricsPort: int) -> Proxy:
        proxy = Proxy(str(tmp_path_factory.mktemp("proxy")), routes, metricsPort)
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        proxy.stop()


def tool(name: str, slapd: Slapd, port: int, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program(name), "-H", f"ldap://127.0.0.1:{port}", *args],
        env=slapd.clientEnv(), capture_output=True, text=True, timeout=30, input=stdin,
    )  # fmt: skip


def test_fieldsPerOperationKind(
    slapdFactory: Callable[..., Slapd], proxies: Callable[..., Proxy], tmp_path: Any
) -> None:
    backend = slapdFactory(entries=5)
    listen, metrics = quietPort(), quietPort()
    path = str(tmp_path / "access.log")
    proxy = proxies(routesIni(listen, metrics, {"main": backend.url}, "[route:all]\npool = main\n", f"access_log = {path}"), metrics)
    proxy.start()
    admin = ("-x", "-D", backend.rootDN, "-w", "secret")
    newDN = f"uid=newbie,{backend.peopleDN}"

    steps = [
        ("ldapsearch", (*admin, "-b", backend.peopleDN, "-s", "one", "-z", "3", "(|(uid=user1)(userPassword=user1pw))", "cn", "mail"), None, 0),
        ("ldapcompare", (*admin, backend.userDN(2), "userPassword:topsecret"), None, 5),
        ("ldapadd", admin, f"dn: {newDN}\nobjectClass: inetOrgPerson\nuid: newbie\ncn: N\nsn: N\nuserPassword: pw-in-add\n", 0),
        ("ldapmodify", admin, f"dn: {newDN}\nchangetype: modify\nreplace: userPassword\nuserPassword: pw-in-modify\n", 0),
        ("ldapmodrdn", (*admin, newDN, "uid=newer"), None, 0),
        ("ldapdelete", (*admin, f"uid=newer,{backend.peopleDN}"), None, 0),
        ("ldapwhoami", ("-x",), None, 0),
        ("ldapwhoami", ("-Y", "DIGEST-MD5", "-U", backend.saslUser, "-w", "saslpass", "-Q"), None, 0),
        ("ldapwhoami", ("-x", "-D", backend.userDN(1), "-w", "wrong-password"), None, 49),
    ]
    for name, args, stdin, code in steps:
        result = tool(name, backend, listen, *args, stdin=stdin)
        assert result.returncode == code, (name, result.stdout, result.stderr)

    def lines() -> list[dict[str, str]] | None:
        if not os.path.exists(path):
            return None
        with open(path) as f:
            # --log-format json (the Proxy's) makes JSON lines; compared as text here
            found = [{k: str(v) for k, v in json.loads(line).items()} for line in f]
        return found if any(e["result"] == "49" for e in found) else None  # the last step

    access = waitFor(lines, "the access-log lines")
    text = open(path).read()
    for secret in ("topsecret", "pw-in-add", "pw-in-modify", "saslpass", "wrong-password", "user1pw"):
        assert secret not in text, secret

    def first(kind: str, **match: str) -> dict[str, str]:
        for line in access:
            if line["type"] == kind and all(line.get(k) == v for k, v in match.items()):
                return line
        raise AssertionError(f"no {kind} line with {match} in:\n{text}")

    search = first("search")
    assert {k: search[k] for k in ("base", "scope", "filter", "attrs", "sizelimit", "result", "route", "backend")} == {
        "base": backend.peopleDN, "scope": "one", "filter": "(|(uid=?)(userPassword=?))", "attrs": "2",
        "sizelimit": "3", "result": "0", "route": "all", "backend": "main",
    }  # fmt: skip
    assert int(search["entries"]) == 1 and int(search["bytes"]) > 0 and float(search["ms"]) >= 0
    assert first("bind", conn=search["conn"])["op"] == "1" and search["op"] == "2"
    assert {k: first("compare")[k] for k in ("dn", "attr", "result")} == {"dn": backend.userDN(2), "attr": "userPassword", "result": "5"}
    assert first("add")["dn"] == newDN
    assert first("modify")["dn"] == newDN
    assert first("modifyDN")["dn"] == newDN
    assert first("delete")["dn"] == f"uid=newer,{backend.peopleDN}"
    whoami = first("extended")
    assert (whoami["oid"], whoami["name"], whoami["result"]) == ("1.3.6.1.4.1.4203.1.11.3", "WhoAmI", "0")
    sasl = [line for line in access if line["type"] == "bind" and line.get("method") == "sasl"]
    assert sasl and {line["mech"] for line in sasl} == {"DIGEST-MD5"}
    assert [line["result"] for line in sasl] == ["14", "0"]  # the challenge step, then the final one
    assert sasl[0]["conn"] == sasl[1]["conn"] and (sasl[0]["op"], sasl[1]["op"]) == ("1", "2")
    failed = first("bind", dn=backend.userDN(1))
    assert (failed["method"], failed["result"]) == ("simple", "49")
    anonymous = [line for line in access if line["type"] == "bind" and line.get("method") == "anonymous"]
    assert anonymous
    assert {line["client"].split(":")[0] for line in access} == {"127.0.0.1"}
    assert {(line["listener"], line["tls"]) for line in access} == {("default", "none")}
    connections = {line["conn"] for line in access}
    assert len(connections) == len(steps)

    # logrotate: move the file away, SIGUSR1, and new lines go to a new file
    os.rename(path, path + ".1")
    proxy.signal(signal.SIGUSR1)

    def reopened() -> bool:
        tool("ldapwhoami", backend, listen, "-x")
        return os.path.exists(path) and '"type": "extended"' in open(path).read()

    waitFor(reopened, "the reopened access log")
