"""
Tests for C{ldaproute check} (L{ldaproute.ops.check}) and the C{ldaproute}
command (L{ldaproute.cli}): exit codes, the summary and the warnings,
against the example files in deploy/ and small files written here.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Sequence

import pytest

from ldaproute import cli
from ldaproute.config import Config
from ldaproute.ops import check
from tests.certs import makeCA, makeCert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = [
    "deploy/routes.example.ini",
    "deploy/container/routes.ini",
    "deploy/examples/active-directory.ini",
    "deploy/examples/read-write-split.ini",
    "deploy/examples/split-namespace.ini",
    "deploy/examples/suffix-rename.ini",
]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ran: list[Sequence[str]] = []
    code = cli.main(list(argv), out, err, proxy=ran.append)
    assert not ran, "check and explain never start the proxy"
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: object, text: str) -> str:
    path = os.path.join(str(tmp_path), "routes.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("example", EXAMPLES)
def test_examplesAreValid(example: str) -> None:
    """Every file in deploy/ checks: exit 0, a summary, a warnings count."""
    code, out, err = run("check", "-c", os.path.join(ROOT, example))
    assert (code, err) == (0, "")
    assert out.startswith(f"{os.path.join(ROOT, example)}: valid\nlisteners:\n")
    assert "\nroutes, in match order" in out and "\npools:\n" in out and "\nwarnings: " in out


def test_splitNamespaceSummaryAndWarnings() -> None:
    code, out, _ = run("check", "-c", os.path.join(ROOT, "deploy/examples/split-namespace.ini"))
    assert code == 0
    assert (
        "  1. partners-readonly: add, delete, modify, modifyDN; DN within ou=partners,dc=example,dc=com"
        " -> answer 53 (the partners directory is read-only here)\n"
    ) in out
    assert "  4. gc-rest: listener gc -> answer 32 (the global catalog serves dc=corp,dc=example,dc=com only)\n" in out
    assert "  ad: round-robin; ad1 (ldap://ad1.corp.example.com:389), ad2 (ldap://ad2.corp.example.com:389); health checks every 5s\n" in out
    assert (
        "  - backend ad1: tls = none to ad1.corp.example.com, not loopback, and pool ad serves binds: client passwords "
        "cross the network to the backend in the clear (use tls = starttls or ldaps)\n"
    ) in out
    assert "  - no metrics endpoint ([ldaproute] metrics): no /metrics, /readyz or status page\n" in out
    assert "can never be chosen" not in out


BASE = """
[ldaproute]
listen = {listen}
metrics = tcp:9389:interface=127.0.0.1
{extra}
[backend:a]
url = ldap://127.0.0.1:1389
[pool:p]
backends = a
{pool}
{routes}
"""


def config(listen: str = "tcp:389:interface=127.0.0.1", extra: str = "", pool: str = "", routes: str = "[route:all]\npool = p\n") -> Config:
    return Config.fromString(BASE.format(listen=listen, extra=extra, pool=pool, routes=routes))


def test_noWarnings() -> None:
    assert check.warnings(config()) == []


def test_cleartextBindsOnAPublicListener() -> None:
    [warning] = check.warnings(config("tcp:389", "require_tls_for_simple_bind = off"))
    assert warning == (
        "listener default: cleartext passwords (simple binds...) are allowed on tcp:389, which is not loopback: "
        "passwords can cross the network in the clear (set require_tls_for_passwords = on)"
    )
    assert check.warnings(config("tcp:389:interface=127.0.0.1", "require_tls_for_simple_bind = off")) == []
    assert check.warnings(config("unix:/tmp/ldap.sock", "require_tls_for_simple_bind = off")) == []


def test_routeAfterACatchAll() -> None:
    routes = "[route:all]\npool = p\n[route:people]\nsuffix = ou=people,dc=example,dc=com\npool = p\n"
    assert check.warnings(config(routes=routes)) == [
        "route people can never be chosen: the earlier route all catches every operation"
    ]


def test_routeBehindABroaderSuffix() -> None:
    routes = (
        "[route:main]\nsuffix = dc=example,dc=com\npool = p\n"
        "[route:people]\nsuffix = ou=people,dc=example,dc=com\npool = p\n"
    )
    assert check.warnings(config(routes=routes)) == [
        "route people can never be chosen: the earlier route main matches everything it matches (only a search "
        "above its suffix reaches it, as part of a fan-out); put the narrower suffix first"
    ]


def test_narrowerConditionsDoNotShadow() -> None:
    routes = (
        "[route:writes]\noperations = write\npool = p\n"
        "[route:gc]\nlistener = default\noperations = read\npool = p\n"
        "[route:all]\npool = p\n"
    )
    assert check.warnings(config(routes=routes)) == []


def test_poolWithoutHealthChecks() -> None:
    assert check.warnings(config(pool="health_check = off")) == [
        "pool p: no health checks (health_check = off): a dead backend is only noticed by failing connections"
    ]


def test_cleartextBackendForBinds() -> None:
    text = BASE.format(listen="tcp:389:interface=127.0.0.1", extra="", pool="", routes="[route:all]\npool = p\n")
    text = text.replace("ldap://127.0.0.1:1389", "ldap://ldap.example.com:389")
    assert check.warnings(Config.fromString(text)) == [
        "backend a: tls = none to ldap.example.com, not loopback, and pool p serves binds: client passwords cross "
        "the network to the backend in the clear (use tls = starttls or ldaps)"
    ]
    reads = text.replace("[route:all]\npool = p", "[route:all]\noperations = read\npool = p")
    assert check.warnings(Config.fromString(reads)) == []


def test_passthroughWithRewrites(tmp_path: object) -> None:
    server = makeCert(makeCA(str(tmp_path)), str(tmp_path))
    cert, key = server.certFile, server.keyFile
    routes = (
        "[route:corp]\nsuffix = dc=corp,dc=example,dc=com\npool = p\n"
        "rewrite_suffix = dc=corp,dc=example,dc=com => dc=ad,dc=example,dc=local\n"
    )
    found = check.warnings(config(extra=f"starttls = passthrough\ntls_cert = {cert}\ntls_key = {key}", routes=routes))
    assert found[0] == (
        "listener default: starttls = passthrough with rewriting route(s) corp: after the pass the proxy relays "
        "encrypted bytes and cannot rewrite them"
    )
    # and core/secrets' sentence on the cleartext backend link behind a TLS listener
    assert [line.split(":")[0] for line in found[1:]] == ["backend a"]


def test_invalidFileIsOneLineAndExit1(tmp_path: object) -> None:
    path = write(tmp_path, BASE.format(listen="tcp:389", extra="", pool="", routes="[route:all]\npool = q\n"))
    assert run("check", "-c", path) == (1, "", f"{path} [route:all] pool: unknown pool 'q'\n")


def test_missingFile(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "nope.ini")
    code, out, err = run("check", "-c", path)
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}: cannot read the file: No such file")


def test_usageMistake() -> None:
    code, out, err = run("check", "--frobnicate")
    assert (code, out) == (2, "")
    assert err.startswith("ldaproute check: unrecognized arguments: --frobnicate\nusage: ldaproute check -c routes.ini\n")


def test_noSubcommandRunsTheProxy() -> None:
    """Options without a subcommand (or after run) go to twistd ldaproute."""
    for argv, expected in ((["-c", "routes.ini"], ["-c", "routes.ini"]), (["run", "--demo"], ["--demo"]), ([], [])):
        ran: list[Sequence[str]] = []
        assert cli.main(argv, io.StringIO(), io.StringIO(), proxy=ran.append) == 0
        assert ran == [expected]


def twistd(*args: str) -> subprocess.CompletedProcess[str]:
    """twistd from this checkout (its twisted/plugins), as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "ldaproute", *args],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_twistdCheck() -> None:
    """twistd ldaproute --check -c FILE: the same report, exit 0, no port opened."""
    path = os.path.join(ROOT, "deploy/examples/split-namespace.ini")
    result = twistd("--check", "-c", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid\n")
    assert "warnings: 5\n" in result.stdout


def test_twistdConfigErrorIsOneLine(tmp_path: object) -> None:
    """A mistake at start-up: its line alone, not twistd's usage text."""
    path = write(tmp_path, BASE.format(listen="tcp:389", extra="", pool="", routes="[route:all]\npool = q\n"))
    result = twistd("-c", path)
    assert result.returncode == 1
    assert (result.stdout, result.stderr) == ("", f"{path} [route:all] pool: unknown pool 'q'\n")


def test_consoleScriptModule() -> None:
    """python -m ldaproute check: the same command."""
    path = os.path.join(ROOT, "deploy/examples/suffix-rename.ini")
    result = subprocess.run(
        [sys.executable, "-m", "ldaproute", "check", "-c", path],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "rewrites suffix dc=corp,dc=example,dc=com => dc=ad,dc=example,dc=local" in result.stdout


EXPECT = BASE.format(listen="tcp:389:interface=127.0.0.1", extra="", pool="", routes=(
    "[route:ro]\noperations = write\nreject = 53 read-only\n[route:all]\npool = p\n"
))


def test_expectationsHold(tmp_path: object) -> None:
    path = write(tmp_path, EXPECT + "[expect:reads]\noperation = search dc=example,dc=com\nroute = all\nbackend = a\n"
                 "[expect:writes]\noperation = delete uid=x,dc=example,dc=com\nresult = 53\n")
    code, out, _ = run("check", "-c", path)
    assert code == 0
    assert out.endswith(
        "expectations: 2 of 2 hold\n"
        "  - expect:reads: ok (search dc=example,dc=com)\n"
        "  - expect:writes: ok (delete uid=x,dc=example,dc=com)\n"
    )


def test_expectationFails(tmp_path: object) -> None:
    """A configuration test that does not hold fails check (exit 1), saying what happened instead."""
    path = write(tmp_path, EXPECT + "[expect:writes]\noperation = delete uid=x,dc=example,dc=com\nroute = all\n"
                 "[expect:reads]\noperation = search dc=example,dc=com\nresult = 53\n")
    code, out, _ = run("check", "-c", path)
    assert code == 1
    assert out.endswith(
        "expectations: 0 of 2 hold\n"
        "  - expect:writes: FAILED (delete uid=x,dc=example,dc=com): route ro, not all\n"
        "  - expect:reads: FAILED (search dc=example,dc=com): forwarded to a backend, not answered 53 by the proxy\n"
    )


@pytest.mark.parametrize(
    "section, message",
    [
        ("[expect:e]\nroute = all\n", "[expect:e] operation: missing: the operation to try, as ldaproute explain takes it"),
        ("[expect:e]\noperation = search dc=x\n", "[expect:e] route: missing: give what to expect: route, pool, backend or result"),
        ("[expect:e]\noperation = search dc=x\nroute = nope\n", "[expect:e] route: unknown route 'nope'"),
        ("[expect:e]\noperation = search dc=x\nresult = many\n", "[expect:e] result: expected a result code, not 'many'"),
        ("[expect:e]\noperation = search 'dc=x\nroute = all\n", "[expect:e] operation: cannot split \"search 'dc=x\" into words: No closing quotation"),
    ],
)
def test_expectationMistakes(section: str, message: str) -> None:
    from ldaproute.config import ConfigError

    with pytest.raises(ConfigError) as info:
        Config.fromString(EXPECT + section)
    assert str(info.value) == f"routes.ini {message}"


def test_startUpIgnoresExpectations(tmp_path: object) -> None:
    """Start-up loads a file with expectations (checked by check only) as any other."""
    config = Config.fromString(EXPECT + "[expect:e]\noperation = search dc=x\nresult = 53\n")
    assert [e.name for e in config.expectations] == ["e"]
