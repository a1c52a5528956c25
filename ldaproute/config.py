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

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import attrs
from twisted.python.filepath import FilePath

from ldaproute.core.dn import DN
from ldaproute.core.secrets import DEFAULT_SECRET_ATTRIBUTES
from ldaproute.wire import ber
from ldaproute.configload import SectionError
from ldaproute.configload.backend import settleBackend
from ldaproute.configload.expect import settleExpectation
from ldaproute.configload.listener import checkThrottleStore, checkWorkers, settleListener
from ldaproute.configload.pool import settlePool
from ldaproute.configload.route import settleRoute
from ldaproute.configload.sections import SectionsError, readSections
from ldaproute.configload.values import (
    KeyTable,
    parseSection,
    InvalidValue,
    accessLogTarget,
    attributeMap,
    attributeNames,
    choice,
    cldapPort,
    commaList,
    datagramSize,
    dnValue,
    duration,
    hostPort,
    ipNetworks,
    nonNegativeInt,
    operationWords,
    oneServerEndpoint,
    optionalDuration,
    optionalPositiveInt,
    passwordFile,
    positiveInt,
    readableFile,
    resultCode,
    serverEndpoints,
    srvName,
    udpEndpoints,
    workerCount,
    yesNo,
)


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


# --- values -----------------------------------------------------------------


@attrs.frozen
class ThrottleStore:
    """
    C{throttle_store = redis://HOST:PORT/DB} (or C{rediss://} for TLS):
    where every process of every replica keeps its bind-failure counts.
    C{throttle_store = local} is L{None} in L{Config.throttleStore}.
    """

    tls: bool
    host: str
    port: int
    db: int

    @classmethod
    def fromString(cls, value: str) -> ThrottleStore | None:
        text = value.strip()
        if text.lower() == "local":
            return None
        parsed = urlsplit(text)
        if parsed.scheme not in ("redis", "rediss"):
            raise InvalidValue(f"expected local, redis://HOST:PORT/DB or rediss://HOST:PORT/DB, not {text!r}")
        if parsed.password is not None or parsed.username is not None:
            raise InvalidValue("no credentials in the URL: put the password in throttle_store_password_file")
        if parsed.query or parsed.fragment:
            raise InvalidValue(f"unexpected ?query or #fragment in {text!r}")
        try:
            port = parsed.port or 6379
        except ValueError:
            raise InvalidValue(f"bad port in {text!r}") from None
        if not parsed.hostname:
            raise InvalidValue(f"no host in {text!r}")
        db = parsed.path.strip("/") or "0"
        if not db.isdigit():
            raise InvalidValue(f"the path is the database number, as redis://host:6379/0, not {parsed.path!r}")
        return cls(parsed.scheme == "rediss", parsed.hostname, port, int(db))

    @property
    def url(self) -> str:
        """The store as written, for logs (it never holds a password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"


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
            raise InvalidValue(f"bad URL {text!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme == "ldapi":
            path = unquote(parts.netloc)
            if not path.startswith("/"):
                raise InvalidValue(f"bad URL {text!r}: ldapi needs an absolute socket path, %2F-escaped")
            return cls("ldapi", path, 0)
        if scheme not in ("ldap", "ldaps"):
            raise InvalidValue(f"bad URL {text!r}: the scheme must be ldap, ldaps or ldapi")
        if not parts.hostname:
            raise InvalidValue(f"bad URL {text!r}: no host")
        if parts.path not in ("", "/") or parts.query:
            raise InvalidValue(f"bad URL {text!r}: a backend URL names a server only, no DN or query")
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
    #: UDP port of the backend's CLDAP service; L{None} (C{cldap_port = none})
    #: for servers without CLDAP, whose rootDSE the proxy answers itself.
    cldapPort: int | None = 389
    #: failover order: the lowest priority that is up serves (as in SRV).
    priority: int = 0
    #: upstream connections allowed at once; L{None} for no cap.
    maxConnections: int | None = None
    tls: str = "none"  # "none", "starttls" or "ldaps"
    caFile: str | None = None
    clientCert: str | None = None
    clientKey: str | None = None
    serverName: str | None = None  # the name to verify; default url.host

    @property
    def verifyName(self) -> str:
        """The name the backend's certificate must carry."""
        return self.serverName or self.url.host
    sendProxy: str = "none"  # PROXY protocol header to send first: none, v1, v2


