"""
Coverage-guided fuzz target (atheris/libFuzzer) for the client-facing
protocol: one input is one client byte stream, fed to a L{FrontendProtocol}
on in-memory backends in pieces whose size the input's last byte chooses;
backends accept, answer every request they get, and sometimes drop.

Invariants checked on every input: no exception escapes the protocol; what
the client receives is a sequence of well-formed LDAPMessages; unless the
proxy closed the connection, no operation is left outstanding once the
backends have answered.

    python tests/fuzz/fuzz_frontend.py OUTPUT_DIR tests/fuzz/corpus -max_total_time=60

(libFuzzer writes new inputs to the first directory; the committed seed
corpus, recorded from real clients by L{tests.fuzz.record}, stays as is.)
tests/test_fuzz_atheris.py runs it briefly in the default suite.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

with atheris.instrument_imports(include=["ldaproute"]):
    # everything of ldaproute the fakes pull in is imported (and instrumented) here
    from ldaproute.wire import ber
    from tests.fakes import Client, proxy

CONFIG = """
[ldaproute]
listen = tcp:10389
max_pdu_bytes = 100000
max_filter_depth = 16
[backend:a]
url = ldap://a.example:389
[backend:b]
url = ldap://b.example:389
[pool:main]
backends = a, b
[pool:corp]
backends = b
[route:ro]
suffix = ou=legacy,dc=example,dc=com
operations = write
reject = 53 read-only
[route:corp]
suffix = dc=corp,dc=example,dc=com
pool = corp
[route:all]
pool = main
"""


def _answer(connection: object, framers: dict[int, ber.Framer | None]) -> None:
    framer = framers.setdefault(id(connection), ber.Framer(1 << 24))
    if framer is None:
        connection.sent()  # type: ignore[attr-defined]
        return
    answers = []
    try:
        sent = framer.feed(connection.sent())  # type: ignore[attr-defined]
    except ber.FramingError:
        # after a SASL bind this fake backend "accepted" (it says yes to
        # everything), the proxy relays the client's bytes opaquely, as it
        # must for a negotiated security layer: not LDAP any more
        framers[id(connection)] = None
        return
    for pdu in sent:
        envelope = ber.Envelope.fromBytes(pdu)
        answer = ber.resultFor(envelope, 0, "")
        if answer is not None:
            answers.append(answer)
    if answers:
        connection.respond(b"".join(answers))  # type: ignore[attr-defined]


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    # the whole input is the client stream (so recorded traffic is a valid
    # seed); its last byte also chooses piece sizes and backend behaviour
    control, stream = data[-1], data
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    framers: dict[int, ber.Framer | None] = {}
    step = (control & 0x3F) + 1
    for start in range(0, len(stream), step):
        if client.transport.disconnecting:
            break
        client.send(stream[start : start + step])
        for i, connection in enumerate(backends.connections):
            if connection.transport is None and not connection.deferred.called:
                if control & 0x40 and i == 0:
                    connection.refuse()
                else:
                    connection.accept()
            elif connection.transport is not None and not connection.transport.disconnecting:
                _answer(connection, framers)
    if control & 0x80 and not client.transport.disconnecting:
        for connection in backends.connections:
            if connection.transport is not None and not connection.transport.disconnecting:
                connection.drop()
                break
    for _ in range(3):
        for connection in backends.connections:
            if connection.transport is None and not connection.deferred.called:
                connection.accept()
            elif connection.transport is not None and not connection.transport.disconnecting:
                _answer(connection, framers)
    out = client.received()
    scanner = ber.ResponseScanner(1 << 24)
    complete, _ = scanner.feed(out)
    if complete != out:
        raise AssertionError("the client received a partial or malformed PDU")
    if not client.transport.disconnecting and client.protocol.session.outstanding:
        raise AssertionError(f"operations left outstanding: {sorted(client.protocol.session.outstanding)}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
