"""
One proxy across many processes, with real parts: a real redis-server
(started here on loopback, no persistence), a real slapd, and several real
ldaproute processes.

 - Three processes sharing one Redis: 30 wrong binds for one DN, spread
   round-robin over them on new connections, are cut off after 5 in total
   (without Redis: 5 per process, 15).
 - Redis killed mid-test: every process keeps throttling on its own
   counts at once, binds do not stall, the outage is told once and seen
   in the metrics; Redis back: the shared count resumes.
 - ``workers = 4``: one ``/metrics`` whose counts equal what the four
   workers handled, the workers share throttle counts without Redis, and
   ``/readyz`` answers for the group.
 - Reload across the group: a SIGHUP to the first process reloads every
   worker; a bad file is refused everywhere; ``watch_config`` follows a
   Kubernetes-style ``..data`` symlink swap.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ldaproute.wire.results import readResponse
from ldaproute.wire import ber
from tests.integration.proxy import ProxyProcess
from tests.integration.rawclient import RawClient
from tests.redis import RedisServer
from tests.slapd import Slapd, freePort

WRONG = "not-the-password"


@pytest.fixture
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ProxyProcess]]:
    started: list[ProxyProcess] = []

    def start(config: str) -> ProxyProcess:
        proxy = ProxyProcess(str(tmp_path_factory.mktemp("ldaproute")), config)
        started.append(proxy.start())
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def routes(slapd: Slapd, extra: str = "") -> str:
    return (
        "[ldaproute]\n"
        "listen = tcp:{port}:interface=127.0.0.1\n"
        "require_tls_for_simple_bind = off  ; cleartext test binds on loopback\n"
        "access_log = off\n"
        f"{extra}"
        "[backend:slapd]\n"
        f"url = {slapd.url}\n"
        "[pool:main]\n"
        "backends = slapd\n"
        "health_check = off\n"
        "[route:all]\n"
        "pool = main\n"
    )


def wrongBind(port: int, dn: str, source: str = "127.0.0.1") -> tuple[int, float]:
    """
    A wrong password on a new connection from C{source} (any 127/8 address
    is loopback): the result code and how long it took.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(ber.simpleBindRequest(1, dn.encode(), WRONG.encode()))
        framer = ber.Framer(1 << 20)
        while True:
            data = sock.recv(65536)
            assert data, "the proxy closed the connection without answering the bind"
            pdus = framer.feed(data)
            if pdus:
                code = readResponse(pdus[0]).resultCode
                return code, time.monotonic() - started


