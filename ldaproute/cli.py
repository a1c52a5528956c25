# -*- test-case-name: tests.test_cli -*-
"""
The C{ldaproute} command: C{check}, C{explain}, and the proxy itself.

    ldaproute check -c routes.ini
    ldaproute explain -c routes.ini search BASE [SCOPE [FILTER [ATTR...]]]
    ldaproute run -c routes.ini     (or --demo; any twistd ldaproute option)
    ldaproute -c routes.ini         (no subcommand: the same as run)

Without a subcommand the arguments go to the proxy, as C{python -m
ldaproute} always did: the proxy runs in the foreground without a pid file
(C{twistd --nodaemon --pidfile= ldaproute ARGS}).  C{check} and C{explain}
open no port; they write to the streams they are given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import IO

from twisted.scripts.twistd import run as twistdRun

from ldaproute import __version__
from ldaproute.config import Config, ConfigError
from ldaproute.ops import check, explain

_USAGE = """\
usage: ldaproute check -c routes.ini
       ldaproute explain -c routes.ini [--bind-dn DN] [--client ADDRESS] [--listener NAME] [--tls]
                         [--live URL] OPERATION...
       ldaproute [run] [-c routes.ini | --demo] [twistd ldaproute options]

OPERATION: search BASE [SCOPE [FILTER [ATTRIBUTE...]]] | bind DN | modify DN | add DN
           | delete DN | modifydn DN NEWRDN | compare DN ATTRIBUTE | extended OID
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports to the given stream and returns instead of exiting."""

    def __init__(self, stderr: IO[str], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._stderr = stderr

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{self.prog}: {message}")


class _Usage(Exception):
    pass


def _checkParser(stderr: IO[str]) -> _Parser:
    parser = _Parser(stderr, prog="ldaproute check", add_help=False)
    parser.add_argument("-c", "--config", default="routes.ini")
    return parser


def _explainParser(stderr: IO[str]) -> _Parser:
    parser = _Parser(stderr, prog="ldaproute explain", add_help=False)
    parser.add_argument("-c", "--config", default="routes.ini")
    parser.add_argument("--bind-dn", default=None)
    parser.add_argument("--client", default="192.0.2.1")
    parser.add_argument("--listener", default=None)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--live", default=None)
    parser.add_argument("operation", nargs=argparse.REMAINDER)
    return parser


def runProxy(args: Sequence[str]) -> None:
    """The proxy in the foreground: C{twistd --nodaemon --pidfile= ldaproute ARGS}."""
    sys.argv[:] = ["twistd", "--nodaemon", "--pidfile=", "ldaproute", *args]
    twistdRun()


def main(
    argv: Sequence[str],
    stdout: IO[str],
    stderr: IO[str],
    proxy: Callable[[Sequence[str]], None] = runProxy,
) -> int:
    """
    Run one C{ldaproute} command; returns the exit status (0 fine, 1 an
    invalid configuration, 2 a usage mistake).
    """
    args = list(argv)
    command = args[0] if args else None
    try:
        if command == "check":
            options = _checkParser(stderr).parse_args(args[1:])
            return check.run(options.config, stdout, stderr)
        if command == "explain":
            options = _explainParser(stderr).parse_args(args[1:])
            try:
                config = Config.fromFile(options.config)
            except ConfigError as e:
                stderr.write(f"{e}\n")
                return 1
            try:
                return explain.run(
                    config, options.operation, stdout, options.bind_dn, options.client, options.listener,
                    options.tls, options.live,
                )  # fmt: skip
            except explain.ExplainError as e:
                raise _Usage(f"ldaproute explain: {e}") from None
    except _Usage as e:
        stderr.write(f"{e}\n{_USAGE}")
        return 2
    if command in ("-h", "--help", "help"):
        stdout.write(_USAGE)
        return 0
    if command == "--version":
        stdout.write(f"ldaproute {__version__}\n")
        return 0
    proxy(args[1:] if command == "run" else args)
    return 0


def script() -> None:
    """The C{ldaproute} console script."""
    sys.exit(main(sys.argv[1:], sys.stdout, sys.stderr))
