"""
Integration tests: real slapd on loopback (see tests.slapd), real clients.
"""
