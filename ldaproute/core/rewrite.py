# -*- test-case-name: tests.test_rewrite -*-
"""
The slow path: DN and attribute rewriting for routes that ask for it.

Only routes with C{rewrite_suffix}, C{map_attributes} or C{hide_attributes}
come here; every other PDU stays bytes (DESIGN.md, "Data flow").  A PDU is
split at byte level into its messageID, protocolOp and the rest (controls),
only the protocolOp is decoded, and the message is rebuilt around the
original messageID and control bytes, so controls survive exactly as the
client or the backend sent them (ldaptor's own C{LDAPMessage} would
re-encode or drop them).

Decoding uses ldaptor's C{pureldap} for the operations whose shape it keeps
intact (search, add, modify, modifyDN, compare requests; search result
entries).  Bind and delete requests, results (ldaptor drops their referral
field), references and anything ldaptor does not know (IntermediateResponse,
extended operations) are handled at byte level or passed through untouched:
a PDU that cannot be decoded is forwarded as the bytes that came in.

Directions: I{client} names are what the proxy's clients see; I{backend}
names are what the directory holds.  Requests go client -> backend,
responses backend -> client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import quote, unquote

from ldaptor.protocols import pureber, pureldap

from ldaproute.config import Route
from ldaproute.core.dn import DN, parseDN, rdnTexts
from ldaproute.wire import ber
from ldaproute.wire.ber import FramingError, elements, readTLV
from ldaproute.wire.pdu import decodeOp, joinMessage, splitMessage

#: Attributes whose values are DNs in the standard schemas (RFC 4519,
#: RFC 2798, RFC 2307bis) and in Active Directory; their values are
#: rewritten with C{rewrite_suffix}.  A route's C{dn_attributes} adds more.
DEFAULT_DN_ATTRIBUTES: Final = frozenset(
    name.lower()
    for name in (
        "member",
        "uniqueMember",
        "manager",
        "owner",
        "seeAlso",
        "secretary",
        "memberOf",
        "roleOccupant",
        "distinguishedName",
        "aliasedObjectName",
        "creatorsName",
        "modifiersName",
        "entryDN",
        "directReports",
        "managedBy",
        "namingContexts",
    )
)

class Refused(Exception):
    """A request the route's rules refuse; answered by the proxy."""

    def __init__(self, resultCode: int, message: str) -> None:
        super().__init__(message)
        self.resultCode = resultCode
        self.message = message


# --- DN helpers ---------------------------------------------------------------


def swapSuffix(text: str, old: DN, new: DN, parse: Callable[[str], DN] = parseDN) -> str | None:
    """
    C{text} with suffix C{old} replaced by C{new}, keeping the RDNs below it
    as written; L{None} when C{text} is not within C{old} or not a DN.

    @param parse: how to parse C{text} (the runtime's L{DNCache.parse}).
    """
    try:
        parsed = parse(text)
    except ValueError:
        return None
    if not parsed.isWithin(old):
        return None
    keep = len(parsed.rdns) - len(old.rdns)
    rdns = rdnTexts(text)[:keep] if keep else []
    if new.rdns:
        rdns.append(new.text)
    return ",".join(rdns)


def _attributeBase(name: bytes) -> tuple[bytes, bytes]:
    base, semicolon, options = name.partition(b";")
    return base, semicolon + options


