# -*- test-case-name: tests.test_proxyheader -*-
"""
PROXY protocol headers (v1 text, v2 binary) that ldaproute sends to
backends configured with C{send_proxy}, so the directory's own logs and
ACLs see the client's address (slapd's C{pldap://} listener reads them).

Parsing incoming headers is Twisted's C{haproxy:} endpoint's job; this
module only writes them, from the client connection's peer and host
addresses.  Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _ip(address: IAddress) -> tuple[int, str, int] | None:
    """C{(version, host, port)} of a TCP address, or None."""
    if isinstance(address, (IPv4Address, IPv6Address)) and address.type == "TCP":
        host = address.host.split("%", 1)[0]
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            return None
        return version, host, address.port
    return None


def proxyHeader(version: str, source: IAddress, destination: IAddress) -> bytes:
    """
    The header announcing a connection from C{source} to C{destination}.

    @param version: C{"v1"} or C{"v2"}.
    """
    src, dst = _ip(source), _ip(destination)
    if src is None or dst is None or src[0] != dst[0]:
        # UNIX socket clients and mixed families: no address to pass on
        return b"PROXY UNKNOWN\r\n" if version == "v1" else V2_SIGNATURE + b"\x20\x00\x00\x00"
    family = src[0]
    if version == "v1":
        proto = "TCP4" if family == 4 else "TCP6"
        return f"PROXY {proto} {src[1]} {dst[1]} {src[2]} {dst[2]}\r\n".encode("ascii")
    packed = ipaddress.ip_address(src[1]).packed + ipaddress.ip_address(dst[1]).packed
    body = packed + struct.pack("!HH", src[2], dst[2])
    return V2_SIGNATURE + bytes([0x21, 0x11 if family == 4 else 0x21]) + struct.pack("!H", len(body)) + body
