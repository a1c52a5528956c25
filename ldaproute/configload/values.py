# -*- test-case-name: tests.test_config -*-
"""
The value parsers behind L{ldaproute.config}'s key tables: each turns one
key's text into its type (a duration, an endpoint checked by Twisted's own
parser, a readable file, a DN, ...) or raises L{InvalidValue} with the
sentence that says what is wrong.

They live here, apart from the tables and the value classes, so that
C{config.py} reads as the list of keys and what they become; they know no
file, section or key name, which the loader adds when it turns an
L{InvalidValue} into a L{ldaproute.config.ConfigError}.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

from ldaproute.configload import SectionError
from ldaproute.core.dn import DN, parseDN


class InvalidValue(ValueError):
    """Raised by a value parser; becomes a ConfigError with the location."""


def commaList(value: str) -> list[str]:
    """Items separated by commas or newlines, blanks dropped: every list key reads the same way."""
    return [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]


def yesNo(value: str) -> bool:
    """yes/no, true/false, on/off or 1/0: an operator writes any of them."""
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise InvalidValue(f"expected yes or no, not {value!r}")


def positiveInt(value: str) -> int:
    """A count above zero (C{_} allowed as a digit separator)."""
    try:
        number = int(value.strip().replace("_", ""))
    except ValueError:
        raise InvalidValue(f"expected a whole number, not {value!r}") from None
    if number <= 0:
        raise InvalidValue(f"expected a number above zero, not {number}")
    return number


_BYTE_UNITS = (("kib", 1024), ("mib", 1024**2), ("gib", 1024**3), ("k", 1024), ("m", 1024**2), ("g", 1024**3))


_DURATION_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0))

_N = TypeVar("_N", int, float)


def _positiveWithUnit(value: str, text: str, units: tuple[tuple[str, _N], ...], number: Callable[[str], _N], example: str) -> _N:
    """C{text} (the cleaned C{value}) as a number above zero times its suffix's factor, if it has one."""
    scale = number("1")
    for suffix, factor in units:
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)].strip(), factor
            break
    try:
        result = number(text) * scale
    except ValueError:
        raise InvalidValue(f"expected {example}, not {value!r}") from None
    if result <= 0:
        what = "a size" if number is int else "a duration"
        raise InvalidValue(f"expected {what} above zero, not {value!r}")
    return result


def byteSize(value: str) -> int:
    """
    A size in bytes above zero: a whole number, or with a C{KiB}, C{MiB}
    or C{GiB} suffix (C{K}, C{M}, C{G} too; powers of 1024).
    """
    return _positiveWithUnit(value, value.strip().lower().replace("_", ""), _BYTE_UNITS, int, "a size such as 4MiB, 512KiB or 65536")


def nonNegativeInt(value: str) -> int:
    """A count of zero or more (a backend's priority)."""
    try:
        number = int(value.strip().replace("_", ""))
    except ValueError:
        raise InvalidValue(f"expected a whole number, not {value!r}") from None
    if number < 0:
        raise InvalidValue(f"expected a number of zero or more, not {number}")
    return number


def srvName(value: str) -> str:
    """A DNS SRV name such as C{_ldap._tcp.example.com}, checked here so a typo fails at load, not at discovery."""
    name = value.strip().rstrip(".")
    if not re.fullmatch(r"_[A-Za-z0-9-]+\._(tcp|udp)(\.[A-Za-z0-9_-]+)+", name):
        raise InvalidValue(f"expected an SRV name such as _ldap._tcp.example.com, not {value!r}")
    return name


