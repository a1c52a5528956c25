# -*- test-case-name: tests.test_dn -*-
"""
Distinguished names: parsing (RFC 4514) and normalisation for comparison.

Routing compares an operation's target DN with route suffixes on every
operation, so this is a small parser (with a bounded L{DNCache} that the
runtime owns) rather than ldaptor's object-per-RDN classes.  Normalisation follows what directory
servers do for the attributes used in naming: attribute types are
case-insensitive (and common long names map to their short form), values
compare with caseIgnoreMatch (case folded, insignificant spaces removed)
except for the few case-exact attributes listed here, and escapes (C{\\,},
C{\\2C}) are resolved, so C{CN=Foo\\, Bar , DC=Example} and
C{cn=foo\\2c bar,dc=example} are the same name.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

#: Long attribute names and the short names directories print.
_TYPE_ALIASES: Final = {
    "commonname": "cn",
    "surname": "sn",
    "organizationname": "o",
    "organizationalunitname": "ou",
    "domaincomponent": "dc",
    "countryname": "c",
    "localityname": "l",
    "stateorprovincename": "st",
    "userid": "uid",
    "streetaddress": "street",
    "2.5.4.3": "cn",
    "2.5.4.4": "sn",
    "2.5.4.10": "o",
    "2.5.4.11": "ou",
    "0.9.2342.19200300.100.1.25": "dc",
    "0.9.2342.19200300.100.1.1": "uid",
}

#: Attributes whose values compare case-sensitively (caseExactMatch and
#: octetStringMatch in the standard schemas); everything else used in DNs
#: is caseIgnore.
_CASE_EXACT: Final = frozenset({"krbprincipalname", "ipaserviceprincipalname", "entryuuid", "objectguid"})

_SPACES = re.compile(r" +")

RDN = tuple[tuple[str, str], ...]


@attrs.frozen(cache_hash=True)
class DN:
    """
    A parsed distinguished name.

    @ivar rdns: normalised RDNs, leaf first; each RDN is a sorted tuple of
        C{(type, value)} pairs, so multi-valued RDNs compare in any order.
    @ivar text: the DN as written.
    """

    rdns: tuple[RDN, ...]
    text: str = attrs.field(eq=False)

    def isWithin(self, suffix: DN) -> bool:
        """True when this DN is C{suffix} or an entry below it."""
        n = len(suffix.rdns)
        if n == 0:
            return True
        return len(self.rdns) >= n and self.rdns[-n:] == suffix.rdns

    def isRoot(self) -> bool:
        """True for the empty DN (the rootDSE)."""
        return not self.rdns

    def __str__(self) -> str:
        return self.text


def _normaliseType(attributeType: str) -> str:
    lowered = attributeType.strip().lower()
    if not lowered:
        raise ValueError("empty attribute type")
    if not re.fullmatch(r"[a-z][a-z0-9-]*|\d+(\.\d+)*", lowered):
        raise ValueError(f"bad attribute type {attributeType.strip()!r}")
    return _TYPE_ALIASES.get(lowered, lowered)


def _normaliseValue(attributeType: str, value: str) -> str:
    if attributeType in _CASE_EXACT:
        return value
    return _SPACES.sub(" ", value.strip(" ")).casefold()


def _unescape(raw: str) -> str:
    """Resolve RFC 4514 escapes in one attribute value."""
    if raw.startswith("#"):
        return raw.lower()  # BER-encoded value: compared as written
    if "\\" not in raw:
        return raw.strip(" ")
    out = bytearray()
    i = 0
    n = len(raw)
    # leading/trailing unescaped spaces are insignificant
    while i < n and raw[i] == " ":
        i += 1
    end = n
    while end > i and raw[end - 1] == " " and not _isEscaped(raw, end - 1):
        end -= 1
    while i < end:
        ch = raw[i]
        if ch == "\\":
            if i + 1 >= end:
                raise ValueError("a value ends with a lone backslash")
            nxt = raw[i + 1 : i + 3]
            if len(nxt) == 2 and all(c in "0123456789abcdefABCDEF" for c in nxt):
                out.append(int(nxt, 16))
                i += 3
                continue
            out += raw[i + 1].encode("utf-8")
            i += 2
            continue
        out += ch.encode("utf-8")
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("escaped bytes are not UTF-8") from None


def _isEscaped(text: str, index: int) -> bool:
    backslashes = 0
    index -= 1
    while index >= 0 and text[index] == "\\":
        backslashes += 1
        index -= 1
    return backslashes % 2 == 1


def _split(text: str, separators: str) -> list[str]:
    """Split on unescaped separators, honouring backslash escapes and quotes."""
    parts = []
    current = []
    i = 0
    quoted = False
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch in separators and not quoted:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    if quoted:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


def _parse(text: str) -> tuple[RDN, ...]:
    if not text.strip():
        return ()
    rdns = []
    for rdnText in _split(text, ",;"):
        pairs = []
        for ava in _split(rdnText, "+"):
            attributeType, equals, rawValue = ava.partition("=")
            if not equals:
                raise ValueError(f"{ava.strip()!r} is not attribute=value")
            normalType = _normaliseType(attributeType)
            rawValue = rawValue.strip(" ") if "\\" not in rawValue else rawValue.lstrip(" ")
            if rawValue.startswith('"') and rawValue.endswith('"') and len(rawValue) >= 2:
                value = rawValue[1:-1]
            else:
                value = _unescape(rawValue)
            pairs.append((normalType, _normaliseValue(normalType, value)))
        rdns.append(tuple(sorted(pairs)))
    return tuple(rdns)


def parseDN(text: str) -> DN:
    """
    Parse and normalise a DN string.  Callers that parse the same names
    again and again (routing, rewriting) go through a L{DNCache} instead.

    @raise ValueError: not a DN.
    """
    return DN(_parse(text), text)


def parseDNBytes(raw: bytes) -> DN:
    """Parse a DN as it appears on the wire (UTF-8 LDAPDN)."""
    try:
        return parseDN(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("DN is not UTF-8") from None


def rdnTexts(text: str) -> list[str]:
    """
    The RDNs of a DN as written (leaf first), without the spaces around
    separators: what a suffix rewrite keeps of the part below the suffix.

    @raise ValueError: unbalanced quotes.
    """
    out = []
    for raw in _split(text, ",;"):
        raw = raw.lstrip(" ")
        while raw.endswith(" ") and not _isEscaped(raw, len(raw) - 1):
            raw = raw[:-1]
        out.append(raw)
    return out


class DNCache:
    """
    Parsed DNs by their text, bounded: clients repeat the same bases and
    bind DNs, and a parse costs about 13 microseconds.

    One belongs to the L{ldaproute.runtime.Runtime} (never to the process),
    which hands it to the router and the rewriters it builds.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._parsed: dict[str, DN] = {}

    def __len__(self) -> int:
        return len(self._parsed)

    def parse(self, text: str) -> DN:
        """L{parseDN}, remembered.

        @raise ValueError: not a DN.
        """
        found = self._parsed.get(text)
        if found is not None:
            return found
        dn = DN(_parse(text), text)
        if len(self._parsed) >= self._limit:
            self._parsed.clear()
        self._parsed[text] = dn
        return dn

    def parseBytes(self, raw: bytes) -> DN:
        """L{parseDNBytes}, remembered.

        @raise ValueError: not a DN, or not UTF-8.
        """
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("DN is not UTF-8") from None
        return self.parse(text)