@attrs.frozen
class Pool:
    """Backends that serve the same data, and how to choose among them."""

    name: str
    backends: tuple[Backend, ...]
    strategy: str = "round-robin"
    connectTimeout: float = 5.0
    #: an operation unanswered after this long is abandoned upstream and
    #: answered timeLimitExceeded (3); L{None} for no limit.
    operationTimeout: float | None = None
    healthCheck: bool = True
    healthInterval: float = 5.0
    healthTimeout: float = 2.0
    healthRise: int = 2
    healthFall: int = 3
    healthBindDN: str | None = None
    healthBindPassword: str | None = attrs.field(default=None, repr=False)
    #: DNS SRV name the backends come from, instead of C{backends}.
    srv: str | None = None
    #: C{(host, port)} of the DNS server for C{srv}; L{None} for the system's.
    srvResolver: tuple[str, int] | None = None
    # shared mode (ldaproute.backends.shared): multiplexed upstream connections per
    # backend, dedicated bind-check connections per backend, and the
    # proxy's own identity on the multiplexed ones (L{None}: anonymous)
    sharedConnections: int = 4
    bindConnections: int = 2
    #: bind connections per backend opened while binds wait, at most
    maxBindConnections: int = 16
    serviceBindDN: str | None = None
    serviceBindPassword: str | None = attrs.field(default=None, repr=False)
    #: shared mode: a paged-results or VLV sequence that sees no request for
    #: this long gives back the connection it holds exclusively
    pagedIdleTimeout: float = 60.0


@attrs.frozen
class Listener:
    """Endpoints that accept clients, and the policy for those clients."""

    name: str
    endpoints: tuple[str, ...]
    starttls: str = "off"  # "terminate", "passthrough" or "off"
    tlsCert: str | None = None
    tlsKey: str | None = None
    tlsMinVersion: str = "1.2"
    #: refuse every request that carries a password (see
    #: L{ldaproute.core.secrets}) on a connection without TLS
    requireTLSForPasswords: bool = True
    #: the attributes whose values an add, modify or compare must not send
    #: in cleartext
    secretAttributes: tuple[str, ...] = DEFAULT_SECRET_ATTRIBUTES
    allowAnonymous: bool = True
    clientNetworks: tuple[Any, ...] = ()  # empty: every address
    maxConnections: int | None = 10000
    maxConnectionsPerAddress: int | None = 1000
    idleTimeout: float | None = None
    maxOutstanding: int | None = 1000
    pduTimeout: float | None = 30.0
    bindThrottleFailures: int | None = 5
    bindThrottleWindow: float = 60.0

    @property
    def requireTLSForSimpleBind(self) -> bool:
        """The former name of L{requireTLSForPasswords}."""
        return self.requireTLSForPasswords


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
        for item in commaList(value):
            name, _, oid = item.partition(":")
            name = name.strip().lower()
            if name not in OPERATION_GROUPS:
                raise InvalidValue(
                    f"unknown operation {item!r}: expected read, write, bind, extended[:OID] "
                    "or search, compare, add, delete, modify, modifydn"
                )
            if oid:
                if name != "extended" or not re.fullmatch(r"\d+(\.\d+)+", oid.strip()):
                    raise InvalidValue(f"bad operation {item!r}: only extended takes an OID, as extended:1.2.3")
                oids.add(oid.strip().encode("ascii"))
            elif name == "extended":
                anyExtended = True
            tags |= OPERATION_GROUPS[name]
        if not tags:
            raise InvalidValue("expected at least one operation")
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
            raise InvalidValue(f"expected a result code and a message, as '53 read-only', not {value!r}") from None
        if number <= 0 or number > 0x7FFFFFFF or number in (ber.SASL_BIND_IN_PROGRESS,):
            raise InvalidValue(f"{number} is not an error result code")
        return cls(number, text.strip() or "rejected by the proxy's rules")


