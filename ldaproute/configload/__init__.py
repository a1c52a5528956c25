# -*- test-case-name: tests.test_config -*-
"""
The configuration loader's checks, one module per section kind: what must
hold between the keys of one C{[listener:NAME]}, C{[backend:NAME]},
C{[pool:NAME]} or C{[route:NAME]} section, and between sections.

L{ldaproute.config} keeps the key tables (each key, its attribute and its
type) and the value classes; its loader reads the file into sections
(L{ldaproute.configload.sections}), turns each key into its type through
the tables and the parsers of L{ldaproute.configload.values}, then hands
each section's values to the module of its kind here (C{expect} included),
which settles defaults that depend on other keys and refuses
contradictions.  These modules build no values and know no
file name: a mistake is a L{SectionError} naming the key, which the loader
turns into a L{ldaproute.config.ConfigError} with the file and section.
"""

from __future__ import annotations

from ldaproute.core.dn import DN, parseDN


class SectionError(ValueError):
    """
    A mistake in one section: C{key} (or L{None} for the section as a
    whole) and the sentence that says what is wrong.
    """

    def __init__(self, key: str | None, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def dnAt(key: str, value: str) -> DN:
    """
    C{value} parsed as a DN.

    @raise SectionError: at C{key}, when it is not one.
    """
    try:
        return parseDN(value.strip())
    except ValueError as e:
        raise SectionError(key, f"bad DN {value.strip()!r}: {e}") from None
