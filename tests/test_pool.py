"""Tests for ldaproute.backends.pool: strategies, caps, health state."""

from __future__ import annotations

from collections import Counter

from ldaproute.config import Backend, BackendURL, Pool
from ldaproute.backends.pool import Backends, BackendState, PoolState


def makePool(strategy: str, *specs: dict) -> PoolState:
    backends = {}
    for i, spec in enumerate(specs):
        name = f"b{i}"
        backends[name] = Backend(name, BackendURL("ldap", "127.0.0.1", 1000 + i), **spec)
    pool = Pool("p", tuple(backends.values()), strategy=strategy)
    registry = Backends()
    registry.configure(backends, {"p": pool})
    return registry.pools["p"]


def firstChoices(pool: PoolState, n: int) -> Counter[str]:
    return Counter(next(pool.candidates()).name for _ in range(n))


def test_roundRobinSpreadsEvenly() -> None:
    pool = makePool("round-robin", {}, {}, {})
    assert firstChoices(pool, 300) == Counter(b0=100, b1=100, b2=100)


def test_roundRobinTriesEveryBackendOnce() -> None:
    pool = makePool("round-robin", {}, {}, {})
    assert sorted(s.name for s in pool.candidates()) == ["b0", "b1", "b2"]


def test_weightedFollowsWeights() -> None:
    pool = makePool("weighted", {"weight": 1}, {"weight": 3}, {"weight": 6})
    assert firstChoices(pool, 1000) == Counter(b0=100, b1=300, b2=600)


def test_weightedIsSmooth() -> None:
    """No backend gets a burst: b1 (weight 1 of 2) alternates."""
    pool = makePool("weighted", {"weight": 1}, {"weight": 1})
    choices = [next(pool.candidates()).name for _ in range(6)]
    assert choices in (["b0", "b1"] * 3, ["b1", "b0"] * 3)


def test_leastOutstandingPicksFewestInFlight() -> None:
    pool = makePool("least-outstanding", {}, {}, {})
    pool.backends[0].inFlight = 5
    pool.backends[1].inFlight = 1
    pool.backends[2].inFlight = 3
    assert [s.name for s in pool.candidates()] == ["b1", "b2", "b0"]


def test_leastOutstandingRotatesTies() -> None:
    pool = makePool("least-outstanding", {}, {})
    assert firstChoices(pool, 10) == Counter(b0=5, b1=5)


def test_failoverUsesPriorityThenFallsBackAndFailsBack() -> None:
    pool = makePool("failover", {"priority": 2}, {"priority": 1}, {"priority": 3})
    assert [s.name for s in pool.candidates()] == ["b1", "b0", "b2"]
    pool.backends[1].connectFailed("refused")
    assert [s.name for s in pool.candidates()] == ["b0", "b2", "b1"]
    pool.backends[1].connectSucceeded()
    assert next(pool.candidates()).name == "b1"


def test_downBackendsComeLast() -> None:
    pool = makePool("round-robin", {}, {})
    pool.backends[0].connectFailed("refused")
    assert [[s.name for s in pool.candidates()] for _ in range(2)] == [["b1", "b0"], ["b1", "b0"]]


def test_capLeavesFullBackendsOut() -> None:
    pool = makePool("round-robin", {"maxConnections": 1}, {})
    pool.backends[0].connections = 1
    assert [s.name for s in pool.candidates()] == ["b1"]
    assert not pool.allAtCapacity()


def test_allAtCapacity() -> None:
    pool = makePool("round-robin", {"maxConnections": 1}, {"maxConnections": 2})
    pool.backends[0].connections = 1
    pool.backends[1].connecting = 2
    assert list(pool.candidates()) == []
    assert pool.allAtCapacity()


def test_probeFallAndRise() -> None:
    state = BackendState(Backend("b", BackendURL("ldap", "h", 1)))
    assert [state.probed(False, "x", rise=2, fall=3) for _ in range(3)] == [False, False, True]
    assert not state.up
    assert [state.probed(True, "ok", rise=2, fall=3) for _ in range(2)] == [False, True]
    assert state.up


def test_checkedBackendNeedsProbesToComeBack() -> None:
    """With health checks, a successful connection alone does not mark a backend up."""
    state = BackendState(Backend("b", BackendURL("ldap", "h", 1)))
    state.checked = True
    state.connectFailed("refused")
    state.connectSucceeded()
    assert not state.up


def test_failureInterruptsRise() -> None:
    state = BackendState(Backend("b", BackendURL("ldap", "h", 1)))
    state.connectFailed("refused")
    state.probed(True, "ok", 2, 3)
    state.probed(False, "no", 2, 3)
    state.probed(True, "ok", 2, 3)
    assert not state.up


def test_reloadKeepsState() -> None:
    backend = Backend("b", BackendURL("ldap", "h", 1))
    registry = Backends()
    registry.configure({"b": backend}, {"p": Pool("p", (backend,))})
    registry.states["b"].inFlight = 4
    registry.configure({"b": backend}, {"p": Pool("p", (backend,), strategy="weighted")})
    assert registry.pools["p"].backends[0].inFlight == 4