@attrs.frozen
class SuffixRewrite:
    """C{rewrite_suffix = CLIENT-SUFFIX => BACKEND-SUFFIX}."""

    client: DN
    backend: DN

    @classmethod
    def fromString(cls, value: str) -> SuffixRewrite:
        left, arrow, right = value.partition("=>")
        if not arrow or not left.strip() or not right.strip():
            raise InvalidValue(f"expected CLIENT-SUFFIX => BACKEND-SUFFIX, not {value.strip()!r}")
        return cls(dnValue(left), dnValue(right))


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
    operationTimeout: float | None = None
    rewriteSuffix: SuffixRewrite | None = None
    mapAttributes: tuple[tuple[str, str], ...] = ()
    hideAttributes: tuple[str, ...] = ()
    dnAttributes: tuple[str, ...] = ()

    @property
    def rewrites(self) -> bool:
        """Whether this route's traffic takes the slow (decoding) path."""
        return bool(self.rewriteSuffix is not None or self.mapAttributes or self.hideAttributes)


@attrs.frozen
class Expectation:
    """
    An C{[expect:NAME]} section: an operation, as C{ldaproute explain}
    takes it, and where it must go.  C{ldaproute check} verifies them;
    start-up only checks their keys.
    """

    name: str
    operation: tuple[str, ...]
    bindDN: str | None = None
    client: str = "192.0.2.1"
    listener: str | None = None
    tls: bool = False
    route: str | None = None
    pool: str | None = None
    backend: str | None = None
    result: int | None = None


@attrs.frozen
class Config:
    """The whole of routes.ini."""

    path: str
    listeners: tuple[Listener, ...]
    backends: dict[str, Backend]
    pools: dict[str, Pool]
    routes: tuple[Route, ...]
    maxPDUBytes: int = ber.DEFAULT_MAX_PDU_BYTES
    # CLDAP (UDP), off unless [ldaproute] cldap is given; see ldaproute.listeners.cldap
    cldapEndpoints: tuple[str, ...] = ()
    cldapTimeout: float = 2.0
    cldapMaxDatagram: int = 1400
    cldapRateLimit: int = 20
    cldapAmplification: int = 8
    cldapRootDSETTL: float = 60.0
    metrics: str | None = None
    #: where access-log lines go: C{"stdout"}, a file path, or L{None} (off)
    accessLog: str | None = "stdout"
    logFormat: str = "text"
    #: "debug" adds an event per routing decision and rewrite (costly: off
    #: the hot path unless asked for)
    logLevel: str = "info"
    drainTimeout: float = 25.0
    workers: int = 1
    #: C{session} (an upstream connection per client) or C{shared}
    #: (clients multiplexed per operation, see L{ldaproute.backends.shared})
    mode: str = "session"
    maxFilterDepth: int = 64
    # the fleet (ldaproute.fleet): shared bind-throttle counts (L{None}:
    # this host only), one metrics endpoint per worker group, file watching
    throttleStore: ThrottleStore | None = None
    throttleStoreCAFile: str | None = None
    throttleStorePassword: str | None = attrs.field(default=None, repr=False)
    metricsPerWorker: bool = False
    watchConfig: bool = False
    #: C{[expect:NAME]} sections, in file order (see L{Expectation})
    expectations: tuple[Expectation, ...] = ()

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

_T = TypeVar("_T")

