# -*- test-case-name: tests.test_config_tls -*-
"""
C{[backend:NAME]} sections: the URL is required and decides C{tls} for
ldaps:// and ldapi://, TLS files only go with TLS and must match, a PROXY
header only goes to ldap://; shared mode has no backend StartTLS yet.
"""

from __future__ import annotations

from typing import Any

from ldaproute.configload import SectionError
from ldaproute.wire.pem import checkKeyPair


def settleBackend(values: dict[str, Any]) -> dict[str, Any]:
    """
    Settle a backend's C{tls} against its URL and check its TLS files.

    @param values: the section's values by attribute; changed in place.
    @raise SectionError: a missing URL or keys that contradict each other.
    """
    if "url" not in values:
        raise SectionError("url", "missing: give the server's address as ldap://host:port")
    url = values["url"]
    if values.get("sendProxy", "none") != "none" and url.scheme != "ldap":
        raise SectionError("send_proxy", "a PROXY header can only be sent to an ldap:// backend (slapd's pldap://)")
    tls = values.get("tls")
    if url.scheme == "ldaps":
        if tls not in (None, "ldaps"):
            raise SectionError("tls", f"{tls} contradicts the ldaps:// url")
        values["tls"] = "ldaps"
    elif url.scheme == "ldapi" and tls not in (None, "none"):
        raise SectionError("tls", "an ldapi:// backend is a local socket: TLS is not used")
    if values.get("tls", "none") == "none":
        for attribute, key in (("caFile", "ca_file"), ("clientCert", "client_cert"), ("serverName", "server_name")):
            if attribute in values:
                raise SectionError(key, "only used with tls = ldaps or starttls")
    if (values.get("clientCert") is None) != (values.get("clientKey") is None):
        missing = "client_key" if values.get("clientKey") is None else "client_cert"
        raise SectionError(missing, "missing: client_cert and client_key go together")
    if values.get("clientCert") is not None:
        try:
            checkKeyPair(values["clientCert"], values["clientKey"])
        except ValueError as e:
            raise SectionError("client_cert", str(e)) from None
    return values
