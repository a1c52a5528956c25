"""
A slapd that can crash and come back, and what its access log says happened.

For the backend-fault scenarios (issue #14): L{RestartableSlapd.crash}
SIGKILLs a running L{tests.slapd.Slapd} (no goodbye to its clients, as a
killed container) and starts it again on the same port with the same
database, waiting until it answers again (about half a second on this
machine); it records when each outage began and ended.  L{AccessLog} reads
slapd's C{stats} log (the instance must be started with C{accessLog=True})
into one L{Operation} per request, with its result when slapd wrote one,
so a test can count what the backend really received and what was in
flight at the instant it was killed.

Each start of slapd is a I{generation}: connection numbers start again at
1000, so an operation is known by C{(generation, conn, op)}.

Fixtures in L{tests.integration.conftest}: C{restartableSlapd} and
C{restartableSlapdFactory}.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tests.slapd import Slapd

__all__ = ["AccessLog", "Operation", "Outage", "RestartableSlapd", "parseAccessLog"]

#: the request kinds as slapd's stats log names them
KINDS = frozenset({"BIND", "SRCH", "CMP", "MOD", "MODRDN", "ADD", "DEL", "EXT", "ABANDON", "UNBIND"})
#: requests that get no response (RFC 4511 4.3, 4.11)
_UNANSWERED = frozenset({"ABANDON", "UNBIND"})

_LINE = re.compile(r"conn=(\d+) op=(\d+) (.*)$")
_RESULT = re.compile(r"(?:SEARCH )?RESULT (?:tag=\d+ )?(?:oid= )?err=(\d+)(?:.*?nentries=(\d+))?")


@dataclass
class Operation:
    """
    One request slapd received, as its stats log shows it.

    @ivar kind: C{SRCH}, C{BIND}, C{MOD}, ... (L{KINDS}).
    @ivar detail: the rest of the request's first line (C{base="..." scope=2
        ...}, C{dn="..." method=128}, C{msg=3} for an Abandon).
    @ivar result: the resultCode slapd answered, or L{None} if it wrote no
        result (abandoned, or in flight when slapd was killed).
    @ivar entries: C{nentries} of a search's result.
    """

    generation: int
    conn: int
    op: int
    kind: str
    detail: str
    result: int | None = None
    entries: int | None = None

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.generation, self.conn, self.op)

    @property
    def answered(self) -> bool:
        return self.result is not None


def parseAccessLog(lines: Iterable[str]) -> list[Operation]:
    """
    Operations in the order slapd logged them.  A C{slapd starting} line
    begins a new generation; continuation lines (C{SRCH attr=...}, the
    second C{BIND} line) and connection events are skipped.
    """
    generation = 0
    ops: dict[tuple[int, int, int], Operation] = {}
    for line in lines:
        if line.endswith("slapd starting"):
            generation += 1
            continue
        match = _LINE.search(line)
        if match is None:
            continue
        conn, op, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        key = (generation, conn, op)
        result = _RESULT.match(rest)
        if result is not None:
            operation = ops.get(key)
            if operation is not None:
                operation.result = int(result.group(1))
                if result.group(2) is not None:
                    operation.entries = int(result.group(2))
            continue
        kind, _, detail = rest.partition(" ")
        if kind in KINDS and key not in ops:
            ops[key] = Operation(generation, conn, op, kind, detail)
    return list(ops.values())


class AccessLog:
    """
    One slapd's stats log, read afresh on each call.  L{mark} and the
    C{since} arguments count from a point of the test on.
    """

    def __init__(self, slapd: Slapd) -> None:
        if not slapd.accessLog:
            raise ValueError("the slapd must be started with accessLog=True to count its operations")
        self._slapd = slapd

    def mark(self) -> int:
        """A point in the log: operations logged after it are C{since} it."""
        return len(self._slapd.logLines())

    def operations(self, since: int = 0, kind: str | None = None) -> list[Operation]:
        """
        The requests logged after C{since} (a L{mark}), of C{kind} if given.
        Generations are numbered over the whole log, so keys stay the same
        whatever C{since} is.
        """
        lines = self._slapd.logLines()
        starts = sum(1 for line in lines[:since] if line.endswith("slapd starting"))
        ops = parseAccessLog(lines[since:])
        for operation in ops:
            operation.generation += starts
        if kind is not None:
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}; slapd logs {sorted(KINDS)}")
            ops = [operation for operation in ops if operation.kind == kind]
        return ops

    def count(self, kind: str, since: int = 0, where: Callable[[Operation], bool] | None = None) -> int:
        """How many C{kind} requests slapd received after C{since} (and matching C{where})."""
        return sum(1 for operation in self.operations(since, kind) if where is None or where(operation))

    def unanswered(self, kind: str | None = None, since: int = 0) -> list[Operation]:
        """
        Requests slapd received and never answered: in flight when it was
        killed (or abandoned).  Abandon and Unbind, which get no answer, are
        left out.
        """
        return [
            operation
            for operation in self.operations(since, kind)
            if not operation.answered and operation.kind not in _UNANSWERED
        ]


@dataclass
class Outage:
    """One crash: when slapd was killed and when it answered again (monotonic seconds)."""

    killedAt: float
    backAt: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.backAt is None else self.backAt - self.killedAt


@dataclass
class RestartableSlapd:
    """
    A started L{Slapd} that L{crash} kills and brings back, same port and
    database.

    @ivar slapd: the instance (its C{url}, users, log...).
    @ivar log: its L{AccessLog}.
    @ivar outages: every crash so far, in order.
    """

    slapd: Slapd
    outages: list[Outage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = AccessLog(self.slapd)

    @property
    def url(self) -> str:
        return self.slapd.url

    def crash(self, downFor: float = 0.0) -> Outage:
        """
        SIGKILL slapd, wait C{downFor} seconds, start it again and wait
        until it answers.  Blocks for the whole outage: run clients in
        threads (or use L{crashInBackground}).
        """
        outage = Outage(time.monotonic())
        self.outages.append(outage)
        self.slapd.kill()
        if downFor > 0:
            time.sleep(downFor)
        self.slapd.start()
        outage.backAt = time.monotonic()
        return outage

    def crashInBackground(self, downFor: float = 0.0) -> threading.Thread:
        """L{crash} in a thread of its own, started; join it before asserting."""
        thread = threading.Thread(target=self.crash, args=(downFor,), name="slapd-crash", daemon=True)
        thread.start()
        return thread