_GLOBAL_KEYS: KeyTable = {
    "listen": ("endpoints", serverEndpoints),
    "max_pdu_bytes": ("maxPDUBytes", positiveInt),
    "cldap": ("cldapEndpoints", udpEndpoints),
    "cldap_timeout": ("cldapTimeout", duration),
    "cldap_max_datagram": ("cldapMaxDatagram", datagramSize),
    "cldap_rate_limit": ("cldapRateLimit", positiveInt),
    "cldap_amplification": ("cldapAmplification", positiveInt),
    "cldap_rootdse_ttl": ("cldapRootDSETTL", duration),
    "metrics": ("metrics", oneServerEndpoint),
    "access_log": ("accessLog", accessLogTarget),
    "log_format": ("logFormat", choice("text", "json")),
    "log_level": ("logLevel", choice("info", "debug")),
    "drain_timeout": ("drainTimeout", duration),
    "workers": ("workers", workerCount),
    "mode": ("mode", choice("session", "shared")),
    "max_filter_depth": ("maxFilterDepth", positiveInt),
    "throttle_store": ("throttleStore", lambda value: ThrottleStore.fromString(value)),
    "throttle_store_ca_file": ("throttleStoreCAFile", readableFile),
    "throttle_store_password_file": ("throttleStorePassword", passwordFile),
    "metrics_per_worker": ("metricsPerWorker", yesNo),
    "watch_config": ("watchConfig", yesNo),
}
_LISTENER_KEYS: KeyTable = {
    "listen": ("endpoints", serverEndpoints),
    "starttls": ("starttls", choice("terminate", "passthrough", "off")),
    "tls_cert": ("tlsCert", readableFile),
    "tls_key": ("tlsKey", readableFile),
    "tls_min_version": ("tlsMinVersion", choice("1.2", "1.3")),
    "require_tls_for_passwords": ("requireTLSForPasswords", yesNo),
    # the former name, kept so existing files load: settled in listener()
    "require_tls_for_simple_bind": ("requireTLSForSimpleBind", yesNo),
    "secret_attributes": ("secretAttributes", attributeNames),
    "allow_anonymous": ("allowAnonymous", yesNo),
    "client_network": ("clientNetworks", ipNetworks),
    "max_connections": ("maxConnections", optionalPositiveInt),
    "max_connections_per_address": ("maxConnectionsPerAddress", optionalPositiveInt),
    "idle_timeout": ("idleTimeout", optionalDuration),
    "max_outstanding": ("maxOutstanding", optionalPositiveInt),
    "pdu_timeout": ("pduTimeout", optionalDuration),
    "bind_throttle_failures": ("bindThrottleFailures", optionalPositiveInt),
    "bind_throttle_window": ("bindThrottleWindow", duration),
}
#: [ldaproute] also takes the default listener's policy keys.
_GLOBAL_KEYS.update({key: value for key, value in _LISTENER_KEYS.items() if key != "listen"})
_BACKEND_KEYS: KeyTable = {
    "url": ("url", BackendURL.fromString),
    "weight": ("weight", positiveInt),
    "cldap_port": ("cldapPort", cldapPort),
    "priority": ("priority", nonNegativeInt),
    "max_connections": ("maxConnections", positiveInt),
    "tls": ("tls", choice("none", "starttls", "ldaps")),
    "ca_file": ("caFile", readableFile),
    "client_cert": ("clientCert", readableFile),
    "client_key": ("clientKey", readableFile),
    "server_name": ("serverName", str.strip),
    "send_proxy": ("sendProxy", choice("none", "v1", "v2")),
}
_POOL_KEYS: KeyTable = {
    "backends": ("backends", commaList),
    "strategy": ("strategy", choice("round-robin", "weighted", "least-outstanding", "failover")),
    "connect_timeout": ("connectTimeout", duration),
    "operation_timeout": ("operationTimeout", duration),
    "health_check": ("healthCheck", yesNo),
    "health_interval": ("healthInterval", duration),
    "health_timeout": ("healthTimeout", duration),
    "health_rise": ("healthRise", positiveInt),
    "health_fall": ("healthFall", positiveInt),
    "health_bind_dn": ("healthBindDN", str.strip),
    "health_bind_password": ("healthBindPassword", str.strip),
    "srv": ("srv", srvName),
    "srv_resolver": ("srvResolver", hostPort),
    "shared_connections": ("sharedConnections", positiveInt),
    "bind_connections": ("bindConnections", positiveInt),
    "max_bind_connections": ("maxBindConnections", positiveInt),
    "service_bind_dn": ("serviceBindDN", str.strip),
    "service_bind_password": ("serviceBindPassword", str.strip),
    "paged_idle_timeout": ("pagedIdleTimeout", duration),
}
_ROUTE_KEYS: KeyTable = {
    "pool": ("pool", str.strip),
    "reject": ("reject", Reject.fromString),
    "suffix": ("suffix", dnValue),
    "operations": ("operations", Operations.fromString),
    "bind_dn": ("bindDN", str.strip),
    "client_network": ("clientNetworks", ipNetworks),
    "listener": ("listener", str.strip),
    "operation_timeout": ("operationTimeout", duration),
    "rewrite_suffix": ("rewriteSuffix", SuffixRewrite.fromString),
    "map_attributes": ("mapAttributes", attributeMap),
    "hide_attributes": ("hideAttributes", attributeNames),
    "dn_attributes": ("dnAttributes", attributeNames),
}

_EXPECT_KEYS: KeyTable = {
    "operation": ("operation", operationWords),
    "bind_dn": ("bindDN", str.strip),
    "client": ("client", str.strip),
    "listener": ("listener", str.strip),
    "tls": ("tls", yesNo),
    "route": ("route", str.strip),
    "pool": ("pool", str.strip),
    "backend": ("backend", str.strip),
    "result": ("result", resultCode),
}

