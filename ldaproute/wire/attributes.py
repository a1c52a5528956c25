# -*- test-case-name: tests.test_attributes -*-
"""
Byte-level walks over the attribute lists inside operations: which
attributes an add, modify or compare request carries values for, and the
one whole-PDU edit of a search result entry the proxy makes on the relay
path (removing some values of one attribute, lengths fixed).

Add and modify requests are rare next to searches, but the proxy must look
at every one of them (any could write a password), so the walk is a few
element reads per attribute and builds no ldaptor object.  Values are
never copied out: only attribute names leave this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from ldaproute.wire import ber
from ldaproute.wire.ber import FramingError, readExpected, readTLV

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OCTET_STRING: Final = 0x04
_ENUMERATED: Final = 0x0A


def _valuesPresent(pdu: bytes, pos: int, end: int) -> bool:
    """Whether the C{SET OF value} at C{pos} holds at least one value."""
    start, stop = readExpected(pdu, pos, end, _SET, "attribute without a value set")
    return stop > start


def _attribute(pdu: bytes, pos: int, end: int) -> tuple[bytes, bool]:
    """C{(type, has values)} of the C{SEQUENCE {type, vals}} at C{pos}."""
    start, stop = readExpected(pdu, pos, end, _SEQUENCE, "attribute is not a SEQUENCE")
    typeStart, typeEnd = readExpected(pdu, start, stop, _OCTET_STRING, "attribute without a type")
    return pdu[typeStart:typeEnd], _valuesPresent(pdu, typeEnd, stop)


def _afterDN(pdu: bytes, envelope: ber.Envelope) -> int:
    return readExpected(pdu, envelope.contentStart, envelope.contentEnd, _OCTET_STRING, "operation without a DN")[1]


def valuedAttributes(pdu: bytes, envelope: ber.Envelope) -> Iterator[bytes]:
    """
    The attribute types (as sent: any case, options included) for which an
    add, modify or compare request carries at least one value.

    A modify's delete or replace without values carries none, so it is not
    yielded; a delete I{with} values is (it names the old value, which is
    how Active Directory changes a password).  Other operations yield
    nothing.

    @raise FramingError: the request is malformed.
    """
    tag = envelope.opTag
    end = envelope.contentEnd
    if tag == ber.ADD_REQUEST:
        pos, listEnd = readExpected(pdu, _afterDN(pdu, envelope), end, _SEQUENCE, "add request without an attribute list")
        while pos < listEnd:
            name, valued = _attribute(pdu, pos, listEnd)
            if valued:
                yield name
            pos = readTLV(pdu, pos, listEnd)[2]
    elif tag == ber.MODIFY_REQUEST:
        pos, listEnd = readExpected(pdu, _afterDN(pdu, envelope), end, _SEQUENCE, "modify request without a change list")
        while pos < listEnd:
            changeStart, changeEnd = readExpected(pdu, pos, listEnd, _SEQUENCE, "modify change is not a SEQUENCE")
            _, opEnd = readExpected(pdu, changeStart, changeEnd, _ENUMERATED, "modify change without an operation")
            name, valued = _attribute(pdu, opEnd, changeEnd)
            if valued:
                yield name
            pos = changeEnd
    elif tag == ber.COMPARE_REQUEST:
        avaStart, avaEnd = readExpected(pdu, _afterDN(pdu, envelope), end, _SEQUENCE, "compare request without an assertion")
        typeStart, typeEnd = readExpected(pdu, avaStart, avaEnd, _OCTET_STRING, "compare assertion without a type")
        yield pdu[typeStart:typeEnd]


def isRootDSESearch(pdu: bytes, envelope: ber.Envelope) -> bool:
    """
    Whether a search request reads the root DSE (base C{""}, scope
    baseObject).  Three byte comparisons for the common encoding; anything
    else (a long-form empty base, say) goes through L{readElement}.
    """
    if envelope.opTag != ber.SEARCH_REQUEST:
        return False
    pos = envelope.contentStart
    end = envelope.contentEnd
    if pdu[pos : pos + 5] == b"\x04\x00\x0a\x01\x00":
        return True
    try:
        tag, start, stop = readTLV(pdu, pos, end)
        if tag != _OCTET_STRING or pdu[start:stop].strip(b" "):
            return False
        scopeTag, scopeStart, scopeEnd = readTLV(pdu, stop, end)
    except FramingError:
        return False
    return scopeTag == _ENUMERATED and int.from_bytes(pdu[scopeStart:scopeEnd], "big") == 0



def withoutValues(pdu: bytes, attribute: bytes, drop: Callable[[bytes], bool]) -> bytes:
    """
    The SearchResultEntry PDU C{pdu} without the values of C{attribute}
    (compared case-insensitively, options included) for which C{drop} is
    true; an attribute left with no value is removed.  Every enclosing
    length is re-encoded; controls and everything else keep their bytes.
    A PDU that is not a search result entry, or has nothing to drop, is
    returned as it is (the same object).

    @raise FramingError: the entry is malformed.
    """
    end = len(pdu)
    msgStart, msgEnd = readExpected(pdu, 0, end, _SEQUENCE, "not an LDAPMessage")
    _, _, idEnd = readTLV(pdu, msgStart, msgEnd)
    opTag, opStart, opEnd = readTLV(pdu, idEnd, msgEnd)
    if opTag != ber.SEARCH_RESULT_ENTRY:
        return pdu
    _, _, nameEnd = readTLV(pdu, opStart, opEnd)
    listStart, listEnd = readExpected(pdu, nameEnd, opEnd, _SEQUENCE, "entry without an attribute list")
    wanted = attribute.lower()
    pieces: list[bytes] = []
    changed = False
    pos = listStart
    while pos < listEnd:
        _, attrStart, attrEnd = readTLV(pdu, pos, listEnd)
        typeTag, typeStart, typeEnd = readTLV(pdu, attrStart, attrEnd)
        if typeTag == _OCTET_STRING and pdu[typeStart:typeEnd].lower() == wanted:
            setTag, setStart, setEnd = readTLV(pdu, typeEnd, attrEnd)
            kept = []
            vpos = setStart
            while vpos < setEnd:
                _, valueStart, valueEnd = readTLV(pdu, vpos, setEnd)
                if drop(pdu[valueStart:valueEnd]):
                    changed = True
                else:
                    kept.append(pdu[vpos:valueEnd])
                vpos = valueEnd
            if kept:
                values = b"".join(kept)
                body = pdu[attrStart:typeEnd] + bytes((setTag,)) + ber.encodeLength(len(values)) + values
                pieces.append(bytes((_SEQUENCE,)) + ber.encodeLength(len(body)) + body)
        else:
            pieces.append(pdu[pos:attrEnd])
        pos = attrEnd
    if not changed:
        return pdu
    attributes = b"".join(pieces)
    op = pdu[opStart:nameEnd] + bytes((_SEQUENCE,)) + ber.encodeLength(len(attributes)) + attributes + pdu[listEnd:opEnd]
    body = pdu[msgStart:idEnd] + bytes((opTag,)) + ber.encodeLength(len(op)) + op + pdu[opEnd:msgEnd]
    return bytes((_SEQUENCE,)) + ber.encodeLength(len(body)) + body
