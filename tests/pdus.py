"""
Request and response PDUs for tests, encoded by ldaptor (a codec that is not
ours), so the byte-level code is checked against an independent encoder.
"""

from __future__ import annotations

from ldaptor.protocols import pureldap


def message(op: object, messageID: int = 1, controls: list[tuple[str, bool, bytes | None]] | None = None) -> bytes:
    return pureldap.LDAPMessage(op, id=messageID, controls=controls).toWire()


def attributes(pairs: list[tuple[str, list[str]]]) -> list:
    """ldaptor's wire form of an attribute list, for add requests and entries."""
    from ldaptor.protocols import pureber

    return [
        (pureldap.LDAPAttributeDescription(name), pureber.BERSet([pureldap.LDAPAttributeValue(v) for v in values]))
        for name, values in pairs
    ]


def add(dn: str, pairs: list[tuple[str, list[str]]], messageID: int = 1) -> bytes:
    return message(pureldap.LDAPAddRequest(entry=dn, attributes=attributes(pairs)), messageID)


def search(base: str = "dc=example,dc=com", messageID: int = 1, **kwargs: object) -> bytes:
    return message(pureldap.LDAPSearchRequest(baseObject=base, **kwargs), messageID)


def bind(dn: str = "", password: str = "", messageID: int = 1) -> bytes:
    return message(pureldap.LDAPBindRequest(dn=dn, auth=password), messageID)


def searchEntry(dn: str, messageID: int = 1, attributes: list | None = None) -> bytes:
    return message(pureldap.LDAPSearchResultEntry(dn, attributes or [("cn", ["x"])]), messageID)  # type: ignore[arg-type]


def searchDone(messageID: int = 1, resultCode: int = 0) -> bytes:
    return message(pureldap.LDAPSearchResultDone(resultCode=resultCode), messageID)


def bindResponse(messageID: int = 1, resultCode: int = 0) -> bytes:
    return message(pureldap.LDAPBindResponse(resultCode=resultCode), messageID)


def decode(data: bytes) -> list[pureldap.LDAPMessage]:
    """Every LDAPMessage in C{data}, decoded by ldaptor."""
    from ldaptor.protocols import pureber

    berdecoder = pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )
    messages = []
    while data:
        decoded, used = pureber.berDecodeObject(berdecoder, data)
        assert decoded is not None, "incomplete PDU"
        messages.append(decoded)
        data = data[used:]
    return messages
