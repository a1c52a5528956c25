"""
ldaproute: an LDAPv3 proxy and router on Twisted.

Clients connect on LDAP listeners; each operation is routed by rules to a pool
of backend directory servers and relayed as the bytes the backend sent.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
