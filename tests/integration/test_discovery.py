"""
DNS SRV discovery end to end: a twisted.names authoritative server on
loopback serves _ldap._tcp.example.com; the proxy's pool follows the
records as the test changes the zone, and keeps its set when DNS dies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.integration.conftest import SlapdFactory
from tests.integration.test_pools import peopleSearches, sessions, waitFor
from tests.slapd import freePort

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def writeZone(path: str, records: list[list[Any]]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump({"_ldap._tcp.example.com": records}, f)
    os.replace(path + ".tmp", path)


def test_srvDiscovery(slapdFactory: SlapdFactory, proxyFactory: Any, tmp_path: Any) -> None:
    a = slapdFactory(entries=10, accessLog=True)
    b = slapdFactory(entries=10, accessLog=True)
    zone = str(tmp_path / "zone.json")
    writeZone(zone, [[0, 1, a.port, "127.0.0.1", 1]])
    dnsPort = freePort()
    dnsServer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.dnsserver", str(dnsPort), zone],
        cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        assert dnsServer.stdout is not None and dnsServer.stdout.readline().strip() == b"ready"
        proxy = proxyFactory(
            "[pool:p]\nsrv = _ldap._tcp.example.com\n"
            f"srv_resolver = 127.0.0.1:{dnsPort}\nhealth_check = no\n[route:all]\npool = p\n"
        )
        waitFor(lambda: any("now has backends" in e.get("log_format", "") for e in proxy.events()), 5, "first answer")
        sessions(proxy, 4)
        assert (peopleSearches(a), peopleSearches(b)) == (4, 0)

        writeZone(zone, [[0, 1, a.port, "127.0.0.1", 1], [0, 1, b.port, "127.0.0.1", 1]])
        waitFor(lambda: sum("now has backends" in e.get("log_format", "") for e in proxy.events()) == 2, 5, "b added")
        sessions(proxy, 4)
        assert (peopleSearches(a), peopleSearches(b)) == (6, 2)

        writeZone(zone, [[0, 1, b.port, "127.0.0.1", 1]])
        waitFor(lambda: sum("now has backends" in e.get("log_format", "") for e in proxy.events()) == 3, 5, "a removed")
        sessions(proxy, 4)
        assert (peopleSearches(a), peopleSearches(b)) == (6, 6)

        dnsServer.kill()
        dnsServer.wait()
        waitFor(lambda: any("failed" in e.get("log_format", "") and e.get("srv") for e in proxy.events()), 15, "DNS failure seen")
        sessions(proxy, 4)
        assert (peopleSearches(a), peopleSearches(b)) == (6, 10)  # the previous set is kept
    finally:
        if dnsServer.poll() is None:
            dnsServer.kill()
            dnsServer.wait()
