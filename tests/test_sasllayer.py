"""Unit tests for L{ldaproute.core.sasllayer}."""

from __future__ import annotations

from ldaproute.core.sasllayer import SecurityLayerWatch

LINK = object()


def test_armedAfterSuccessfulLayerCapableBind() -> None:
    watch = SecurityLayerWatch()
    watch.bindSent(1, b"GSS-SPNEGO", LINK)
    watch.bindAnswered(1, 14)
    assert watch.armed is None
    watch.bindSent(2, b"GSS-SPNEGO", LINK)
    watch.bindAnswered(2, 0)
    assert watch.armed is LINK and watch.mechanism == b"GSS-SPNEGO"
    assert watch.check(b"\x00\x00\x00\x40" + b"x" * 0x40, atBoundary=True) is LINK
    assert watch.armed is None


def test_berAfterBindMeansNoLayer() -> None:
    watch = SecurityLayerWatch()
    watch.bindSent(1, b"gssapi", LINK)
    watch.bindAnswered(1, 0)
    assert watch.check(b"\x30\x05\x02\x01\x02\x42\x00", atBoundary=True) is None
    assert watch.check(b"\x00\x00\x00\x01x", atBoundary=True) is None  # disarmed


def test_notArmedForOtherMechanismsOrFailures() -> None:
    watch = SecurityLayerWatch()
    watch.bindSent(1, b"EXTERNAL", LINK)
    watch.bindAnswered(1, 0)
    watch.bindSent(2, None, LINK)
    watch.bindAnswered(2, 0)
    watch.bindSent(3, b"DIGEST-MD5", LINK)
    watch.bindAnswered(3, 49)
    assert watch.armed is None
    assert watch.check(b"\x00\x00", atBoundary=True) is None


def test_midPDUIsNotALayer() -> None:
    watch = SecurityLayerWatch()
    watch.bindSent(1, b"GSSAPI", LINK)
    watch.bindAnswered(1, 0)
    assert watch.check(b"\x00\x01", atBoundary=False) is None