class Rewriter:
    """
    One route's rules, both directions.

    @ivar route: the route, for log events.
    """

    def __init__(self, route: Route, parse: Callable[[str], DN] = parseDN) -> None:
        """
        @param parse: how DN values are parsed: the runtime passes its
            L{DNCache}'s, since entries repeat the same member DNs.
        """
        self.route = route
        self._parse = parse
        suffix = route.rewriteSuffix
        self._clientSuffix = suffix.client if suffix is not None else None
        self._backendSuffix = suffix.backend if suffix is not None else None
        self._toBackend = {c.lower().encode(): b.encode() for c, b in route.mapAttributes}
        self._toClient = {b.lower().encode(): c.encode() for c, b in route.mapAttributes}
        hidden = {name.lower().encode() for name in route.hideAttributes}
        # a hidden name may be written as the client or the backend sees it
        self._hidden = hidden | {self._toBackend.get(h, h).lower() for h in hidden} | {
            self._toClient.get(h, h).lower() for h in hidden
        }
        dnNames = {name.encode() for name in DEFAULT_DN_ATTRIBUTES} | {
            name.lower().encode() for name in route.dnAttributes
        }
        self._dnAttributes = dnNames | {self._toBackend.get(n, n).lower() for n in dnNames}

    # --- names ----------------------------------------------------------------

    def dnToBackend(self, value: bytes) -> bytes:
        return self._swapBytes(value, self._clientSuffix, self._backendSuffix)

    def dnToClient(self, value: bytes) -> bytes:
        return self._swapBytes(value, self._backendSuffix, self._clientSuffix)

    def _swapBytes(self, value: bytes, old: DN | None, new: DN | None) -> bytes:
        if old is None or new is None:
            return value
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return value
        swapped = swapSuffix(text, old, new, self._parse)
        return value if swapped is None else swapped.encode("utf-8")

    def attributeToBackend(self, name: bytes) -> bytes:
        if not self._toBackend:
            return name
        base, options = _attributeBase(name)
        return self._toBackend.get(base.lower(), base) + options

    def attributeToClient(self, name: bytes) -> bytes:
        if not self._toClient:
            return name
        base, options = _attributeBase(name)
        mapped = self._toClient.get(base.lower())
        return name if mapped is None else mapped + options

    def isHidden(self, name: bytes) -> bool:
        return bool(self._hidden) and _attributeBase(name)[0].lower() in self._hidden

    def isDNValued(self, name: bytes) -> bool:
        return _attributeBase(name)[0].lower() in self._dnAttributes

    def urlToClient(self, url: bytes) -> bytes:
        """An LDAP URL's DN (backend -> client); host and port untouched."""
        if self._backendSuffix is None or self._clientSuffix is None:
            return url
        try:
            text = url.decode("utf-8")
        except UnicodeDecodeError:
            return url
        scheme, sep, rest = text.partition("://")
        if not sep:
            return url
        hostport, slash, tail = rest.partition("/")
        if not slash:
            return url
        dnPart, question, query = tail.partition("?")
        swapped = swapSuffix(unquote(dnPart), self._backendSuffix, self._clientSuffix, self._parse)
        if swapped is None:
            return url
        return f"{scheme}://{hostport}/{quote(swapped, safe='=,+;')}{question}{query}".encode("utf-8")

    # --- requests ---------------------------------------------------------------

    def request(self, pdu: bytes) -> bytes:
        """
        The request as the backend should see it.

        @raise Refused: the request names a hidden attribute in a filter or
            a compare.
        """
        try:
            messageID, opTag, op, rest = splitMessage(pdu)
            newOp = self._requestOp(opTag, op)
        except FramingError:
            return pdu
        if newOp is op:
            return pdu
        return joinMessage(messageID, newOp, rest)

    def _requestOp(self, opTag: int, op: bytes) -> bytes:
        if opTag == ber.BIND_REQUEST:
            return self._bindRequest(op)
        if opTag == ber.DEL_REQUEST:
            _, start, end = readTLV(op, 0)
            return ber.tlv(opTag, self.dnToBackend(op[start:end]))
        if opTag == ber.SEARCH_REQUEST:
            search = decodeOp(op)
            search.baseObject = self.dnToBackend(search.baseObject)
            self._filterToBackend(search.filter)
            search.attributes = [
                self.attributeToBackend(name) for name in search.attributes if not self.isHidden(name)
            ] or ([b"1.1"] if search.attributes else [])
            return search.toWire()
        if opTag == ber.ADD_REQUEST:
            add = decodeOp(op)
            attributes = []
            for element in add.attributes.data:
                name, values = element.data[0].value, [v.value for v in element.data[1].data]
                attributes.append(self._attributeToBackend(name, values))
            return pureldap.LDAPAddRequest(
                entry=self.dnToBackend(add.entry),
                attributes=[
                    (pureldap.LDAPAttributeDescription(name), pureber.BERSet([pureldap.LDAPAttributeValue(v) for v in values]))
                    for name, values in attributes
                ],
            ).toWire()
        if opTag == ber.MODIFY_REQUEST:
            modify = decodeOp(op)
            changes = []
            for change in modify.modification:
                operation = change.data[0].value
                description = change.data[1]
                name, values = description.data[0].value, [v.value for v in description.data[1].data]
                name, values = self._attributeToBackend(name, values)
                changes.append(
                    pureber.BERSequence(
                        [
                            pureber.BEREnumerated(operation),
                            pureber.BERSequence(
                                [
                                    pureldap.LDAPAttributeDescription(name),
                                    pureber.BERSet([pureldap.LDAPAttributeValue(v) for v in values]),
                                ]
                            ),
                        ]
                    )
                )
            return pureldap.LDAPModifyRequest(object=self.dnToBackend(modify.object), modification=changes).toWire()
        if opTag == ber.MODDN_REQUEST:
            moddn = decodeOp(op)
            moddn.entry = self.dnToBackend(moddn.entry)
            if moddn.newSuperior is not None:
                moddn.newSuperior = self.dnToBackend(moddn.newSuperior)
            return moddn.toWire()
        if opTag == ber.COMPARE_REQUEST:
            compare = decodeOp(op)
            compare.entry = self.dnToBackend(compare.entry)
            self._avaToBackend(compare.ava)
            return compare.toWire()
        return op  # extended, abandon, unbind: untouched

    def _bindRequest(self, op: bytes) -> bytes:
        _, start, end = readTLV(op, 0)
        fields = elements(op, start, end)
        if len(fields) < 3 or fields[1][0] != ber.OCTET_STRING:
            raise FramingError("malformed", "bad bind request")
        _, _, nameStart, nameEnd = fields[1]
        name = self.dnToBackend(op[nameStart:nameEnd])
        body = fields[0][1] + ber.tlv(0x04, name) + b"".join(field[1] for field in fields[2:])
        return ber.tlv(ber.BIND_REQUEST, body)

    def _attributeToBackend(self, name: bytes, values: list[bytes]) -> tuple[bytes, list[bytes]]:
        if self.isDNValued(name):
            values = [self.dnToBackend(v) for v in values]
        return self.attributeToBackend(name), values

    def _refuseHidden(self, name: bytes) -> None:
        if self.isHidden(name):
            raise Refused(
                ber.UNWILLING_TO_PERFORM,
                f"attribute {name.decode('utf-8', 'replace')} is hidden by this route and cannot be used in a filter or compare",
            )

    def _avaToBackend(self, ava: Any) -> None:
        name = ava.attributeDesc.value
        self._refuseHidden(name)
        if self.isDNValued(name):
            ava.assertionValue.value = self.dnToBackend(ava.assertionValue.value)
        ava.attributeDesc.value = self.attributeToBackend(name)

    def _filterToBackend(self, node: Any) -> None:
        if isinstance(node, (pureldap.LDAPFilter_and, pureldap.LDAPFilter_or)):
            for child in node:
                self._filterToBackend(child)
        elif isinstance(node, pureldap.LDAPFilter_not):
            self._filterToBackend(node.value)
        elif isinstance(node, pureldap.LDAPAttributeValueAssertion):
            self._avaToBackend(node)
        elif isinstance(node, pureldap.LDAPFilter_substrings):
            self._refuseHidden(node.type)
            node.type = self.attributeToBackend(node.type)
        elif isinstance(node, pureldap.LDAPFilter_present):
            self._refuseHidden(node.value)
            node.value = self.attributeToBackend(node.value)
        elif isinstance(node, pureldap.LDAPFilter_extensibleMatch):
            if node.type is not None:
                name = node.type.value
                self._refuseHidden(name)
                if self.isDNValued(name):
                    node.matchValue.value = self.dnToBackend(node.matchValue.value)
                node.type.value = self.attributeToBackend(name)

    # --- responses --------------------------------------------------------------

    def response(self, pdu: bytes) -> bytes:
        """The response as the client should see it; undecodable ones unchanged."""
        try:
            messageID, opTag, op, rest = splitMessage(pdu)
            newOp = self._responseOp(opTag, op)
        except FramingError:
            return pdu
        if newOp is op:
            return pdu
        return joinMessage(messageID, newOp, rest)

    def _responseOp(self, opTag: int, op: bytes) -> bytes:
        if opTag == ber.SEARCH_RESULT_ENTRY:
            return self._entryToClient(op)
        if opTag == ber.SEARCH_RESULT_REFERENCE:
            _, start, end = readTLV(op, 0)
            urls = [op[s:e] for tag, _, s, e in elements(op, start, end)]
            return ber.tlv(opTag, b"".join(ber.tlv(0x04, self.urlToClient(url)) for url in urls))
        if opTag in ber.FINAL_RESPONSES:
            return self._resultToClient(opTag, op)
        return op  # IntermediateResponse and the unknown: untouched

    def _entryToClient(self, op: bytes) -> bytes:
        """
        A SearchResultEntry at byte level (the most frequent slow-path PDU;
        ldaptor takes about ten times longer): objectName, then each
        PartialAttribute's type and, for DN-valued ones, its values.
        """
        _, start, end = readTLV(op, 0)
        parts = elements(op, start, end)
        if len(parts) != 2 or parts[0][0] != 0x04 or parts[1][0] != 0x30:
            raise FramingError("malformed", "bad entry")
        objectName = self.dnToClient(op[parts[0][2] : parts[0][3]])
        attributes = []
        for tag, whole, cstart, cend in elements(op, parts[1][2], parts[1][3]):
            inner = elements(op, cstart, cend)
            if tag != 0x30 or len(inner) != 2 or inner[0][0] != 0x04:
                raise FramingError("malformed", "bad partial attribute")
            name = op[inner[0][2] : inner[0][3]]
            if self.isHidden(name):
                continue
            clientName = self.attributeToClient(name)
            if self.isDNValued(name):
                values = b"".join(
                    ber.tlv(0x04, self.dnToClient(op[vs:ve])) for _, _, vs, ve in elements(op, inner[1][2], inner[1][3])
                )
                attributes.append(ber.tlv(0x30, ber.tlv(0x04, clientName) + ber.tlv(inner[1][0], values)))
            elif clientName is name:
                attributes.append(whole)
            else:
                attributes.append(ber.tlv(0x30, ber.tlv(0x04, clientName) + inner[1][1]))
        return ber.tlv(ber.SEARCH_RESULT_ENTRY, ber.tlv(0x04, objectName) + ber.tlv(0x30, b"".join(attributes)))

    def attributesToClient(self, attributes: Iterable[tuple[bytes, list[bytes]]]) -> Iterable[tuple[bytes, list[bytes]]]:
        for name, values in attributes:
            if self.isHidden(name):
                continue
            if self.isDNValued(name):
                values = [self.dnToClient(v) for v in values]
            yield self.attributeToClient(name), values

    def _resultToClient(self, opTag: int, op: bytes) -> bytes:
        """resultCode, matchedDN, diagnosticMessage, [referral], the rest kept."""
        _, start, end = readTLV(op, 0)
        fields = elements(op, start, end)
        if len(fields) < 3 or fields[1][0] != ber.OCTET_STRING:
            raise FramingError("malformed", "bad result")
        parts = [fields[0][1], ber.tlv(0x04, self.dnToClient(op[fields[1][2] : fields[1][3]])), fields[2][1]]
        for tag, whole, cstart, cend in fields[3:]:
            if tag == 0xA3:  # referral: SEQUENCE OF URI
                urls = [op[s:e] for _, _, s, e in elements(op, cstart, cend)]
                whole = ber.tlv(0xA3, b"".join(ber.tlv(0x04, self.urlToClient(url)) for url in urls))
            parts.append(whole)
        return ber.tlv(opTag, b"".join(parts))


def responseTransformer(rewriter: Rewriter) -> Callable[[bytes], bytes]:
    """A link hook: a chunk of whole response PDUs in, rewritten chunk out."""

    def transform(data: bytes) -> bytes:
        return b"".join(rewriter.response(pdu) for pdu in ber.Framer(1 << 31).feed(data))

    return transform
