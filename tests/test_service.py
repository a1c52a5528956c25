"""The twistd plugin's options and service wiring, on a memory reactor."""

from __future__ import annotations

import os

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from ldaproute import service

CONFIG = """
[ldaproute]
listen = tcp:10389:interface=127.0.0.1, tcp:10636:interface=127.0.0.1
[listener:gc]
listen = tcp:13268:interface=127.0.0.1
[backend:a]
url = ldap://127.0.0.1:389
[pool:p]
backends = a
[route:all]
pool = p
"""


def parse(*argv: str) -> service.Options:
    options = service.Options()
    options.parseOptions(list(argv))
    return options


def test_configMistakeIsOneLine(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistake in routes.ini: its line alone on stderr and exit 1, not twistd's usage text."""
    path = os.path.join(str(tmp_path), "routes.ini")
    with open(path, "w") as f:
        f.write(CONFIG.replace("backends = a", "backends = a3"))
    with pytest.raises(SystemExit) as exited:
        parse("-c", path)
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"{path} [pool:p] backends: unknown backend 'a3'\n"


def test_noConfigurationSaysWhatToDo(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))
    with pytest.raises(usage.UsageError, match="give -c routes.ini .* or --demo"):
        parse()


def test_demoAndConfigExclude() -> None:
    with pytest.raises(usage.UsageError, match="either --demo or -c"):
        parse("--demo", "-c", "routes.ini")


def test_makeServiceOnlyWires(tmp_path: object) -> None:
    """One named service per listener endpoint; nothing listens until started."""
    path = os.path.join(str(tmp_path), "routes.ini")
    with open(path, "w") as f:
        f.write(CONFIG)
    reactor = MemoryReactorClock()
    top = service.makeService(parse("-c", path), reactor)
    names = sorted(child.name for child in top if child.name and child.name.startswith("listener:"))
    assert names == [
        "listener:default:tcp:10389:interface=127.0.0.1",
        "listener:default:tcp:10636:interface=127.0.0.1",
        "listener:gc:tcp:13268:interface=127.0.0.1",
    ]
    assert reactor.tcpServers == []
    top.startService()
    assert sorted(port for port, *_ in reactor.tcpServers) == [10389, 10636, 13268]
    top.stopService()


def test_demoConfiguration() -> None:
    options = parse("--demo", "--demo-listen", "tcp:20389:interface=127.0.0.1")
    assert options.demoSocket is not None and options.demoSocket.endswith("directory.sock")
    [listener] = options.routes.listeners
    assert listener.endpoints == ("tcp:20389:interface=127.0.0.1",)
    assert options.routes.backends["demo"].url.scheme == "ldapi"
    os.rmdir(os.path.dirname(options.demoSocket))
