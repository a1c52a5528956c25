# -*- test-case-name: tests.test_config -*-
"""
The configuration's values: one frozen attrs class per kind of section of
routes.ini (L{Listener}, L{Backend}, L{Pool}, L{Route}, L{Expectation})
and the values inside them (L{BackendURL}, L{ThrottleStore},
L{Operations}, L{Reject}, L{SuffixRewrite}), each turned into its type as
the file is read (L{ldaproute.config} reads it).  Every layer above
C{wire} may import these; they import only C{wire}, C{core}'s DNs and
secrets, and the value parsers of L{ldaproute.configload.values}.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from ldaproute.core.dn import DN
from ldaproute.core.secrets import DEFAULT_SECRET_ATTRIBUTES
from ldaproute.wire import ber
from ldaproute.configload.values import InvalidValue, cldapPort, commaList, dnValue, resultCode


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
    #: how long an operation may wait for a backend of the pool to take it
    #: (reconnecting with backoff) before it is answered unavailable (52);
    #: 0 (C{off}) answers at once (L{ldaproute.backends.connecting})
    retryBudget: float = 5.0
    #: the longest pause between two reconnect rounds while operations wait
    retryBackoffMax: float = 0.25
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
    #: shared mode: bytes that may wait in the proxy for a client that is
    #: not reading before its searches are abandoned and answered
    #: adminLimitExceeded (L{ldaproute.backends.slowreaders})
    clientBufferMax: int = 2 * 1024 * 1024


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
    #: when an operation's retry budget is spent: C{disconnect} (Notice of
    #: Disconnection, then close, so that reconnecting clients recover) or
    #: C{answer} (unavailable, 52, for that operation)
    onBackendUnavailable: str = "disconnect"

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
    #: the pool's C{retry_budget} for this route's operations (L{None}: the pool's)
    retryBudget: float | None = None
    rewriteSuffix: SuffixRewrite | None = None
    mapAttributes: tuple[tuple[str, str], ...] = ()
    hideAttributes: tuple[str, ...] = ()
    dnAttributes: tuple[str, ...] = ()

    #: whether this route's traffic takes the slow (decoding) path (derived;
    #: kept as a field because every forwarded operation asks)
    rewrites: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self, "rewrites", bool(self.rewriteSuffix is not None or self.mapAttributes or self.hideAttributes)
        )


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


