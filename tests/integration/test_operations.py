"""
The operations surface against a real slapd, with the proxy as a real
twistd process: /metrics after real traffic (parsed with prometheus-client's
parser), /healthz and /readyz when a backend dies, SIGHUP reload, SIGTERM
drain with a search in flight, two workers, and HAProxy in front sending
PROXY protocol v2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ldaptor.protocols import pureldap
from prometheus_client.parser import text_string_to_metric_families

from tests.slapd import Slapd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def program(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: apt-get install {name}); the operations tests need it")
    return path


class Proxy:
    """ldaproute under C{twistd -n}, JSON log lines in a file."""

    def __init__(self, directory: str, routes: str, metricsPort: int) -> None:
        self.directory = directory
        self.configPath = os.path.join(directory, "routes.ini")
        self.logPath = os.path.join(directory, "ldaproute.log")
        self.metricsPort = metricsPort
        self.write(routes)
        self.process: subprocess.Popen[bytes] | None = None

    def write(self, text: str) -> None:
        with open(self.configPath, "w") as f:
            f.write(text)

    def start(self, waitPorts: tuple[int, ...] = ()) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        self._log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "ldaproute", "-c", self.configPath, "--log-format", "json"],
            cwd=self.directory, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for port in (self.metricsPort,) + waitPorts:
            self.waitHTTP(port)

    def waitHTTP(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"ldaproute exited with {self.process.returncode}:\n{self.logText()[-3000:]}")
            try:
                self.get("/healthz", port)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise AssertionError(f"ldaproute's metrics port {port} did not answer:\n{self.logText()[-3000:]}")

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{port or self.metricsPort}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def samples(self, port: int | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        code, body = self.get("/metrics", port)
        assert code == 200
        found = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return found

    def logText(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logText().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return events

    def accessLines(self) -> list[dict[str, Any]]:
        """The access log's lines (JSON, as --log-format json makes them)."""
        return [e for e in self.events() if "log_namespace" not in e and "conn" in e and "type" in e]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def freePortPair(count: int = 2) -> int:
    """
    A port P such that P..P+count-1 are free, below the ephemeral range, so
    that no client socket takes one between this check and the bind.
    """
    import random

    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            for candidate in range(port, port + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free ports")


def quietPort() -> int:
    return freePortPair(1)


def waitFor(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def routesIni(listenPort: int, metricsPort: int, backends: dict[str, str], routes: str, extra: str = "") -> str:
    text = f"[ldaproute]\nlisten = tcp:{listenPort}:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\n"
    text += f"metrics = tcp:{metricsPort}:interface=127.0.0.1\n{extra}\n"
    for name, url in backends.items():
        text += f"[backend:{name}]\nurl = {url}\n[pool:{name}]\nbackends = {name}\nhealth_interval = 200ms\nhealth_rise = 1\n"
    return text + routes


@pytest.fixture
def proxyFactory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def factory(routes: str, metricsPort: int) -> Proxy:
        proxy = Proxy(str(tmp_path_factory.mktemp("proxy")), routes, metricsPort)
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        proxy.stop()


def ldap(tool: str, slapd: Slapd, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program(tool), "-x", "-H", f"ldap://127.0.0.1:{port}", *args],
        env=slapd.clientEnv(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def op(name: str, route: str, code: int, backend: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"op": name, "route": route, "code": str(code), "backend": backend}
    return ("ldaproute_operations_total", frozenset(labels.items()))


def searchPDU(messageID: int, base: bytes, filterText: str = "(objectClass=*)") -> bytes:
    from ldaptor.ldapfilter import parseFilter

    request = pureldap.LDAPSearchRequest(baseObject=base, scope=2, filter=parseFilter(filterText), attributes=[b"1.1"])
    return pureldap.LDAPMessage(request, id=messageID).toWire()


class Reader:
    """Whole LDAP PDUs from a socket, read without our own codec."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def pdu(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        while True:
            if len(self.buffer) >= 2:
                first = self.buffer[1]
                header = 2 if first < 0x80 else 2 + (first & 0x7F)
                if len(self.buffer) >= header:
                    length = first if first < 0x80 else int.from_bytes(self.buffer[2:header], "big")
                    if len(self.buffer) >= header + length:
                        pdu, self.buffer = self.buffer[: header + length], self.buffer[header + length :]
                        return pdu
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk


_readers: dict[int, Reader] = {}


def opTag(pdu: bytes) -> int:
    first = pdu[1]
    pos = 2 if first < 0x80 else 2 + (first & 0x7F)
    return pdu[pos + 2 + pdu[pos + 1]]


def readUntilDone(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """Read responses until a SearchResultDone (tag 0x65), a Notice of Disconnection or EOF."""
    reader = _readers.setdefault(id(sock), Reader(sock))
    data = b""
    while True:
        pdu = reader.pdu(timeout)
        if pdu is None:
            return data
        data += pdu
        if opTag(pdu) == 0x65 or b"1.3.6.1.4.1.1466.20036" in pdu:
            return data


# --- metrics ------------------------------------------------------------------


def test_metricsMatchTraffic(slapd: Slapd, proxyFactory: Callable[..., Proxy]) -> None:
    listen, metrics = quietPort(), quietPort()
    routes = (
        "[route:readonly]\noperations = write\nreject = 53 read-only here\n"
        "[route:people]\nsuffix = ou=people,dc=example,dc=com\npool = main\n"
        "[route:rest]\npool = main\n"
    )
    proxy = proxyFactory(routesIni(listen, metrics, {"main": slapd.url}, routes), metrics)
    proxy.start()

    for i in range(3):
        result = ldap("ldapsearch", slapd, listen, "-D", slapd.rootDN, "-w", "secret",
                      "-b", slapd.peopleDN, f"(uid=user{i})", "dn")  # fmt: skip
        assert result.returncode == 0, result.stderr
    result = ldap("ldapsearch", slapd, listen, "-b", slapd.groupsDN, "(cn=*)", "dn")
    assert result.returncode == 0, result.stderr
    result = ldap("ldapwhoami", slapd, listen, "-D", slapd.userDN(1), "-w", "wrong")
    assert result.returncode == 49, result.stderr
    result = ldap("ldapdelete", slapd, listen, "-D", slapd.rootDN, "-w", "secret", slapd.userDN(5))
    assert result.returncode == 53, result.stderr

    found = proxy.samples()
    # binds route by their DN: cn=admin and the anonymous bind go to 'rest', uid=user1 to 'people'
    assert found[op("bind", "rest", 0, "main")] == 5
    assert found[op("bind", "people", 49, "main")] == 1
    assert found[op("search", "people", 0, "main")] == 3
    assert found[op("search", "rest", 0, "main")] == 1
    assert found[op("delete", "readonly", 53, "")] == 1
    key = ("ldaproute_operation_duration_seconds_count", frozenset({"op": "search", "route": "people"}.items()))
    assert found[key] == 3
    key = ("ldaproute_operation_duration_seconds_bucket", frozenset({"op": "search", "route": "people", "le": "+Inf"}.items()))
    assert found[key] == 3
    assert found[("ldaproute_binds_total", frozenset({"listener": "default", "outcome": "success"}.items()))] == 5
    assert found[("ldaproute_binds_total", frozenset({"listener": "default", "outcome": "failure"}.items()))] == 1
    assert found[("ldaproute_client_connections_total", frozenset({"listener": "default", "tls": "none"}.items()))] == 6
    assert found[("ldaproute_client_connections_open", frozenset({"listener": "default", "tls": "none"}.items()))] == 0
    assert found[("ldaproute_backend_up", frozenset({"backend": "main"}.items()))] == 1
    assert found[("ldaproute_client_received_bytes_total", frozenset({"listener": "default"}.items()))] > 0
    assert found[("ldaproute_client_sent_bytes_total", frozenset({"listener": "default"}.items()))] > 0

    code, body = proxy.get("/metrics")
    assert b"uid=" not in body and b"127.0.0.1" not in body, "labels must never carry DNs or addresses"

    def written() -> list[dict[str, Any]] | None:  # lines are written in batches
        lines = proxy.accessLines()
        return lines if sum(1 for e in lines if e["type"] == "delete") == 1 else None

    access = waitFor(written, "the access log lines")
    searches = [e for e in access if e["type"] == "search" and e["route"] == "people"]
    assert [(e["base"], e["scope"], e["filter"], e["attrs"], e["entries"], e["result"], e["op"]) for e in searches] == [
        (slapd.peopleDN, "sub", "(uid=?)", 1, 1, 0, 2)
    ] * 3
    binds = [e for e in access if e["type"] == "bind" and e["conn"] == searches[0]["conn"]]
    assert [(e["dn"], e["method"], e["op"]) for e in binds] == [(slapd.rootDN, "simple", 1)]
    [delete] = [e for e in access if e["type"] == "delete"]
    assert (delete["dn"], delete["route"], delete["backend"], delete["result"], delete["msg"]) == (
        slapd.userDN(5), "readonly", None, 53, "read-only here"
    )
    assert "wrong" not in proxy.logText() and "secret" not in proxy.logText()


# --- health -------------------------------------------------------------------


def test_healthWhenBackendDies(slapdFactory: Callable[..., Slapd], proxyFactory: Callable[..., Proxy]) -> None:
    backend = slapdFactory()
    listen, metrics = quietPort(), quietPort()
    # answered 52 once a short retry budget is spent (the default is 5s, then a disconnect)
    config = routesIni(
        listen, metrics, {"main": backend.url}, "[route:all]\npool = main\n", "on_backend_unavailable = answer"
    ).replace("health_rise = 1\n", "health_rise = 1\nretry_budget = 500ms\n")
    proxy = proxyFactory(config, metrics)
    proxy.start()
    code, body = proxy.get("/readyz")
    assert (code, json.loads(body)["status"]) == (200, "ready")

    backend.kill()
    result = ldap("ldapsearch", backend, listen, "-b", backend.peopleDN, "(uid=user1)", "dn")
    assert result.returncode == 52, result.stderr
    code, body = proxy.get("/readyz")
    assert code == 503
    assert json.loads(body) == {
        "status": "unready", "draining": False, "listeners": "open", "pools": {"main": "down"},
        "reasons": ["no routed pool has a backend up"],
    }  # fmt: skip
    code, body = proxy.get("/healthz")
    assert (code, json.loads(body)["status"]) == (200, "alive")
    found = proxy.samples()
    assert found[("ldaproute_backend_up", frozenset({"backend": "main"}.items()))] == 0
    assert found[op("bind", "all", 52, "main")] == 1

    backend.start()
    result = ldap("ldapsearch", backend, listen, "-b", backend.peopleDN, "(uid=user1)", "dn")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5  # the next health probe marks it up
    while proxy.get("/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the backend never came back up"
        time.sleep(0.1)


# --- reload -------------------------------------------------------------------


def test_reload(slapdFactory: Callable[..., Slapd], proxyFactory: Callable[..., Proxy]) -> None:
    big, small = slapdFactory(entries=60), slapdFactory(entries=5)
    listen, metrics = quietPort(), quietPort()
    backends = {"big": big.url, "small": small.url}
    proxy = proxyFactory(routesIni(listen, metrics, backends, "[route:all]\npool = big\n"), metrics)
    proxy.start()

    session = socket.create_connection(("127.0.0.1", listen))
    session.sendall(searchPDU(1, big.peopleDN.encode(), "(uid=user50)"))
    assert b"uid=user50" in readUntilDone(session)

    proxy.write(routesIni(listen, metrics, backends, "[route:moved]\npool = small\n"))
    proxy.signal(signal.SIGHUP)
    key = ("ldaproute_config_reloads_total", frozenset({"outcome": "success"}.items()))
    waitFor(lambda: proxy.samples().get(key) == 1, "a successful reload")

    # the open session carries on; its new operations follow the new route
    session.sendall(searchPDU(2, big.peopleDN.encode(), "(uid=user50)"))
    answer = readUntilDone(session)
    assert b"uid=user50" not in answer and answer.endswith(b"\x0a\x01\x00\x04\x00\x04\x00")
    result = ldap("ldapsearch", small, listen, "-b", small.peopleDN, "(uid=user4)", "dn")
    assert "uid=user4," in result.stdout

    proxy.write("[ldaproute]\nlisten = tcp:1:interface=127.0.0.1\n[route:broken]\npool = nowhere\n")
    proxy.signal(signal.SIGHUP)
    key = ("ldaproute_config_reloads_total", frozenset({"outcome": "invalid"}.items()))
    waitFor(lambda: proxy.samples().get(key) == 1, "a refused reload")
    refusals = [e for e in proxy.events() if "Reload refused" in e.get("log_format", "")]
    assert "unknown pool 'nowhere'" in refusals[0]["reason"]
    session.sendall(searchPDU(3, small.peopleDN.encode(), "(uid=user4)"))
    assert b"uid=user4" in readUntilDone(session)
    found = proxy.samples()
    assert found[op("search", "all", 0, "big")] == 1
    assert found[op("search", "moved", 0, "small")] == 3
    session.close()


# --- drain --------------------------------------------------------------------


def test_drainLetsASearchFinish(slapdFactory: Callable[..., Slapd], proxyFactory: Callable[..., Proxy]) -> None:
    backend = slapdFactory()
    listen, metrics = quietPort(), quietPort()
    routes = routesIni(listen, metrics, {"main": backend.url}, "[route:all]\npool = main\n", "drain_timeout = 20s")
    proxy = proxyFactory(routes, metrics)
    proxy.start()
    idle = socket.create_connection(("127.0.0.1", listen))
    busy = socket.create_connection(("127.0.0.1", listen))
    busy.sendall(searchPDU(1, backend.peopleDN.encode(), "(uid=user1)"))
    assert b"uid=user1" in readUntilDone(busy)

    backend.pause()
    try:
        busy.sendall(searchPDU(2, backend.peopleDN.encode(), "(uid=user2)"))
        inFlight = ("ldaproute_backend_operations_in_flight", frozenset({"backend": "main"}.items()))
        waitFor(lambda: proxy.samples().get(inFlight) == 1, "the search to be in flight")
        proxy.signal(signal.SIGTERM)
        waitFor(lambda: proxy.get("/readyz")[0] == 503, "/readyz to turn unready")
        assert json.loads(proxy.get("/readyz")[1])["draining"] is True
        # the idle client is told at once; the listener is closed
        assert b"1.3.6.1.4.1.1466.20036" in readUntilDone(idle, 10)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", listen), timeout=2).close()
        time.sleep(1.0)
        assert proxy.process is not None and proxy.process.poll() is None
    finally:
        backend.resume()
    answer = readUntilDone(busy)
    assert b"uid=user2" in answer
    notice = readUntilDone(busy, 10)
    assert b"1.3.6.1.4.1.1466.20036" in answer + notice
    assert proxy.process is not None
    assert proxy.process.wait(20) == 0


def test_drainTimeout(slapdFactory: Callable[..., Slapd], proxyFactory: Callable[..., Proxy]) -> None:
    backend = slapdFactory()
    listen, metrics = quietPort(), quietPort()
    routes = routesIni(listen, metrics, {"main": backend.url}, "[route:all]\npool = main\n", "drain_timeout = 1s")
    proxy = proxyFactory(routes, metrics)
    proxy.start()
    busy = socket.create_connection(("127.0.0.1", listen))
    backend.pause()
    try:
        busy.sendall(searchPDU(1, backend.peopleDN.encode()))
        inFlight = ("ldaproute_backend_operations_in_flight", frozenset({"backend": "main"}.items()))
        waitFor(lambda: proxy.samples().get(inFlight) == 1, "the search to be in flight")
        started = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert b"1.3.6.1.4.1.1466.20036" in readUntilDone(busy, 15)
        assert 0.9 <= time.monotonic() - started < 10
        assert proxy.process is not None and proxy.process.wait(20) == 0
    finally:
        backend.resume()


# --- workers ------------------------------------------------------------------


def test_twoWorkersBothTakeConnections(slapd: Slapd, proxyFactory: Callable[..., Proxy]) -> None:
    listen, metrics = quietPort(), freePortPair()
    routes = routesIni(
        listen, metrics, {"main": slapd.url}, "[route:all]\npool = main\n", "workers = 2\nmetrics_per_worker = on"
    )
    proxy = proxyFactory(routes, metrics)
    proxy.start(waitPorts=(metrics + 1,))
    pids = {json.loads(proxy.get("/healthz", port)[1])["pid"] for port in (metrics, metrics + 1)}
    assert len(pids) == 2

    for i in range(24):
        sock = socket.create_connection(("127.0.0.1", listen))
        sock.sendall(searchPDU(1, slapd.peopleDN.encode(), f"(uid=user{i})"))
        assert f"uid=user{i},".encode() in readUntilDone(sock)
        sock.close()
    key = ("ldaproute_client_connections_total", frozenset({"listener": "default", "tls": "none"}.items()))
    counts = [proxy.samples(port).get(key, 0) for port in (metrics, metrics + 1)]
    assert sum(counts) == 24 and all(count > 0 for count in counts), counts

    assert proxy.stop() == 0
    for port in (metrics, metrics + 1):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- PROXY protocol -------------------------------------------------------------


class ProxiedSlapd(Slapd):
    """A slapd that also listens on pldap:// (PROXY protocol required there)."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.pldapPort = quietPort()

    @property
    def pldapURL(self) -> str:
        return f"ldap://127.0.0.1:{self.pldapPort}"

    def _listenURLs(self) -> str:
        return super()._listenURLs() + f" pldap://127.0.0.1:{self.pldapPort}"


def test_haproxyInFrontPldapBehind(
    proxyFactory: Callable[..., Proxy], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """
    client -> HAProxy (send-proxy-v2) -> ldaproute (haproxy:tcp:) -> slapd
    pldap:// (send_proxy = v2; slapd reads v2 only, v1 is checked against
    Twisted's parser in test_proxyheader): ldaproute's access log and
    slapd's own log both see the client's address.
    """
    haproxy = program("haproxy")
    backend = ProxiedSlapd(str(tmp_path_factory.mktemp("pslapd")), entries=20, accessLog=True)
    backend.start()
    process = None
    try:
        front, listen, metrics = quietPort(), quietPort(), quietPort()
        routes = routesIni(listen, metrics, {"main": backend.pldapURL}, "[route:all]\npool = main\n")
        routes = routes.replace(f"listen = tcp:{listen}", f"listen = haproxy:tcp:{listen}")
        routes = routes.replace("[pool:main]", "send_proxy = v2\n[pool:main]")
        proxy = proxyFactory(routes, metrics)
        proxy.start()
        conf = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
        conf.write_text(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
            f"frontend ldap\n  bind 127.0.0.1:{front}\n  default_backend proxy\n"
            f"backend proxy\n  server ldaproute 127.0.0.1:{listen} send-proxy-v2\n"
        )
        process = subprocess.Popen([haproxy, "-db", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def connect() -> socket.socket | None:
            try:
                return socket.create_connection(("127.0.0.1", front), timeout=2)
            except OSError:
                return None

        sock = waitFor(connect, "haproxy to listen")
        clientPort = sock.getsockname()[1]
        sock.sendall(searchPDU(1, backend.peopleDN.encode(), "(uid=user7)"))
        assert b"uid=user7" in readUntilDone(sock)
        sock.close()

        def accessEvent() -> dict[str, Any] | None:
            for event in proxy.accessLines():
                return event
            return None

        assert waitFor(accessEvent, "the access event")["client"] == f"127.0.0.1:{clientPort}"
        accepted = [line for line in backend.logLines() if "ACCEPT from" in line]
        assert any(f"IP=127.0.0.1:{clientPort} " in line for line in accepted), accepted
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        backend.stop()
