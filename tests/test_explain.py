"""
Tests for C{ldaproute explain} (L{ldaproute.ops.explain}): the answers it
gives come from the proxy's own decisions (routing, fan-out, rewrite,
policy), and the transcripts in README.rst are what it prints.
"""

from __future__ import annotations

import io
import itertools
import os
import shlex

import pytest

from ldaproute import cli
from ldaproute.config import Config
from ldaproute.core.dn import parseDN
from ldaproute.core.routing import Router
from ldaproute.ops.explain import ExplainError, explain, parseOperation
from ldaproute.wire import ber

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example(name: str) -> Config:
    return Config.fromFile(os.path.join(ROOT, "deploy", "examples", name))


def test_searchSpanningSuffixes() -> None:
    result = explain(example("split-namespace.ini"), parseOperation(["search", "dc=example,dc=com", "sub", "(uid=alice)"]))
    assert result.route == "main,partners,corp"
    assert "fan-out:   the search spans 3 routes; the proxy merges their entries:" in result.lines
    assert "  - route corp: base 'dc=corp,dc=example,dc=com' scope sub -> pool ad" in result.lines


def test_rejectRoute() -> None:
    result = explain(example("split-namespace.ini"), parseOperation(["modify", "uid=bob,ou=partners,dc=example,dc=com"]))
    assert (result.route, result.answer) == ("partners-readonly", 53)


def test_listenerCondition() -> None:
    result = explain(
        example("split-namespace.ini"), parseOperation(["search", "ou=people,dc=example,dc=com"]), listenerName="gc"
    )
    assert (result.route, result.answer) == ("gc-rest", 32)
    assert "  3. gc                   no: the DN is not within suffix dc=corp,dc=example,dc=com" in result.lines


def test_cleartextBindAnswered13() -> None:
    config = example("suffix-rename.ini")
    bind = parseOperation(["bind", "uid=alice,dc=corp,dc=example,dc=com"])
    assert explain(config, bind).answer == ber.CONFIDENTIALITY_REQUIRED
    overTLS = explain(config, bind, tls=True)
    assert (overTLS.answer, overTLS.route, overTLS.pool, overTLS.backends) == (None, "corp", "ad", ["ad1"])
    assert "rewritten: bind dn 'uid=alice,dc=ad,dc=example,dc=local' method 'simple'" in overTLS.lines


def test_rewrittenSearch() -> None:
    result = explain(
        example("suffix-rename.ini"), parseOperation(["search", "ou=people,dc=corp,dc=example,dc=com", "one", "(mail=a@b)", "uid"])
    )
    assert (
        "rewritten: search base 'ou=people,dc=ad,dc=example,dc=local' scope 'one' filter '(userPrincipalName=?)' "
        "attrs 1 sizelimit 0 attributes sAMAccountName"
    ) in result.lines


def test_hiddenAttributeRefused() -> None:
    result = explain(example("suffix-rename.ini"), parseOperation(["compare", "uid=a,dc=corp,dc=example,dc=com", "userPassword"]))
    assert result.answer is not None and result.answer != 0


def test_bindDNAndClientConditions() -> None:
    config = example("read-write-split.ini")
    search = parseOperation(["search", "dc=example,dc=com"])
    admin = explain(config, search, bindDN="uid=root,ou=admins,dc=example,dc=com", client="10.1.2.3")
    assert (admin.route, admin.pool) == ("admin-reads", "primary")
    outside = explain(config, search, bindDN="uid=root,ou=admins,dc=example,dc=com", client="192.0.2.7")
    assert outside.route == "reads"
    assert "  2. admin-reads          no: the client address is not in its client_network" in outside.lines


def test_liveHealthOrdersBackends() -> None:
    config = example("split-namespace.ini")
    search = parseOperation(["search", "dc=corp,dc=example,dc=com"])
    result = explain(config, search, live={"ad1": "down", "ad2": "up"})
    assert result.backends == ["ad2", "ad1"]
    assert result.lines[-1].endswith("ad2 (up), ad1 (down)")


