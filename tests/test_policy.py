"""The pure security policy: bind throttle windows and connection limits."""

from __future__ import annotations

import ipaddress

from ldaproute.core.policy import BindThrottle, ConnectionLimits, SlidingWindow, normaliseBindDN

DN = b"uid=alice,ou=people,dc=example,dc=com"


def test_slidingWindowForgetsOldEvents() -> None:
    window = SlidingWindow(10.0)
    for t in (0.0, 1.0, 2.0):
        window.add("k", t)
    assert window.count("k", 5.0) == 3
    assert window.count("k", 10.5) == 2
    assert window.retryAfter("k", 10.5) == 0.5
    assert window.count("k", 12.0) == 0
    assert len(window) == 0  # the key itself is forgotten


def test_slidingWindowCapsKeys() -> None:
    window = SlidingWindow(10.0, maxKeys=3)
    for i in range(5):
        window.add(i, 0.0)
    assert len(window) == 3
    assert window.count(0, 0.0) == 0 and window.count(4, 0.0) == 1


def test_throttleByAddress() -> None:
    throttle = BindThrottle(3, 60.0)
    for t in range(3):
        assert throttle.refusal("10.0.0.1", DN, t) is None
        throttle.failed("10.0.0.1", DN + str(t).encode(), t)  # three different DNs
    refusal = throttle.refusal("10.0.0.1", b"uid=bob", 3.0)
    assert refusal == "too many failed binds from this address; try again in 57s"
    assert throttle.refusal("10.0.0.2", b"uid=bob", 3.0) is None
    assert throttle.refusal("10.0.0.1", b"uid=bob", 60.5) is None


def test_throttleByDN() -> None:
    throttle = BindThrottle(2, 30.0)
    throttle.failed("10.0.0.1", DN, 0.0)
    throttle.failed("10.0.0.2", b"UID=Alice, OU=People,dc=example,dc=com", 1.0)
    assert throttle.refusal("10.0.0.3", DN, 2.0) == "too many failed binds for this DN; try again in 28s"
    assert throttle.refusal("10.0.0.3", b"uid=bob", 2.0) is None
    assert throttle.refusal("10.0.0.3", DN, 31.0) is None


def test_throttleAnonymousCountsAddressOnly() -> None:
    throttle = BindThrottle(1, 30.0)
    throttle.failed(None, b"", 0.0)
    assert throttle.refusal(None, b"", 1.0) is None


def test_normaliseBindDN() -> None:
    assert normaliseBindDN(b"UID=A, OU=B") == b"uid=a,ou=b"


def test_connectionLimits() -> None:
    limits = ConnectionLimits(3, 2)
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") == "this address has reached its limit of 2 connections"
    assert limits.admit("10.0.0.2") is None
    assert limits.admit("10.0.0.3") == "this listener has reached its limit of 3 connections"
    limits.release("10.0.0.1")
    assert limits.connectionsFrom("10.0.0.1") == 1
    assert limits.admit("10.0.0.3") is None
    assert limits.total == 3


def test_unlimited() -> None:
    limits = ConnectionLimits(None, None)
    for _ in range(100):
        assert limits.admit("10.0.0.1") is None


def test_allowlist() -> None:
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    limits = ConnectionLimits(None, None, networks)
    assert limits.allowed("10.1.2.3")
    assert limits.allowed("::ffff:10.1.2.3")
    assert limits.allowed("2001:db8::1")
    assert not limits.allowed("192.168.0.1")
    assert not limits.allowed(None)
    assert ConnectionLimits(None, None).allowed(None)