def httpGet(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, body = httpGet(port, "/metrics")
    assert code == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def waitFor(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def storeUp(port: int) -> float:
    return samples(port).get(("ldaproute_throttle_store_up", frozenset({("store", "redis")})), -1)


# --- three processes, one Redis ---------------------------------------------------


def test_threeProcessesShareOneCount(slapd: Slapd, redis: RedisServer, processes: Callable[[str], ProxyProcess]) -> None:
    metricsPorts = [freePort() for _ in range(3)]
    proxies = [
        processes(routes(slapd, f"throttle_store = {redis.url}\nmetrics = tcp:{m}:interface=127.0.0.1\n"))
        for m in metricsPorts
    ]
    for m in metricsPorts:
        waitFor(lambda m=m: storeUp(m) == 1, "every process to reach Redis")
    dn = slapd.userDN(1)
    codes = [wrongBind(proxies[i % 3].port, dn)[0] for i in range(30)]
    assert codes == [ber.INVALID_CREDENTIALS] * 5 + [ber.UNWILLING_TO_PERFORM] * 25, str(codes)
    # the right password is refused too while the DN is throttled
    client = RawClient("127.0.0.1", proxies[0].port)
    assert client.bind(dn, slapd.userPassword(1))[0] == ber.UNWILLING_TO_PERFORM
    client.close()


def test_withoutRedisEachProcessCountsAlone(slapd: Slapd, processes: Callable[[str], ProxyProcess]) -> None:
    """The figure to compare with: three independent processes allow 5 guesses each."""
    proxies = [processes(routes(slapd)) for _ in range(3)]
    dn = slapd.userDN(2)
    codes = [wrongBind(proxies[i % 3].port, dn)[0] for i in range(30)]
    assert codes.count(ber.INVALID_CREDENTIALS) == 15, codes


def test_redisOutageFallsBackToLocalCounts(
    slapd: Slapd, redis: RedisServer, processes: Callable[[str], ProxyProcess]
) -> None:
    metricsPorts = [freePort() for _ in range(3)]
    proxies = [
        processes(routes(slapd, f"throttle_store = {redis.url}\nmetrics = tcp:{m}:interface=127.0.0.1\n"))
        for m in metricsPorts
    ]
    for m in metricsPorts:
        waitFor(lambda m=m: storeUp(m) == 1, "every process to reach Redis")

    # two shared failures, then Redis dies
    dn = slapd.userDN(3)
    assert [wrongBind(proxies[i].port, dn)[0] for i in range(2)] == [ber.INVALID_CREDENTIALS] * 2
    time.sleep(0.2)  # let the last report reach Redis before it dies
    redis.kill()

    # binds neither fail nor stall: each process throttles on what it knows
    # (the 2 shared failures it heard of, plus its own) at once
    results = [wrongBind(proxies[i % 3].port, dn) for i in range(12)]
    assert max(seconds for _, seconds in results) < 2.0, results
    codes = [code for code, _ in results]
    # 3 more failures reach the shared limit in each process's view: 5 - 2 = 3 per process
    assert codes.count(ber.INVALID_CREDENTIALS) == 9, codes
    assert codes[-3:] == [ber.UNWILLING_TO_PERFORM] * 3, codes
    for m in metricsPorts:
        waitFor(lambda m=m: storeUp(m) == 0, "the outage in the metrics")
        outages = samples(m)[("ldaproute_throttle_store_outages_total", frozenset({("store", "redis")}))]
        assert outages == 1
        code, body = httpGet(m, "/readyz")
        assert code == 200, body  # the proxy still serves: the outage is not a reason to leave the Service
    for proxy in proxies:
        told = proxy.log().count("is unreachable")
        assert told == 1, proxy.log()

    # Redis back (empty: it kept nothing): the shared count resumes
    redis.start()
    for m in metricsPorts:
        waitFor(lambda m=m: storeUp(m) == 1, "every process to reach Redis again")
    other = slapd.userDN(4)  # from another address: 127.0.0.1 is still throttled locally
    codes = [wrongBind(proxies[i % 3].port, other, source="127.0.0.3")[0] for i in range(9)]
    assert codes == [ber.INVALID_CREDENTIALS] * 5 + [ber.UNWILLING_TO_PERFORM] * 4, str(codes)
    for proxy in proxies:
        assert proxy.log().count("reachable again") == 1, proxy.log()


# --- workers = 4 -------------------------------------------------------------------


def searchPDU(messageID: int, base: str, uid: str) -> bytes:
    content = (
        ber.tlv(0x04, base.encode()) + ber.tlv(0x0A, b"\x02") + ber.tlv(0x0A, b"\x00")
        + ber.tlv(0x02, b"\x00") + ber.tlv(0x02, b"\x00") + ber.tlv(0x01, b"\x00")
        + ber.tlv(0xA3, ber.tlv(0x04, b"uid") + ber.tlv(0x04, uid.encode()))
        + ber.tlv(0x30, ber.tlv(0x04, b"uid"))
    )  # fmt: skip
    return ber.message(messageID, ber.tlv(ber.SEARCH_REQUEST, content))


def search(port: int, base: str, uid: str) -> int:
    client = RawClient("127.0.0.1", port)
    try:
        return client.call(searchPDU, base, uid)[0]
    finally:
        client.close()


def groupReady(port: int) -> bool:
    try:
        code, body = httpGet(port, "/readyz")
    except OSError:
        return False
    return code == 200 and json.loads(body)["ready"] == 4


def test_fourWorkersOneMetricsEndpoint(slapd: Slapd, processes: Callable[[str], ProxyProcess]) -> None:
    metrics = freePort()
    proxy = processes(routes(slapd, f"workers = 4\nmetrics = tcp:{metrics}:interface=127.0.0.1\n"))
    waitFor(lambda: groupReady(metrics), "four workers ready on the group's /readyz", timeout=30)
    health = json.loads(httpGet(metrics, "/healthz")[1])
    assert health["workers"] == {"0": "alive", "1": "alive", "2": "alive", "3": "alive"}

    connectionsKey = ("ldaproute_client_connections_total", frozenset({("listener", "default"), ("tls", "none")}))
    before = samples(metrics).get(connectionsKey, 0)  # the start-up check's connection
    for i in range(40):
        assert search(proxy.port, slapd.peopleDN, f"user{i % 10}") == ber.SUCCESS
    found = samples(metrics)
    connections = found[connectionsKey] - before
    searches = sum(
        value for (name, labels), value in found.items()
        if name == "ldaproute_operations_total" and ("op", "search") in labels
    )  # fmt: skip
    durations = sum(
        value for (name, labels), value in found.items()
        if name == "ldaproute_operation_duration_seconds_count" and ("op", "search") in labels
    )  # fmt: skip
    assert (connections, searches, durations) == (40, 40, 40)
    assert found[("ldaproute_workers", frozenset({("state", "reporting")}))] == 4
    assert found[("ldaproute_backend_up", frozenset({("backend", "slapd")}))] == 1  # max, not a sum
    # each worker took a share: per-worker counts come back with metrics_per_worker only
    assert not any("worker" in dict(labels) for _, labels in found)

    # the workers share throttle counts through worker 0, no Redis needed
    dn = slapd.userDN(5)
    codes = [wrongBind(proxy.port, dn)[0] for _ in range(20)]
    assert codes.count(ber.INVALID_CREDENTIALS) == 5, codes


def test_reloadReachesEveryWorkerAndBadFileNone(slapd: Slapd, processes: Callable[[str], ProxyProcess], tmp_path_factory: pytest.TempPathFactory) -> None:
    metrics = freePort()
    text = routes(slapd, f"workers = 3\nmetrics = tcp:{metrics}:interface=127.0.0.1\n")
    proxy = processes(text)
    waitFor(lambda: groupReady3(metrics), "three workers ready")
    reloads = lambda outcome: samples(metrics).get(("ldaproute_config_reloads_total", frozenset({("outcome", outcome)})), 0)  # noqa: E731

    with open(proxy.configPath, "w") as f:
        f.write(text.replace("[route:all]\npool = main\n", "[route:all]\nreject = 53 closed for the test\n").replace("{port}", str(proxy.port)))
    assert proxy.process is not None
    proxy.process.send_signal(signal.SIGHUP)
    waitFor(lambda: reloads("success") == 3, "three successful reloads (one per worker)")
    assert all(search(proxy.port, slapd.peopleDN, "user1") == 53 for _ in range(12))

    with open(proxy.configPath, "w") as f:
        f.write("[ldaproute]\nlisten = nonsense\n")
    proxy.process.send_signal(signal.SIGHUP)
    waitFor(lambda: reloads("invalid") == 1, "the refusal in the metrics")
    time.sleep(0.5)
    found = samples(metrics)
    assert found[("ldaproute_config_reloads_total", frozenset({("outcome", "success")}))] == 3
    assert found[("ldaproute_config_last_reload_successful", frozenset())] == 0
    assert all(search(proxy.port, slapd.peopleDN, "user1") == 53 for _ in range(12))  # every worker kept the good file


def groupReady3(port: int) -> bool:
    try:
        code, body = httpGet(port, "/readyz")
    except OSError:
        return False
    return code == 200 and json.loads(body)["ready"] == 3


def test_watchConfigFollowsTheConfigMapSwap(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The kubelet's way: files in a timestamped directory, ``..data`` renamed over, routes.ini a link through it."""
    directory = str(tmp_path_factory.mktemp("configmap"))
    port, metrics = freePort(), freePort()
    text = routes(slapd, f"watch_config = on\nmetrics = tcp:{metrics}:interface=127.0.0.1\n").replace("{port}", str(port))

    def publish(version: str, content: str) -> None:
        os.mkdir(os.path.join(directory, version))
        with open(os.path.join(directory, version, "routes.ini"), "w") as f:
            f.write(content)
        os.symlink(version, os.path.join(directory, "..data_tmp"))
        os.rename(os.path.join(directory, "..data_tmp"), os.path.join(directory, "..data"))

    publish("..2026_01_01_v1", text)
    os.symlink("..data/routes.ini", os.path.join(directory, "routes.ini"))
    proxy = ProxyProcess(directory, text, port=port)
    os.remove(proxy.configPath)  # ProxyProcess wrote a plain file: put the ConfigMap link back
    os.symlink("..data/routes.ini", proxy.configPath)
    proxy.start()
    try:
        assert search(port, slapd.peopleDN, "user1") == ber.SUCCESS
        publish("..2026_01_01_v2", text.replace("[route:all]\npool = main\n", "[route:all]\nreject = 53 moved\n"))
        waitFor(lambda: search(port, slapd.peopleDN, "user1") == 53, "the swapped ConfigMap in force")
        publish("..2026_01_01_v3", "[ldaproute]\nlisten = nonsense\n")
        waitFor(
            lambda: samples(metrics).get(("ldaproute_config_reloads_total", frozenset({("outcome", "invalid")})), 0) == 1,
            "the bad ConfigMap refused",
        )
        assert search(port, slapd.peopleDN, "user1") == 53
    finally:
        proxy.stop()
