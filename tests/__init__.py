"""
Tests for ldaproute: unit tests on in-memory transports (tests/test_*.py) and
integration tests against real slapd instances (tests/integration/).
"""