_REWRITE_KEYS = (
    ("rewrite_suffix", "rewriteSuffix"),
    ("map_attributes", "mapAttributes"),
    ("hide_attributes", "hideAttributes"),
    ("dn_attributes", "dnAttributes"),
)

class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, section: str | None, key: str | None, reason: str) -> ConfigError:
        return ConfigError(self.path, section, key, reason)

    def values(self, section: str, items: dict[str, str], table: KeyTable) -> dict[str, Any]:
        """C{items} in their types (L{parseSection}), their mistakes located in C{section}."""
        return self.settled(section, parseSection, items, table)

    def settled(self, section: str, settle: Callable[..., _T], *args: Any) -> _T:
        """C{settle(*args)} of L{ldaproute.configload}, its mistakes located in C{section}."""
        try:
            return settle(*args)
        except SectionError as e:
            raise self.error(section, e.key, e.reason) from None

    def load(self, text: str) -> Config:
        try:
            sections, order = readSections(text, self.path)
        except SectionsError as e:
            raise self.error(e.section, e.key, e.reason) from None

        globalValues = self.values("ldaproute", sections["ldaproute"].get("", {}), _GLOBAL_KEYS)
        listeners = []
        policyKeys = {attribute for attribute, _ in _LISTENER_KEYS.values()} - {"endpoints"}
        defaultPolicy = {key: globalValues.pop(key) for key in list(globalValues) if key in policyKeys}
        if "endpoints" in globalValues:
            defaultPolicy["endpoints"] = globalValues.pop("endpoints")
            listeners.append(Listener("default", **self.settled("ldaproute", settleListener, defaultPolicy)))
        elif defaultPolicy:
            raise self.error("ldaproute", "listen", "missing: listener policy keys here apply to the listen endpoints")
        for name, items in sections["listener"].items():
            section = f"listener:{name}"
            values = self.values(section, items, _LISTENER_KEYS)
            if "endpoints" not in values:
                raise self.error(section, "listen", "missing: a listener needs at least one endpoint")
            if name == "default" and listeners and listeners[0].name == "default":
                raise self.error(section, None, "the name 'default' is taken by [ldaproute] listen")
            listeners.append(Listener(name, **self.settled(section, settleListener, values)))
        if not listeners:
            raise self.error("ldaproute", "listen", "missing: give at least one endpoint, such as tcp:389")

        if globalValues.get("workers", 1) > 1:
            endpoints = [description for listener in listeners for description in listener.endpoints]
            self.settled("ldaproute", checkWorkers, endpoints, globalValues.get("metrics"))
        self.settled("ldaproute", checkThrottleStore, globalValues)

        backends = {}
        for name, items in sections["backend"].items():
            section = f"backend:{name}"
            values = self.values(section, items, _BACKEND_KEYS)
            backends[name] = Backend(name, **self.settled(section, settleBackend, values))

        pools = {}
        for name, items in sections["pool"].items():
            section = f"pool:{name}"
            values = self.values(section, items, _POOL_KEYS)
            names = self.settled(section, settlePool, values, values.pop("backends", None), set(backends))
            members = [backends[backendName] for backendName in names]
            pools[name] = Pool(name, tuple(members), **values)

        listenerNames = {listener.name for listener in listeners}
        if globalValues.get("cldapEndpoints"):
            listenerNames.add("cldap")  # CLDAP datagrams route as listener "cldap"
        routes = []
        for name in order:
            section = f"route:{name}"
            values = self.values(section, sections["route"][name], _ROUTE_KEYS)
            values = self.settled(section, settleRoute, values, pools, listenerNames, _REWRITE_KEYS)
            routes.append(Route(name, **values))
        if not routes:
            raise self.error(None, None, "no route: add a [route:NAME] section with pool = NAME")
        expectations = []
        for name, items in sections["expect"].items():
            section = f"expect:{name}"
            values = self.values(section, items, _EXPECT_KEYS)
            routeNames = [route.name for route in routes]
            self.settled(section, settleExpectation, values, routeNames, pools, backends, listenerNames)
            expectations.append(Expectation(name, **values))

        return Config(
            path=self.path,
            listeners=tuple(listeners),
            backends=backends,
            pools=pools,
            routes=tuple(routes),
            expectations=tuple(expectations),
            **globalValues,
        )