@pytest.mark.parametrize(
    "words, message",
    [
        ([], "give an operation: search, bind, modify, add, delete, modifydn, compare, extended"),
        (["frob"], "unknown operation 'frob': expected search, bind, modify, add, delete, modifydn, compare, extended"),
        (["search"], "search needs a base DN: search BASE [SCOPE [FILTER [ATTRIBUTE...]]]"),
        (["search", "dc=x", "deep"], "unknown scope 'deep': expected base, one, sub or children"),
        (["compare", "cn=x"], "compare needs a DN and an attribute: compare DN ATTR"),
    ],
)
def test_badOperations(words: list[str], message: str) -> None:
    with pytest.raises(ExplainError) as info:
        parseOperation(words)
    assert str(info.value) == message


def test_usageMistakeExit2() -> None:
    out, err = io.StringIO(), io.StringIO()
    path = os.path.join(ROOT, "deploy/examples/suffix-rename.ini")
    assert cli.main(["explain", "-c", path, "frob"], out, err) == 2
    assert err.getvalue().startswith("ldaproute explain: unknown operation 'frob'")


def test_routerAgreesWithWhyNot() -> None:
    """whyNot (explain's reasons) and routeFor (the proxy's choice) never disagree."""
    config = example("split-namespace.ini")
    config2 = example("read-write-split.ini")
    for cfg in (config, config2):
        router = Router(cfg.routes)
        dns = [b"dc=example,dc=com", b"ou=partners,dc=example,dc=com", b"uid=a,dc=corp,dc=example,dc=com", b"dc=other", b"", None]
        tags = [ber.SEARCH_REQUEST, ber.BIND_REQUEST, ber.MODIFY_REQUEST, ber.EXTENDED_REQUEST, ber.COMPARE_REQUEST]
        bound = [None, parseDN("uid=root,ou=admins,dc=example,dc=com")]
        for listener, tag, dn, who, peer in itertools.product(["default", "gc"], tags, dns, bound, ["10.0.0.1", "192.0.2.1", None]):
            chosen = router.routeFor(listener, tag, dn, who, peer)
            first = next((r for r in cfg.routes if router.whyNot(r, listener, tag, dn, who, peer) is None), None)
            assert chosen is first, (listener, tag, dn, who, peer)


def readmeTranscripts() -> list[tuple[list[str], list[str]]]:
    """The C{$ ldaproute explain ...} blocks of README.rst and what follows them."""
    with open(os.path.join(ROOT, "README.rst")) as f:
        lines = f.read().splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip().startswith("$ ldaproute explain "):
            indent = line.index("$")
            output = []
            for following in lines[i + 1 :]:
                if not following.strip() or following.strip().startswith("$ "):
                    break
                output.append(following[indent:])
            found.append((shlex.split(line.strip()[2:])[1:], output))
    return found


def test_readmeTranscripts(monkeypatch: pytest.MonkeyPatch) -> None:
    """README.rst's explain examples are what explain prints today."""
    monkeypatch.chdir(ROOT)
    transcripts = readmeTranscripts()
    assert len(transcripts) >= 3
    for argv, expected in transcripts:
        out = io.StringIO()
        assert cli.main(argv, out, io.StringIO()) == 0
        assert out.getvalue().splitlines() == expected, argv


def test_passwordModifyInCleartext() -> None:
    """The secrets policy (core/secrets) answers for explain too: Password Modify without TLS is 13."""
    config = example("read-write-split.ini")
    result = explain(config, parseOperation(["extended", "1.3.6.1.4.1.4203.1.11.1"]))
    assert result.answer == ber.CONFIDENTIALITY_REQUIRED
    assert explain(config, parseOperation(["extended", "1.3.6.1.4.1.4203.1.11.1"]), tls=True).route == "writes"
