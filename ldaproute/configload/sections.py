# -*- test-case-name: tests.test_config -*-
"""
routes.ini as INI text -> its sections by kind and name: C{[ldaproute]},
C{[listener:NAME]}, C{[backend:NAME]}, C{[pool:NAME]}, C{[route:NAME]} and
C{[expect:NAME]}, each a dict of raw key text, plus the routes' order.

The first step of the loader, apart from it because it is about the file's
shape only (duplicate sections or keys, unknown kinds, bad names), before
any key is turned into its type.  A mistake is a L{SectionsError} naming
the section and key, which the loader turns into a
L{ldaproute.config.ConfigError} with the file.
"""

from __future__ import annotations

import configparser
import re

#: The section kinds, in the order the loader settles them.
KINDS = ("ldaproute", "listener", "backend", "pool", "route", "expect")

_SECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class SectionsError(ValueError):
    """A mistake in the file's shape: C{section} and C{key} (either L{None}) and why."""

    def __init__(self, section: str | None, key: str | None, reason: str) -> None:
        super().__init__(reason)
        self.section = section
        self.key = key
        self.reason = reason


def readSections(text: str, path: str) -> tuple[dict[str, dict[str, dict[str, str]]], list[str]]:
    """
    The sections of C{text} by kind, then name (C{[ldaproute]} under the
    name C{""}), and the route names in the order the file gives them
    (the order routes are tried in).

    @param path: the file's name, for configparser's own messages.
    @raise SectionsError: not an INI file, a section or key twice, an
        unknown section kind or a bad name.
    """
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, path)
    except configparser.DuplicateSectionError as e:
        raise SectionsError(e.section, None, "this section appears twice") from None
    except configparser.DuplicateOptionError as e:
        raise SectionsError(e.section, e.option, "this key appears twice in the section") from None
    except configparser.Error as e:
        raise SectionsError(None, None, f"not an INI file: {e.message.splitlines()[0]}") from None

    sections: dict[str, dict[str, dict[str, str]]] = {kind: {} for kind in KINDS}
    order: list[str] = []
    for section in parser.sections():
        items = {key: value for key, value in parser.items(section)}
        if section == "ldaproute":
            sections["ldaproute"][""] = items
            continue
        kind, colon, name = section.partition(":")
        if not colon or kind not in sections or kind == "ldaproute":
            raise SectionsError(
                section,
                None,
                "unknown section: expected [ldaproute], [listener:NAME], [backend:NAME], "
                "[pool:NAME], [route:NAME] or [expect:NAME]",
            )
        if not _SECTION_NAME.fullmatch(name):
            raise SectionsError(section, None, f"bad name {name!r}: use letters, digits, '-', '_' and '.'")
        sections[kind][name] = items
        if kind == "route":
            order.append(name)
    return sections, order
