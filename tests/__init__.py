"""ldaproute's tests: unit tests on in-memory transports, integration tests against real slapd."""