def hostPort(value: str) -> tuple[str, int]:
    """C{HOST:PORT} (brackets allowed around an IPv6 host), for an SRV resolver."""
    host, colon, port = value.strip().rpartition(":")
    if not colon or not host:
        raise InvalidValue(f"expected HOST:PORT such as 127.0.0.1:53, not {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise InvalidValue(f"expected HOST:PORT such as 127.0.0.1:53, not {value!r}") from None
    if not 0 < number < 65536:
        raise InvalidValue(f"port {number} is out of range")
    return (host.strip("[]"), number)


def duration(value: str) -> float:
    """Seconds, or with a C{ms}, C{s} or C{m} suffix; above zero, since a zero timeout would refuse everything."""
    return _positiveWithUnit(value, value.strip().lower(), _DURATION_UNITS, float, "a duration such as 5s or 250ms")


def choice(*choices: str) -> Callable[[str], str]:
    """A parser that takes one of C{choices}, case-insensitively, and says which it takes."""
    def parse(value: str) -> str:
        cleaned = value.strip().lower()
        if cleaned not in choices:
            raise InvalidValue(f"expected one of {', '.join(choices)}, not {value!r}")
        return cleaned

    return parse


def optionalPositiveInt(value: str) -> int | None:
    """A limit above zero, or C{off}/C{none}/C{unlimited} for no limit (L{None})."""
    if value.strip().lower() in ("off", "none", "unlimited"):
        return None
    return positiveInt(value)


def optionalDuration(value: str) -> float | None:
    """A duration, or C{off}/C{none} for no timeout (L{None})."""
    if value.strip().lower() in ("off", "none"):
        return None
    return duration(value)


def budget(value: str) -> float:
    """A duration to wait, or C{off} (also C{none}, C{0}) for no waiting at all (0)."""
    if value.strip().lower() in ("off", "none", "no", "0"):
        return 0.0
    return duration(value)


def readableFile(value: str) -> str:
    """The path of a file that exists and can be read now, so a wrong path stops start-up."""
    path = value.strip()
    if not path:
        raise InvalidValue("expected a file path")
    if not os.path.isfile(path):
        raise InvalidValue(f"no such file {path!r}")
    if not os.access(path, os.R_OK):
        raise InvalidValue(f"cannot read {path!r}")
    return path


def accessLogTarget(value: str) -> str | None:
    """C{on} or C{stdout}: standard output; C{off}: no access log; else a
    file path, whose directory must exist (the file is created)."""
    text = value.strip()
    lowered = text.lower()
    if lowered in ("on", "yes", "true", "1", "stdout"):
        return "stdout"
    if lowered in ("off", "no", "false", "0"):
        return None
    if not text:
        raise InvalidValue("expected on, off, stdout or a file path")
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise InvalidValue(f"expected on, off, stdout or a file path: no directory {directory!r}")
    if os.path.isdir(text):
        raise InvalidValue(f"{text!r} is a directory: give a file path")
    return text


def serverEndpoints(value: str) -> tuple[str, ...]:
    """Twisted server endpoint strings, each checked by Twisted's own parser (on a memory reactor: nothing listens)."""
    endpoints = tuple(commaList(value))
    if not endpoints:
        raise InvalidValue("expected at least one Twisted endpoint string such as tcp:389")
    reactor = MemoryReactor()
    for description in endpoints:
        try:
            serverFromString(reactor, description)
        except Exception as e:  # Twisted raises several types for bad strings
            raise InvalidValue(f"bad endpoint {description!r}: {e}") from None
    return endpoints


def oneServerEndpoint(value: str) -> str:
    """Exactly one server endpoint (the metrics site)."""
    endpoints = serverEndpoints(value)
    if len(endpoints) != 1:
        raise InvalidValue(f"expected one endpoint such as tcp:9389:interface=127.0.0.1, not {len(endpoints)}")
    return endpoints[0]


def workerCount(value: str) -> int:
    """Worker processes, at most 64."""
    number = positiveInt(value)
    if number > 64:
        raise InvalidValue(f"expected at most 64 worker processes, not {number}")
    return number


def dnValue(value: str) -> DN:
    """A DN, normalised (L{ldaproute.core.dn.parseDN})."""
    try:
        return parseDN(value.strip())
    except ValueError as e:
        raise InvalidValue(f"bad DN {value.strip()!r}: {e}") from None


def ipNetworks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CIDR networks (a bare address is its own network)."""
    networks = []
    for item in commaList(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise InvalidValue(f"bad network {item!r}: expected CIDR such as 10.0.0.0/8") from None
    return tuple(networks)


def udpEndpoints(value: str) -> tuple[str, ...]:
    """CLDAP endpoints, each C{udp:PORT[:interface=ADDRESS]} (L{parseUDPEndpoint})."""
    endpoints = tuple(commaList(value))
    if not endpoints:
        raise InvalidValue("expected at least one UDP endpoint such as udp:389")
    for description in endpoints:
        try:
            parseUDPEndpoint(description)
        except ValueError as e:
            raise InvalidValue(f"bad endpoint {description!r}: {e}") from None
    return endpoints


def parseUDPEndpoint(description: str) -> tuple[int, str]:
    """C{udp:PORT[:interface=ADDRESS]} -> C{(port, interface)}."""
    kind, _, rest = description.strip().partition(":")
    if kind != "udp":
        raise ValueError("a CLDAP endpoint is udp:PORT or udp:PORT:interface=ADDRESS")
    portText, _, options = rest.partition(":")
    try:
        port = int(portText)
    except ValueError:
        raise ValueError(f"port {portText!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    interface = ""
    if options:
        name, equals, address = options.partition("=")
        if name != "interface" or not equals:
            raise ValueError(f"unknown option {options!r}: only interface=ADDRESS")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"interface {address!r} is not an IP address") from None
        interface = address
    return port, interface


def datagramSize(value: str) -> int:
    """A UDP payload size from 512 to 65507 bytes (the largest UDP payload over IPv4)."""
    size = positiveInt(value)
    if not 512 <= size <= 65507:
        raise InvalidValue(f"expected a UDP payload size from 512 to 65507 bytes, not {size}")
    return size


def cldapPort(value: str) -> int | None:
    """A backend's CLDAP port, or C{none} for a backend that has none (answer mode reads its rootDSE instead)."""
    if value.strip().lower() in ("none", "no", "off"):
        return None
    port = positiveInt(value)
    if port > 65535:
        raise InvalidValue(f"expected a UDP port up to 65535 or none, not {port}")
    return port


def passwordFile(value: str) -> str:
    """The first line of a readable file: a secret kept out of routes.ini."""
    path = readableFile(value)
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidValue(f"cannot read {path!r}: {e}") from None
    if not line:
        raise InvalidValue(f"{path!r} is empty: its first line is the password")
    return line


_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*|\d+(\.\d+)+")


def _attributeName(item: str) -> str:
    """One attribute name or OID."""
    name = item.strip()
    if not _ATTRIBUTE_NAME.fullmatch(name):
        raise InvalidValue(f"bad attribute name {name!r}")
    return name


def attributeNames(value: str) -> tuple[str, ...]:
    """A comma list of attribute names or OIDs, at least one."""
    names = tuple(_attributeName(item) for item in commaList(value))
    if not names:
        raise InvalidValue("expected a comma list of attribute names")
    return names


def attributeMap(value: str) -> tuple[tuple[str, str], ...]:
    """C{client-name => backend-name} pairs, no name mapped twice either way (the map must be reversible)."""
    pairs = []
    for item in commaList(value):
        left, arrow, right = item.partition("=>")
        if not arrow:
            raise InvalidValue(f"expected client-name => backend-name, not {item!r}")
        pairs.append((_attributeName(left), _attributeName(right)))
    if not pairs:
        raise InvalidValue("expected client-name => backend-name, comma separated")
    lowered = [client.lower() for client, _ in pairs]
    if len(set(lowered)) != len(lowered):
        raise InvalidValue("an attribute is mapped twice")
    lowered = [backend.lower() for _, backend in pairs]
    if len(set(lowered)) != len(lowered):
        raise InvalidValue("two attributes map to the same backend attribute")
    return tuple(pairs)


def operationWords(value: str) -> tuple[str, ...]:
    """An operation as C{ldaproute explain} takes it, split as a shell would (quoted filters keep their spaces)."""
    try:
        words = tuple(shlex.split(value))
    except ValueError as e:
        raise InvalidValue(f"cannot split {value.strip()!r} into words: {e}") from None
    if not words:
        raise InvalidValue("expected an operation, as ldaproute explain takes it: search BASE [SCOPE [FILTER]], bind DN, ...")
    return words


def resultCode(value: str) -> int:
    """An LDAP result code, as a number."""
    try:
        return int(value.strip())
    except ValueError:
        raise InvalidValue(f"expected a result code, not {value.strip()!r}") from None


#: A section's keys: each key's attribute name and its parser.
KeyTable = dict[str, tuple[str, Callable[[str], Any]]]


def parseSection(items: dict[str, str], table: KeyTable) -> dict[str, Any]:
    """
    A section's raw C{items} turned into their types through C{table},
    by attribute name.

    @raise SectionError: an unknown key, or a value its parser refuses.
    """
    parsed: dict[str, Any] = {}
    for key, raw in items.items():
        if key not in table:
            known = ", ".join(sorted(table))
            raise SectionError(key, f"unknown key (this section takes: {known})")
        attribute, parse = table[key]
        try:
            parsed[attribute] = parse(raw)
        except InvalidValue as e:
            raise SectionError(key, str(e)) from None
    return parsed
