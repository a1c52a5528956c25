# -*- test-case-name: tests.test_config -*-
"""
routes.ini -> typed, validated, frozen configuration values.

Every value is turned into its type as the file is read (URLs into host,
port and TLS mode, endpoint strings checked by Twisted's own parser, DNs
normalised), and every mistake raises L{ConfigError} naming the file, the
section, the key and what is wrong, so that a bad file stops start-up (or a
reload) before any port opens.  Nothing here touches the network.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.python.filepath import FilePath

from ldaproute import ber
from ldaproute.dn import DN, parseDN


class ConfigError(ValueError):
    """
    A mistake in routes.ini.  C{str()} is the whole sentence an operator
    needs: C{routes.ini [pool:ad] backends: unknown backend 'ad3'}.
    """

    def __init__(self, path: str, section: str | None, key: str | None, reason: str) -> None:
        where = path
        if section is not None:
            where += f" [{section}]"
        if key is not None:
            where += f" {key}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.section = section
        self.key = key
        self.reason = reason


class _Invalid(ValueError):
    """Raised by a value parser; becomes a ConfigError with the location."""


# --- value parsers ----------------------------------------------------------


def _list(value: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise _Invalid(f"expected yes or no, not {value!r}")


def _positiveInt(value: str) -> int:
    try:
        number = int(value.strip().replace("_", ""))
    except ValueError:
        raise _Invalid(f"expected a whole number, not {value!r}") from None
    if number <= 0:
        raise _Invalid(f"expected a number above zero, not {number}")
    return number


def _seconds(value: str) -> float:
    text = value.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    try:
        seconds = float(text) * scale
    except ValueError:
        raise _Invalid(f"expected a duration such as 5s or 250ms, not {value!r}") from None
    if seconds <= 0:
        raise _Invalid(f"expected a duration above zero, not {value!r}")
    return seconds


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        cleaned = value.strip().lower()
        if cleaned not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}, not {value!r}")
        return cleaned

    return parse


def _endpoints(value: str) -> tuple[str, ...]:
    endpoints = tuple(_list(value))
    if not endpoints:
        raise _Invalid("expected at least one Twisted endpoint string such as tcp:389")
    reactor = MemoryReactor()
    for description in endpoints:
        try:
            serverFromString(reactor, description)
        except Exception as e:  # Twisted raises several types for bad strings
            raise _Invalid(f"bad endpoint {description!r}: {e}") from None
    return endpoints


def _dn(value: str) -> DN:
    try:
        return parseDN(value.strip())
    except ValueError as e:
        raise _Invalid(f"bad DN {value.strip()!r}: {e}") from None


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _list(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _Invalid(f"bad network {item!r}: expected CIDR such as 10.0.0.0/8") from None
    return tuple(networks)


# --- values -----------------------------------------------------------------


@attrs.frozen
class BackendURL:
    """Where a backend listens, from C{url = ldap://host:port}."""

    scheme: str  # "ldap", "ldaps" or "ldapi"
    host: str  # host name or address; for ldapi, the socket path
    port: int  # 0 for ldapi

    @classmethod
    def fromString(cls, value: str) -> BackendURL:
        """Parse C{ldap://host:port}, C{ldaps://host:port} or C{ldapi://%2Fpath}."""
        text = value.strip()
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as e:
            raise _Invalid(f"bad URL {text!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme == "ldapi":
            path = unquote(parts.netloc)
            if not path.startswith("/"):
                raise _Invalid(f"bad URL {text!r}: ldapi needs an absolute socket path, %2F-escaped")
            return cls("ldapi", path, 0)
        if scheme not in ("ldap", "ldaps"):
            raise _Invalid(f"bad URL {text!r}: the scheme must be ldap, ldaps or ldapi")
        if not parts.hostname:
            raise _Invalid(f"bad URL {text!r}: no host")
        if parts.path not in ("", "/") or parts.query:
            raise _Invalid(f"bad URL {text!r}: a backend URL names a server only, no DN or query")
        return cls(scheme, parts.hostname, port or (636 if scheme == "ldaps" else 389))

    def __str__(self) -> str:
        if self.scheme == "ldapi":
            return f"ldapi://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@attrs.frozen
class Backend:
    """One directory server."""

    name: str
    url: BackendURL
    weight: int = 1


@attrs.frozen
class Pool:
    """Backends that serve the same data, and how to choose among them."""

    name: str
    backends: tuple[Backend, ...]
    strategy: str = "round-robin"
    connectTimeout: float = 5.0


@attrs.frozen
class Listener:
    """Endpoints that accept clients, and the policy for those clients."""

    name: str
    endpoints: tuple[str, ...]


#: The operation names a route's C{operations} key accepts, and the
#: request tags each stands for.
OPERATION_GROUPS: dict[str, frozenset[int]] = {
    "read": frozenset({ber.SEARCH_REQUEST, ber.COMPARE_REQUEST}),
    "write": frozenset({ber.ADD_REQUEST, ber.DEL_REQUEST, ber.MODIFY_REQUEST, ber.MODDN_REQUEST}),
    "bind": frozenset({ber.BIND_REQUEST}),
    "search": frozenset({ber.SEARCH_REQUEST}),
    "compare": frozenset({ber.COMPARE_REQUEST}),
    "add": frozenset({ber.ADD_REQUEST}),
    "delete": frozenset({ber.DEL_REQUEST}),
    "modify": frozenset({ber.MODIFY_REQUEST}),
    "modifydn": frozenset({ber.MODDN_REQUEST}),
    "extended": frozenset({ber.EXTENDED_REQUEST}),
}


@attrs.frozen
class Operations:
    """
    The C{operations} condition of a route: a set of request tags, and for
    extended operations optionally the OIDs allowed (empty: any).
    """

    tags: frozenset[int]
    extendedOIDs: frozenset[bytes] = frozenset()

    @classmethod
    def fromString(cls, value: str) -> Operations:
        tags: set[int] = set()
        oids: set[bytes] = set()
        anyExtended = False
        for item in _list(value):
            name, _, oid = item.partition(":")
            name = name.strip().lower()
            if name not in OPERATION_GROUPS:
                raise _Invalid(
                    f"unknown operation {item!r}: expected read, write, bind, extended[:OID] "
                    "or search, compare, add, delete, modify, modifydn"
                )
            if oid:
                if name != "extended" or not re.fullmatch(r"\d+(\.\d+)+", oid.strip()):
                    raise _Invalid(f"bad operation {item!r}: only extended takes an OID, as extended:1.2.3")
                oids.add(oid.strip().encode("ascii"))
            elif name == "extended":
                anyExtended = True
            tags |= OPERATION_GROUPS[name]
        if not tags:
            raise _Invalid("expected at least one operation")
        return cls(frozenset(tags), frozenset() if anyExtended else frozenset(oids))


@attrs.frozen
class Reject:
    """A route's answer without a backend: C{reject = 53 read-only here}."""

    resultCode: int
    message: str

    @classmethod
    def fromString(cls, value: str) -> Reject:
        code, _, text = value.strip().partition(" ")
        try:
            number = int(code)
        except ValueError:
            raise _Invalid(f"expected a result code and a message, as '53 read-only', not {value!r}") from None
        if number <= 0 or number > 0x7FFFFFFF or number in (ber.SASL_BIND_IN_PROGRESS,):
            raise _Invalid(f"{number} is not an error result code")
        return cls(number, text.strip() or "rejected by the proxy's rules")


@attrs.frozen
class Route:
    """
    One rule: conditions that select operations, and where they go.

    A condition left out matches everything; C{pool} and C{reject} are
    exclusive.
    """

    name: str
    pool: str | None = None
    reject: Reject | None = None
    suffix: DN | None = None
    operations: Operations | None = None
    bindDN: DN | None = None
    bindAnonymous: bool = False
    clientNetworks: tuple[Any, ...] = ()
    listener: str | None = None


@attrs.frozen
class Config:
    """The whole of routes.ini."""

    path: str
    listeners: tuple[Listener, ...]
    backends: dict[str, Backend]
    pools: dict[str, Pool]
    routes: tuple[Route, ...]
    maxPDUBytes: int = ber.DEFAULT_MAX_PDU_BYTES
    maxFilterDepth: int = 64

    @classmethod
    def fromFile(cls, path: FilePath[str] | str) -> Config:
        """
        Read and validate a routes.ini file.

        @raise ConfigError: any mistake, with its location.
        """
        filePath = path if isinstance(path, FilePath) else FilePath(path)
        name = filePath.path
        try:
            text = filePath.getContent().decode("utf-8")
        except OSError as e:
            raise ConfigError(name, None, None, f"cannot read the file: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(name, None, None, "the file is not UTF-8 text") from None
        return cls.fromString(text, name)

    @classmethod
    def fromString(cls, text: str, path: str = "routes.ini") -> Config:
        """
        Validate routes.ini text; C{path} is only used in error messages.

        @raise ConfigError: any mistake, with its location.
        """
        return _Loader(path).load(text)


# --- the loader -------------------------------------------------------------

_KeyTable = dict[str, tuple[str, Callable[[str], Any]]]

_GLOBAL_KEYS: _KeyTable = {
    "listen": ("endpoints", _endpoints),
    "max_pdu_bytes": ("maxPDUBytes", _positiveInt),
    "max_filter_depth": ("maxFilterDepth", _positiveInt),
}
_LISTENER_KEYS: _KeyTable = {
    "listen": ("endpoints", _endpoints),
}
_BACKEND_KEYS: _KeyTable = {
    "url": ("url", BackendURL.fromString),
    "weight": ("weight", _positiveInt),
}
_POOL_KEYS: _KeyTable = {
    "backends": ("backends", _list),
    "strategy": ("strategy", _choice("round-robin")),
    "connect_timeout": ("connectTimeout", _seconds),
}
_ROUTE_KEYS: _KeyTable = {
    "pool": ("pool", str.strip),
    "reject": ("reject", Reject.fromString),
    "suffix": ("suffix", _dn),
    "operations": ("operations", Operations.fromString),
    "bind_dn": ("bindDN", str.strip),
    "client_network": ("clientNetworks", _networks),
    "listener": ("listener", str.strip),
}

_SECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, section: str | None, key: str | None, reason: str) -> ConfigError:
        return ConfigError(self.path, section, key, reason)

    def values(self, section: str, items: dict[str, str], table: _KeyTable) -> dict[str, Any]:
        parsed: dict[str, Any] = {}
        for key, raw in items.items():
            if key not in table:
                known = ", ".join(sorted(table))
                raise self.error(section, key, f"unknown key (this section takes: {known})")
            attribute, parse = table[key]
            try:
                parsed[attribute] = parse(raw)
            except _Invalid as e:
                raise self.error(section, key, str(e)) from None
        return parsed

    def load(self, text: str) -> Config:
        parser = configparser.ConfigParser(
            interpolation=None, inline_comment_prefixes=(";", "#"), empty_lines_in_values=False
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text, self.path)
        except configparser.DuplicateSectionError as e:
            raise self.error(e.section, None, "this section appears twice") from None
        except configparser.DuplicateOptionError as e:
            raise self.error(e.section, e.option, "this key appears twice in the section") from None
        except configparser.Error as e:
            raise self.error(None, None, f"not an INI file: {e.message.splitlines()[0]}") from None

        sections: dict[str, dict[str, dict[str, str]]] = {
            "ldaproute": {},
            "listener": {},
            "backend": {},
            "pool": {},
            "route": {},
        }
        order: list[str] = []
        for section in parser.sections():
            items = {key: value for key, value in parser.items(section)}
            if section == "ldaproute":
                sections["ldaproute"][""] = items
                continue
            kind, colon, name = section.partition(":")
            if not colon or kind not in sections or kind == "ldaproute":
                raise self.error(
                    section,
                    None,
                    "unknown section: expected [ldaproute], [listener:NAME], [backend:NAME], "
                    "[pool:NAME] or [route:NAME]",
                )
            if not _SECTION_NAME.fullmatch(name):
                raise self.error(section, None, f"bad name {name!r}: use letters, digits, '-', '_' and '.'")
            sections[kind][name] = items
            if kind == "route":
                order.append(name)

        globalValues = self.values("ldaproute", sections["ldaproute"].get("", {}), _GLOBAL_KEYS)
        listeners = []
        if "endpoints" in globalValues:
            listeners.append(Listener("default", globalValues.pop("endpoints")))
        for name, items in sections["listener"].items():
            section = f"listener:{name}"
            values = self.values(section, items, _LISTENER_KEYS)
            if "endpoints" not in values:
                raise self.error(section, "listen", "missing: a listener needs at least one endpoint")
            if name == "default" and listeners and listeners[0].name == "default":
                raise self.error(section, None, "the name 'default' is taken by [ldaproute] listen")
            listeners.append(Listener(name, **values))
        if not listeners:
            raise self.error("ldaproute", "listen", "missing: give at least one endpoint, such as tcp:389")

        backends = {}
        for name, items in sections["backend"].items():
            section = f"backend:{name}"
            values = self.values(section, items, _BACKEND_KEYS)
            if "url" not in values:
                raise self.error(section, "url", "missing: give the server's address as ldap://host:port")
            backends[name] = Backend(name, **values)

        pools = {}
        for name, items in sections["pool"].items():
            section = f"pool:{name}"
            values = self.values(section, items, _POOL_KEYS)
            names = values.pop("backends", None)
            if not names:
                raise self.error(section, "backends", "missing: a pool needs at least one backend")
            members = []
            for backendName in names:
                if backendName not in backends:
                    raise self.error(section, "backends", f"unknown backend {backendName!r}")
                members.append(backends[backendName])
            if len(set(names)) != len(names):
                raise self.error(section, "backends", "a backend is listed twice")
            pools[name] = Pool(name, tuple(members), **values)

        listenerNames = {listener.name for listener in listeners}
        routes = []
        for name in order:
            section = f"route:{name}"
            values = self.values(section, sections["route"][name], _ROUTE_KEYS)
            pool, reject = values.get("pool"), values.get("reject")
            if pool is None and reject is None:
                raise self.error(section, "pool", "missing: a route needs a pool, or reject = CODE MESSAGE")
            if pool is not None and reject is not None:
                raise self.error(section, "reject", "a route takes either pool or reject, not both")
            if pool is not None and pool not in pools:
                raise self.error(section, "pool", f"unknown pool {pool!r}")
            if values.get("listener") is not None and values["listener"] not in listenerNames:
                raise self.error(section, "listener", f"unknown listener {values['listener']!r}")
            bindDN = values.pop("bindDN", None)
            if bindDN is not None:
                if bindDN.lower() == "anonymous":
                    values["bindAnonymous"] = True
                else:
                    try:
                        values["bindDN"] = _dn(bindDN)
                    except _Invalid as e:
                        raise self.error(section, "bind_dn", str(e)) from None
            routes.append(Route(name, **values))
        if not routes:
            raise self.error(None, None, "no route: add a [route:NAME] section with pool = NAME")

        return Config(
            path=self.path,
            listeners=tuple(listeners),
            backends=backends,
            pools=pools,
            routes=tuple(routes),
            **globalValues,
        )
