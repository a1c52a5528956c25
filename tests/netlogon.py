"""
Test helper: build an AD LDAP ping (CLDAP) and decode its Netlogon reply
(NETLOGON_SAM_LOGON_RESPONSE_EX, MS-ADTS 6.3.1.9) field by field.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import Any

from ldaptor.protocols import pureber, pureldap


def pingRequest(messageID: int, domain: str, ntVersion: int = 0x16) -> bytes:
    def eq(attr: str, value: bytes | str) -> Any:
        return pureldap.LDAPFilter_equalityMatch(
            attributeDesc=pureldap.LDAPAttributeDescription(attr),
            assertionValue=pureldap.LDAPAssertionValue(value),
        )

    request = pureldap.LDAPSearchRequest(
        baseObject=b"", scope=pureldap.LDAP_SCOPE_baseObject, derefAliases=0, sizeLimit=0, timeLimit=0,
        typesOnly=0, filter=pureldap.LDAPFilter_and([eq("DnsDomain", domain), eq("NtVer", struct.pack("<I", ntVersion))]),
        attributes=[b"Netlogon"],
    )
    return pureldap.LDAPMessage(request, id=messageID).toWire()


def decodeMessages(data: bytes) -> list[Any]:
    decoder = pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )
    return list(pureber.berDecodeMultiple(data, decoder))


def _name(blob: bytes, offset: int) -> tuple[str, int]:
    labels, following = [], None
    while True:
        n = blob[offset]
        if n == 0:
            offset += 1
            break
        if n & 0xC0 == 0xC0:
            if following is None:
                following = offset + 2
            offset = struct.unpack(">H", blob[offset : offset + 2])[0] & 0x3FFF
            continue
        labels.append(blob[offset + 1 : offset + 1 + n].decode())
        offset += 1 + n
    return ".".join(labels), (following if following is not None else offset)


def decodeNetlogon(blob: bytes, ntVersion: int = 0x16) -> dict[str, Any]:
    opcode, _, flags = struct.unpack_from("<HHI", blob, 0)
    fields: dict[str, Any] = {"Opcode": opcode, "Flags": flags}
    fields["DomainGuid"] = str(uuid.UUID(bytes_le=blob[8:24]))
    offset = 24
    for name in ("DnsForestName", "DnsDomainName", "DnsHostName", "NetbiosDomainName",
                 "NetbiosComputerName", "UserName", "DcSiteName", "ClientSiteName"):
        fields[name], offset = _name(blob, offset)
    if ntVersion & 0x8:
        length = blob[offset]
        fields["DcSockAddr"] = socket.inet_ntoa(blob[offset + 1 + 4 : offset + 1 + 8])
        offset += 1 + length
    fields["NtVersion"], fields["LmNtToken"], fields["Lm20Token"] = struct.unpack_from("<IHH", blob, offset)
    return fields


def ping(address: tuple[str, int], domain: str, messageID: int = 7, ntVersion: int = 0x16,
         timeout: float = 3.0) -> tuple[list[Any], bytes, float]:
    """Send one ping; the decoded messages, the raw reply and the round trip (s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        started = time.perf_counter()
        s.sendto(pingRequest(messageID, domain, ntVersion), address)
        data, _ = s.recvfrom(65535)
        elapsed = time.perf_counter() - started
    return decodeMessages(data), data, elapsed


def netlogonOf(messages: list[Any]) -> bytes:
    for message in messages:
        if isinstance(message.value, pureldap.LDAPSearchResultEntry):
            for name, values in message.value.attributes:
                if (name.decode() if isinstance(name, bytes) else name).lower() == "netlogon":
                    value = values[0]
                    return value if isinstance(value, bytes) else value.encode("latin-1")
    raise AssertionError(f"no Netlogon attribute in {messages!r}")
