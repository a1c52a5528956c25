"""
Configuration keys of the operations surface: metrics, access_log,
log_format, drain_timeout, workers; one test per mistake, full message.
"""

from __future__ import annotations

from typing import Any

import pytest

from ldaproute.config import Config, ConfigError

TAIL = """
[backend:one]
url = ldap://127.0.0.1:389
[pool:main]
backends = one
[route:all]
pool = main
"""


def load(globalLines: str, listen: str = "tcp:10389") -> Config:
    return Config.fromString(f"[ldaproute]\nlisten = {listen}\n{globalLines}\n{TAIL}", "routes.ini")


def mistake(globalLines: str, listen: str = "tcp:10389") -> str:
    with pytest.raises(ConfigError) as info:
        load(globalLines, listen)
    return str(info.value)


def test_defaults() -> None:
    config = load("")
    assert (config.metrics, config.accessLog, config.logFormat, config.drainTimeout, config.workers) == (
        None, "stdout", "text", 25.0, 1,
    )  # fmt: skip


def test_values() -> None:
    config = load(
        "metrics = tcp:9389:interface=127.0.0.1\naccess_log = off\nlog_format = json\ndrain_timeout = 500ms\nworkers = 4"
    )
    assert (config.metrics, config.accessLog, config.logFormat, config.drainTimeout, config.workers) == (
        "tcp:9389:interface=127.0.0.1", None, "json", 0.5, 4,
    )  # fmt: skip


def test_metricsBadEndpoint() -> None:
    assert mistake("metrics = nonsense:1") == (
        "routes.ini [ldaproute] metrics: bad endpoint 'nonsense:1': "
        "Unknown endpoint type: 'nonsense'"
    )


def test_metricsTwoEndpoints() -> None:
    assert mistake("metrics = tcp:9389, tcp:9390") == (
        "routes.ini [ldaproute] metrics: expected one endpoint such as tcp:9389:interface=127.0.0.1, not 2"
    )


def test_accessLogDestinations(tmp_path: Any) -> None:
    """on and stdout mean standard output, off none, anything else a file."""
    assert load("access_log = on").accessLog == "stdout"
    assert load("access_log = stdout").accessLog == "stdout"
    assert load("access_log = off").accessLog is None
    path = str(tmp_path / "access.log")
    assert load(f"access_log = {path}").accessLog == path


def test_accessLogNoDirectory() -> None:
    assert mistake("access_log = /nonexistent/dir/access.log") == (
        "routes.ini [ldaproute] access_log: expected on, off, stdout or a file path: no directory '/nonexistent/dir'"
    )


def test_accessLogDirectory(tmp_path: Any) -> None:
    assert mistake(f"access_log = {tmp_path}") == (
        f"routes.ini [ldaproute] access_log: '{tmp_path}' is a directory: give a file path"
    )


def test_logFormatUnknown() -> None:
    assert mistake("log_format = xml") == "routes.ini [ldaproute] log_format: expected one of text, json, not 'xml'"


def test_drainTimeoutBad() -> None:
    assert mistake("drain_timeout = soon") == (
        "routes.ini [ldaproute] drain_timeout: expected a duration such as 5s or 250ms, not 'soon'"
    )


def test_workersZero() -> None:
    assert mistake("workers = 0") == "routes.ini [ldaproute] workers: expected a number above zero, not 0"


def test_workersTooMany() -> None:
    assert mistake("workers = 65") == "routes.ini [ldaproute] workers: expected at most 64 worker processes, not 65"


def test_workersNeedTCPListeners() -> None:
    assert mistake("workers = 2", listen="unix:/tmp/x.sock") == (
        "routes.ini [ldaproute] workers: worker processes can share tcp: and haproxy:tcp: listeners only, "
        "not 'unix:/tmp/x.sock'"
    )


def test_workersNeedTCPMetrics() -> None:
    assert mistake("workers = 2\nmetrics = unix:/tmp/m.sock") == (
        "routes.ini [ldaproute] workers: worker processes need a tcp: metrics endpoint (one port each), "
        "not 'unix:/tmp/m.sock'"
    )


def test_workersWithHAProxyListener() -> None:
    assert load("workers = 2", listen="haproxy:tcp:10389").workers == 2


def test_sendProxy() -> None:
    config = Config.fromString(
        "[ldaproute]\nlisten = tcp:10389\n[backend:one]\nurl = ldap://h\nsend_proxy = v2\n"
        "[pool:main]\nbackends = one\n[route:all]\npool = main\n"
    )
    assert config.backends["one"].sendProxy == "v2"


def test_sendProxyUnknownVersion() -> None:
    with pytest.raises(ConfigError) as info:
        Config.fromString(
            "[ldaproute]\nlisten = tcp:10389\n[backend:one]\nurl = ldap://h\nsend_proxy = v3\n"
            "[pool:main]\nbackends = one\n[route:all]\npool = main\n", "routes.ini"
        )
    assert str(info.value) == "routes.ini [backend:one] send_proxy: expected one of none, v1, v2, not 'v3'"


def test_sendProxyNeedsPlainLDAP() -> None:
    with pytest.raises(ConfigError) as info:
        Config.fromString(
            "[ldaproute]\nlisten = tcp:10389\n[backend:one]\nurl = ldaps://h\nsend_proxy = v1\n"
            "[pool:main]\nbackends = one\n[route:all]\npool = main\n", "routes.ini"
        )
    assert str(info.value) == (
        "routes.ini [backend:one] send_proxy: a PROXY header can only be sent to an ldap:// backend (slapd's pldap://)"
    )
