"""
Tests for L{ldaproute.core.dn}: RFC 4514 parsing and normalisation, with
property tests over escapes, spaces, case and multi-valued RDNs, and the
suffix massage round trip of L{ldaproute.core.rewrite.swapSuffix}.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldaproute.core.dn import DNCache, parseDN, rdnTexts
from ldaproute.core.rewrite import swapSuffix

settings.register_profile("ldaproute", deadline=None, derandomize=True, max_examples=60)
settings.load_profile("ldaproute")

#: Spellings of one attribute type: all must normalise alike.
TYPE_SPELLINGS = {
    "cn": ["cn", "CN", "commonName", "COMMONNAME", "2.5.4.3"],
    "ou": ["ou", "OU", "organizationalUnitName", "2.5.4.11"],
    "dc": ["dc", "DC", "domainComponent", "0.9.2342.19200300.100.1.25"],
    "uid": ["uid", "UID", "userid", "0.9.2342.19200300.100.1.1"],
    "mail": ["mail", "MAIL"],
}
SPECIALS = ',+"\\<>;=# '

values = st.text(
    alphabet=st.one_of(st.sampled_from(list(SPECIALS) + list("abcXYZ019-_.")), st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF, exclude_categories=("Cs", "Zs", "Zl", "Zp"))),
    min_size=1,
    max_size=12,
).filter(lambda v: v.strip(" ") != "")
types = st.sampled_from(sorted(TYPE_SPELLINGS))
avas = st.tuples(types, values)
rdns = st.lists(avas, min_size=1, max_size=3, unique_by=lambda ava: ava[0])
dns = st.lists(rdns, min_size=1, max_size=4)


def escapeMinimal(value: str) -> str:
    """RFC 4514 section 2.4: the least escaping a writer may do."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (i == 0 and ch in "# ") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        elif ch == "=":
            out.append("\\=")
        else:
            out.append(ch)
    return "".join(out)


def escapeHex(value: str) -> str:
    """Every character as \\XX UTF-8 octets (upper or lower case hex)."""
    return "".join("".join(f"\\{b:02X}" for b in ch.encode("utf-8")) for ch in value)


def escapeSpecialsHex(value: str) -> str:
    out = []
    for ch in escapeMinimal(value).replace("\\=", "=").split("\\"):
        out.append(ch)
    # re-escape: specials as lowercase hex, others raw
    text = []
    for i, ch in enumerate(value):
        if ch in SPECIALS and ch != " " or (ch == " " and (i == 0 or i == len(value) - 1)):
            text.append(f"\\{ord(ch):02x}")
        else:
            text.append(ch)
    return "".join(text)


ESCAPERS = [escapeMinimal, escapeHex, escapeSpecialsHex]


def render(dn: list[list[tuple[str, str]]], escaper: int, spelling: int, spaces: bool, reverse: bool, swapcase: bool) -> str:
    rendered = []
    for rdn in dn:
        parts = []
        for attributeType, value in (reversed(rdn) if reverse else rdn):
            spellings = TYPE_SPELLINGS[attributeType]
            name = spellings[spelling % len(spellings)]
            shown = value.swapcase() if swapcase else value
            parts.append(f"{name}={ESCAPERS[escaper](shown)}")
        rendered.append((" + " if spaces else "+").join(parts))
    return (" , " if spaces else ",").join(rendered)


def expectedValue(value: str) -> str:
    return re.sub(" +", " ", value.strip(" ")).casefold()


@given(dns, st.integers(0, 2), st.integers(0, 2), st.integers(0, 4), st.integers(0, 4), st.booleans(), st.booleans(), st.booleans())
def test_spellingsNormaliseAlike(dn, escaperA, escaperB, spellingA, spellingB, spaces, reverse, swapcase) -> None:
    """Escapes, type spellings, spaces around separators, AVA order and
    value case do not change the normalised DN."""
    a = parseDN(render(dn, escaperA, spellingA, False, False, False))
    b = parseDN(render(dn, escaperB, spellingB, spaces, reverse, swapcase))
    assert a == b


