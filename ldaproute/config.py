# -*- test-case-name: tests.test_config -*-
"""
routes.ini -> typed, validated, frozen configuration values (the values
themselves are L{ldaproute.configvalues}'s, imported here for every reader).

Every value is turned into its type as the file is read (URLs into host,
port and TLS mode, endpoint strings checked by Twisted's own parser, DNs
normalised), and every mistake raises L{ConfigError} naming the file, the
section, the key and what is wrong, so that a bad file stops start-up (or a
reload) before any port opens.  Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.python.filepath import FilePath

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
    accessLogTarget,
    attributeMap,
    attributeNames,
    budget,
    byteSize,
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

from ldaproute.configvalues import (
    Backend,
    BackendURL,
    Expectation,
    Listener,
    Operations,
    Pool,
    Reject,
    Route,
    SuffixRewrite,
    ThrottleStore,
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
    "on_backend_unavailable": ("onBackendUnavailable", choice("answer", "disconnect")),
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
    "retry_budget": ("retryBudget", budget),
    "retry_backoff_max": ("retryBackoffMax", duration),
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
    "client_buffer_max": ("clientBufferMax", byteSize),
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
    "retry_budget": ("retryBudget", budget),
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
