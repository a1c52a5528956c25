"""
A small authoritative DNS server (twisted.names) for discovery tests, run as
``python -m tests.integration.dnsserver PORT ZONE.json``.  It serves the SRV
records listed in ZONE.json and re-reads the file on every query, so a test
changes the zone by rewriting the file:

    {"_ldap._tcp.example.com": [[priority, weight, port, target, ttl], ...]}
"""

from __future__ import annotations

import json
import sys

from twisted.internet import reactor
from twisted.names import authority, dns, server


class JSONAuthority(authority.FileAuthority):
    def __init__(self, path: str) -> None:
        self._path = path
        super().__init__(path)

    def loadFile(self, filename: str) -> None:
        with open(filename) as f:
            zone = json.load(f)
        self.soa = (
            b"example.com",
            dns.Record_SOA(mname=b"ns.example.com", rname=b"root.example.com", serial=1,
                           refresh=1, retry=1, expire=1, minimum=1, ttl=1),
        )
        self.records = {
            name.lower().encode(): [
                dns.Record_SRV(priority, weight, port, target.encode(), ttl=ttl)
                for priority, weight, port, target, ttl in records
            ]
            for name, records in zone.items()
        }

    def _lookup(self, name, cls, type, timeout=None):  # type: ignore[no-untyped-def]
        self.loadFile(self._path)
        return super()._lookup(name, cls, type, timeout)


def main(port: int, path: str) -> None:
    factory = server.DNSServerFactory(authorities=[JSONAuthority(path)])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