@given(dns, st.integers(0, 2))
def test_normalisedValues(dn, escaper) -> None:
    """Each value comes back unescaped, case-folded, insignificant spaces removed."""
    parsed = parseDN(render(dn, escaper, 0, False, False, False))
    assert parsed.rdns == tuple(tuple(sorted((t, expectedValue(v)) for t, v in rdn)) for rdn in dn)


@given(dns, dns, dns, st.integers(0, 2))
def test_suffixMassageRoundTrip(below, client, backend, escaper) -> None:
    """client suffix -> backend suffix -> client suffix gives the same name,
    and the RDNs below the suffix are kept as written."""
    clientSuffix = parseDN(render(client, escaper, 0, False, False, False))
    backendSuffix = parseDN(render(backend, 0, 1, True, False, False))
    text = render(below, escaper, 0, False, False, False) + "," + clientSuffix.text
    there = swapSuffix(text, clientSuffix, backendSuffix)
    assert there is not None
    assert parseDN(there).isWithin(backendSuffix)
    back = swapSuffix(there, backendSuffix, clientSuffix)
    assert back is not None
    assert parseDN(back) == parseDN(text)
    assert back.startswith(render(below, escaper, 0, False, False, False))


@given(dns, dns)
def test_notWithinIsLeftAlone(a, b) -> None:
    dnA = parseDN(render(a, 0, 0, False, False, False))
    suffix = parseDN(render(b, 0, 0, False, False, False))
    if not dnA.isWithin(suffix):
        assert swapSuffix(dnA.text, suffix, parseDN("dc=x")) is None


@pytest.mark.parametrize(
    "a, b",
    [
        ("CN=Foo\\, Bar , DC=Example", "cn=foo\\2c bar,dc=example"),
        ("cn=a+sn=b,dc=x", "SN=B + CN=A,DC=X"),
        ("uid=x;dc=y", "uid=x,dc=y"),
        ('cn="a, b",dc=x', "cn=a\\, b,dc=x"),
        ("cn=\\e4\\c3\\a9", "cn=\u00e4\u00c3\u00a9".encode("latin-1").decode("latin-1").replace("\u00e4\u00c3\u00a9", "\\e4\\c3\\a9")),
        ("cn=  many   spaces  ,dc=x", "cn=many spaces,dc=x"),
    ],
)
def test_examples(a: str, b: str) -> None:
    if "\\e4" in a:
        with pytest.raises(ValueError):
            parseDN(a)  # \e4\c3\a9 is not UTF-8
        return
    assert parseDN(a) == parseDN(b)


@pytest.mark.parametrize("bad", ["cn", "cn=a,", "=a", "cn=a\\", "c n=a", 'cn="a', "cn=\\ff"])
def test_badDNs(bad: str) -> None:
    with pytest.raises(ValueError):
        parseDN(bad)


def test_rootAndWithin() -> None:
    assert parseDN("").isRoot()
    assert parseDN("  ").isRoot()
    assert parseDN("uid=a,dc=example,dc=com").isWithin(parseDN("DC=Example, DC=Com"))
    assert parseDN("dc=example,dc=com").isWithin(parseDN(""))
    assert not parseDN("dc=com").isWithin(parseDN("dc=example,dc=com"))
    assert not parseDN("dc=xexample,dc=com").isWithin(parseDN("dc=example,dc=com"))


def test_dnCacheRemembersAndStaysBounded() -> None:
    """The runtime's cache: one parse per text, never more than its limit held."""
    cache = DNCache(limit=3)
    first = cache.parse("CN=Foo , dc=example")
    assert cache.parse("CN=Foo , dc=example") is first
    assert cache.parseBytes(b"CN=Foo , dc=example") is first
    assert first == parseDN("cn=foo,dc=example")
    for i in range(10):
        cache.parse(f"cn=u{i}")
        assert len(cache) <= 3


def test_dnCacheRefusesWhatParseDNRefuses() -> None:
    cache = DNCache()
    with pytest.raises(ValueError, match="not attribute=value"):
        cache.parse("nonsense")
    with pytest.raises(ValueError, match="not UTF-8"):
        cache.parseBytes(b"cn=\xff")
    assert len(cache) == 0


def test_rdnTextsKeepsEscapedSpaces() -> None:
    assert rdnTexts("cn=a\\ , ou=b ;dc=c") == ["cn=a\\ ", "ou=b", "dc=c"]
