"""The proxy's own cost per operation, in process, without sockets.

    python bench/inprocess.py [--mode shared|session] [--clients 16] [--ops 20000] [--profile]

Builds a FrontendFactory on the fakes of tests/fakes.py (StringTransports;
the backend is a function that answers every search request it finds in the
proxy's output with one SearchResultEntry and a SearchResultDone under the
same messageID), and times rounds in which each of C{--clients} clients
sends one exact-match search and the backend answers them all in one read,
as slapd does under load.  What is timed is the proxy's code from the
client's bytes to the client's answer, minus the fake backend's own time;
with --profile, cProfile's top functions by own time.  Kernel and reactor
costs (syscalls, epoll) are not in it: bench/run.py measures those.
"""
import argparse
import cProfile
import os
import pstats
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ldaproute.wire import ber  # noqa: E402
from ldaproute.wire.pdu import messageIDOf, opTagOf  # noqa: E402
from tests import pdus  # noqa: E402
from tests.fakes import Client, proxy  # noqa: E402

CONFIG = """
[ldaproute]
listen = tcp:10389
mode = {mode}
require_tls_for_simple_bind = off
access_log = off
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
{service}
[route:all]
pool = main
"""
SERVICE = "service_bind_dn = cn=admin,dc=example,dc=com\nservice_bind_password = secret\n"

ENTRY = pdus.searchEntry("uid=user1234,ou=people,dc=example,dc=com", 1,
                         [("cn", ["User 1234"]), ("sn", ["Number1234"]), ("mail", ["user1234@example.com"])])
ENTRY_OP = ENTRY[ENTRY.index(b"\x64"):]  # protocolOp element of the canned entry
DONE_OP = b"\x65\x07\x0a\x01\x00\x04\x00\x04\x00"


def answers(data):
    """Entry + done for every search request in the proxy's output."""
    out = []
    for request in ber.Framer(1 << 30).feed(data):
        messageID = messageIDOf(request)
        tag = opTagOf(request)
        if tag == ber.SEARCH_REQUEST:
            out.append(ber.message(messageID, ENTRY_OP))
            out.append(ber.message(messageID, DONE_OP))
        elif tag == ber.BIND_REQUEST:
            out.append(ber.message(messageID, b"\x61\x07\x0a\x01\x00\x04\x00\x04\x00"))
    return b"".join(out)


def setUp(mode, clients):
    factory, backends, _ = proxy(CONFIG.format(mode=mode, service=SERVICE if mode == "shared" else ""))
    cs = [Client(factory, host="192.0.2.%d" % (1 + i % 200)) for i in range(clients)]
    req = pdus.search("ou=people,dc=example,dc=com", messageID=1)
    for c in cs:
        c.send(req)
    for connection in list(backends.connections):
        connection.accept()
    for _ in range(3):  # service binds, then the first searches
        for connection in list(backends.connections):
            if connection.transport is not None:
                data = connection.sent()
                if data:
                    connection.respond(answers(data))
    for c in cs:
        assert c.received(), "no answer in the warm-up round"
    return cs, [c for c in backends.connections if c.transport is not None]


def requests(count, seed=1):
    import random
    rnd = random.Random(seed)
    base = "ou=people,dc=example,dc=com"
    return [pdus.search(base, messageID=2 + k % 2000, scope=2,
                        filter=_eq("uid", "user%d" % rnd.randrange(10000)),
                        attributes=["cn"])
            for k in range(count)]


def _eq(attr, value):
    from ldaptor.protocols import pureldap
    return pureldap.LDAPFilter_equalityMatch(
        attributeDesc=pureldap.LDAPAttributeDescription(attr),
        assertionValue=pureldap.LDAPAssertionValue(value))


def run(mode="shared", clients=16, ops=20000, profile=False):
    cs, connections = setUp(mode, clients)
    reqs = requests(2000)
    rounds = max(1, ops // clients)
    backendTime = 0.0
    clock = time.process_time  # CPU time: other processes share the machine
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    t0 = clock()
    k = 0
    for _ in range(rounds):
        for c in cs:
            c.send(reqs[k % 2000])
            k += 1
        b0 = clock()
        pending = [(conn, conn.sent()) for conn in connections]
        replies = [(conn, answers(data)) for conn, data in pending if data]
        backendTime += clock() - b0
        for conn, data in replies:
            conn.respond(data)
        b0 = clock()
        for c in cs:
            if c.transport.value().count(b"\x65\x07\x0a\x01\x00") != 1:
                raise AssertionError("a client did not get its answer: %r" % c.transport.value())
            c.transport.clear()
        backendTime += clock() - b0
    total = clock() - t0
    if prof:
        prof.disable()
    n = rounds * clients
    res = {"mode": mode, "clients": clients, "ops": n,
           "us_per_op": (total - backendTime) * 1e6 / n,
           "fake_backend_us_per_op": backendTime * 1e6 / n}
    if prof:
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(int(os.environ.get("INPROCESS_TOP", "25")))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", action="append", choices=["session", "shared"])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--ops", type=int, default=20000)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    for mode in a.mode or ["session", "shared"]:
        best = None
        for _ in range(1 if a.profile else 5):
            r = run(mode, a.clients, a.ops, a.profile)
            if best is None or r["us_per_op"] < best["us_per_op"]:
                best = r
        print("%(mode)-8s %(clients)d clients, %(ops)d ops: %(us_per_op).1f µs/op in the proxy "
              "(fake backend %(fake_backend_us_per_op).1f µs/op, excluded)" % best)


if __name__ == "__main__":
    main()
