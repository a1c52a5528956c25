# -*- test-case-name: tests.test_ber -*-
"""
The numbers of the LDAP protocol the proxy reads and writes: protocolOp
tags, the response that ends each request, result codes, context tags,
OIDs and the PDU size cap.  A module of constants only, so that every
other part of L{ldaproute.wire} (and, through L{ldaproute.wire.ber}, the
rest of the proxy) names a tag the same way.
"""

from __future__ import annotations

from typing import Final


# protocolOp tags (RFC 4511 section 4.2 onwards), requests
BIND_REQUEST: Final = 0x60
UNBIND_REQUEST: Final = 0x42
SEARCH_REQUEST: Final = 0x63
MODIFY_REQUEST: Final = 0x66
ADD_REQUEST: Final = 0x68
DEL_REQUEST: Final = 0x4A
MODDN_REQUEST: Final = 0x6C
COMPARE_REQUEST: Final = 0x6E
ABANDON_REQUEST: Final = 0x50
EXTENDED_REQUEST: Final = 0x77

# responses
BIND_RESPONSE: Final = 0x61
SEARCH_RESULT_ENTRY: Final = 0x64
SEARCH_RESULT_DONE: Final = 0x65
SEARCH_RESULT_REFERENCE: Final = 0x73
MODIFY_RESPONSE: Final = 0x67
ADD_RESPONSE: Final = 0x69
DEL_RESPONSE: Final = 0x6B
MODDN_RESPONSE: Final = 0x6D
COMPARE_RESPONSE: Final = 0x6F
EXTENDED_RESPONSE: Final = 0x78
INTERMEDIATE_RESPONSE: Final = 0x79

#: The response that ends each request that has one.
RESPONSE_FOR: Final[dict[int, int]] = {
    BIND_REQUEST: BIND_RESPONSE,
    SEARCH_REQUEST: SEARCH_RESULT_DONE,
    MODIFY_REQUEST: MODIFY_RESPONSE,
    ADD_REQUEST: ADD_RESPONSE,
    DEL_REQUEST: DEL_RESPONSE,
    MODDN_REQUEST: MODDN_RESPONSE,
    COMPARE_REQUEST: COMPARE_RESPONSE,
    EXTENDED_REQUEST: EXTENDED_RESPONSE,
}

#: Response tags that end an operation (entries, references and intermediate
#: responses do not).
FINAL_RESPONSES: Final = frozenset(RESPONSE_FOR.values())

REQUEST_TAGS: Final = frozenset(RESPONSE_FOR) | {UNBIND_REQUEST, ABANDON_REQUEST}

#: Short operation names, used in logs, metrics labels and route matching.
OPERATION_NAMES: Final[dict[int, str]] = {
    BIND_REQUEST: "bind",
    UNBIND_REQUEST: "unbind",
    SEARCH_REQUEST: "search",
    MODIFY_REQUEST: "modify",
    ADD_REQUEST: "add",
    DEL_REQUEST: "delete",
    MODDN_REQUEST: "modifyDN",
    COMPARE_REQUEST: "compare",
    ABANDON_REQUEST: "abandon",
    EXTENDED_REQUEST: "extended",
}

CONTROLS_TAG: Final = 0xA0
SIMPLE_AUTH_TAG: Final = 0x80
SASL_AUTH_TAG: Final = 0xA3
EXTENDED_NAME_TAG: Final = 0x80
EXTENDED_VALUE_TAG: Final = 0x81
EXTENDED_RESPONSE_NAME_TAG: Final = 0x8A

STARTTLS_OID: Final = b"1.3.6.1.4.1.1466.20037"
NOTICE_OF_DISCONNECTION_OID: Final = b"1.3.6.1.4.1.1466.20036"

# result codes the proxy itself uses (RFC 4511 appendix A)
SUCCESS: Final = 0
OPERATIONS_ERROR: Final = 1
PROTOCOL_ERROR: Final = 2
TIME_LIMIT_EXCEEDED: Final = 3
SIZE_LIMIT_EXCEEDED: Final = 4
AUTH_METHOD_NOT_SUPPORTED: Final = 7
CONFIDENTIALITY_REQUIRED: Final = 13
SASL_BIND_IN_PROGRESS: Final = 14
INVALID_CREDENTIALS: Final = 49
INSUFFICIENT_ACCESS_RIGHTS: Final = 50
BUSY: Final = 51
UNAVAILABLE: Final = 52
UNWILLING_TO_PERFORM: Final = 53
OTHER: Final = 80

#: Default cap on one PDU from a client: large enough for any sane add or
#: modify (a few photos), small enough that a forged length cannot make us
#: buffer gigabytes.
DEFAULT_MAX_PDU_BYTES: Final = 4 * 1024 * 1024

# universal tags of the BER elements LDAP is made of
BOOLEAN: Final = 0x01
INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
ENUMERATED: Final = 0x0A
SEQUENCE: Final = 0x30
SET: Final = 0x31

#: The context tag of a referral inside an LDAPResult (RFC 4511 4.1.9).
REFERRAL_TAG: Final = 0xA3
