"""
The worker group's channel on in-memory transports: failures counted by
worker 0 and pushed to every worker, acknowledged; the fleet-count query;
metrics summed by the rules; readiness for the group.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from twisted.internet.task import Clock
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer

from ldaproute.core.policy import BindThrottle, throttleDigest
from ldaproute.fleet.group import (
    GroupChannel,
    GroupHub,
    GroupMember,
    HubThrottleStore,
)
from ldaproute.fleet.groupmetrics import MergedFamilies, familiesToData, mergeFamilies
from ldaproute.fleet.throttle import ThrottleExchange


def registry(connections: int, up: int, reloadOK: int) -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("ldaproute_client_connections", "c", ["listener"], registry=r).labels("default").inc(connections)
    Gauge("ldaproute_backend_up", "u", ["backend"], registry=r).labels("b").set(up)
    Gauge("ldaproute_client_connections_open", "o", registry=r).set(connections)
    Gauge("ldaproute_config_last_reload_successful", "s", registry=r).set(reloadOK)
    return r


def test_mergeSumsCountersAndCombinesGauges() -> None:
    merged = mergeFamilies([familiesToData(registry(n, up, ok).collect()) for n, up, ok in ((3, 1, 1), (4, 0, 0), (5, 1, 1))])
    text = generate_latest(MergedFamilies(merged)).decode()  # type: ignore[arg-type]
    assert 'ldaproute_client_connections_total{listener="default"} 12.0' in text
    assert "ldaproute_client_connections_open 12.0" in text  # gauges of live state: summed
    assert 'ldaproute_backend_up{backend="b"} 1.0' in text  # backend state: max
    assert "ldaproute_config_last_reload_successful 0.0" in text  # any worker refusing shows
    assert "worker" not in text


class Group:
    """Worker 0's hub and one member, joined through iosim."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.throttle0, self.throttle1 = BindThrottle(5, 60), BindThrottle(5, 60)
        self.exchange0, self.exchange1 = ThrottleExchange(self.clock), ThrottleExchange(self.clock)
        self.exchange0.attach("default", self.throttle0)
        self.exchange1.attach("default", self.throttle1)
        self.hub = GroupHub("/nonexistent/group.sock", 2, self.exchange0, self.clock)
        self.hub.running = True
        self.exchange0.useStore(HubThrottleStore(self.hub))
        self.ready1: tuple[bool, dict[str, Any]] = (True, {"status": "ready"})
        self.member = GroupMember("/nonexistent/group.sock", 1, self.exchange1, registry(2, 1, 1), lambda: self.ready1, self.clock)
        self.member.running = True
        self.exchange1.useStore(self.member)
        server = GroupChannel(self.hub._received, self.hub._lost)
        client = GroupChannel(self.member._received, self.member._lost, self.member.joined)
        self.pump = connect(server, makeFakeServer(server), client, makeFakeClient(client))
        self.clock.advance(0)
        self.pump.flush()


def test_failureInAWorkerReachesWorkerZeroAndBack() -> None:
    group = Group()
    assert group.hub.members.keys() == {1}
    acks = [a for a in group.throttle1.failed("10.0.0.9", b"uid=x", group.clock.seconds()) if a is not None]
    assert len(acks) == 2 and not any(a.called for a in acks)
    group.pump.flush()
    assert all(a.called for a in acks)
    for _ in range(4):
        group.throttle0.failed("10.0.0.9", b"uid=y", group.clock.seconds())
    group.pump.flush()
    # worker 1 sees worker 0's failures, worker 0 sees worker 1's: one count of 5 for the address
    assert group.throttle1.refusal("10.0.0.9", b"uid=z", group.clock.seconds()) is not None
    assert group.throttle0.refusal("10.0.0.9", b"uid=z", group.clock.seconds()) is not None
    assert group.throttle1.refusal("10.0.0.8", b"uid=y", group.clock.seconds()) is None  # 4 for uid=y


def test_memberAsksForTheCounts() -> None:
    group = Group()
    group.hub.failed("default", throttleDigest("dn", b"uid=q"), group.clock.seconds(), 60)
    group.throttle1.observe(throttleDigest("dn", b"uid=q"), [], group.clock.seconds())  # forget the pushed view
    answer = group.throttle1.askFleet("10.0.0.1", b"uid=q")
    assert answer is not None and not answer.called  # type: ignore[attr-defined]
    group.pump.flush()
    assert answer.called  # type: ignore[attr-defined]
    assert group.throttle1._fleet.count(throttleDigest("dn", b"uid=q"), group.clock.seconds()) == 1


def test_metricsAndReadinessOfTheGroup() -> None:
    group = Group()
    answers: list[dict[int, Any]] = []
    group.hub.ask("metrics").addCallback(answers.append)
    group.hub.ask("ready").addCallback(answers.append)
    group.pump.flush()
    metrics, ready = answers
    assert {f["name"] for f in metrics[1]} >= {"ldaproute_client_connections", "ldaproute_backend_up"}
    assert ready == {1: {"ok": True, "body": {"status": "ready"}}}


def test_aMemberThatDoesNotAnswerIsNone() -> None:
    group = Group()
    answers: list[dict[int, Any]] = []
    group.hub.ask("ready").addCallback(answers.append)  # not flushed: no answer
    group.clock.advance(2.0)
    assert answers == [{1: None}]


def test_memberWithoutChannelKeepsFailuresForLater() -> None:
    clock = Clock()
    exchange = ThrottleExchange(clock)
    member = GroupMember("/nonexistent", 1, exchange, CollectorRegistry(), lambda: (True, {}), clock)
    assert member.record("default", "d" * 32, 1.0, 60) is None
    assert member.query("default", ["d" * 32], 60) is None
    samples = {s.name: s.value for f in member.families() for s in f.samples}
    assert samples["ldaproute_throttle_store_pending"] == 1
    assert samples["ldaproute_throttle_store_up"] == 0
