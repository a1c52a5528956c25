"""A tiny blocking LDAP client for the latency workloads (stdlib only).

Requests are BER-encoded once, up front; the timed loop only does
``sendall`` and frames the responses (tag + length), so the client costs a
few microseconds per operation and the numbers are about the server/proxy.
"""
import random
import socket
import time


# --- BER encoding (just what the bench sends) -------------------------------

def _len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, value):
    return bytes([tag]) + _len(len(value)) + value


def _int(tag, n):
    return tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def message(msgid, op):
    return tlv(0x30, _int(0x02, msgid) + op)


def bind_request(msgid, dn, password):
    return message(msgid, tlv(0x60, _int(0x02, 3) + tlv(0x04, dn.encode())
                              + tlv(0x80, password.encode())))


def search_request(msgid, base, attr, value, scope=2, attrs=()):
    flt = tlv(0xA3, tlv(0x04, attr.encode()) + tlv(0x04, value.encode()))
    sel = tlv(0x30, b"".join(tlv(0x04, a.encode()) for a in attrs))
    return message(msgid, tlv(0x63, tlv(0x04, base.encode()) + _int(0x0A, scope)
                              + _int(0x0A, 0) + _int(0x02, 0) + _int(0x02, 0)
                              + tlv(0x01, b"\x00") + flt + sel))


def unbind_request(msgid):
    return message(msgid, b"\x42\x00")


# --- response framing -------------------------------------------------------

class Conn:
    """One blocking LDAP connection that frames responses at the byte level."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("connection closed by peer")
        self.buf += data

    def read_until_done(self, done_tags):
        """Read PDUs until one whose protocolOp tag is in done_tags.

        Returns (number of PDUs read, resultCode of the final PDU)."""
        count = 0
        buf = self.buf
        pos = 0
        while True:
            # need tag + first length byte
            while len(buf) - pos < 2:
                self._fill()
            lb = buf[pos + 1]
            if lb < 0x80:
                hdr, length = 2, lb
            else:
                nb = lb & 0x7F
                while len(buf) - pos < 2 + nb:
                    self._fill()
                hdr, length = 2 + nb, int.from_bytes(buf[pos + 2:pos + 2 + nb], "big")
            end = pos + hdr + length
            while len(buf) < end:
                self._fill()
            count += 1
            # messageID: 0x02 len value, then protocolOp tag
            p = pos + hdr
            optag = buf[p + 2 + buf[p + 1]]
            if optag in done_tags:
                op = p + 2 + buf[p + 1]
                # op tag, op length (short or long), then ENUMERATED resultCode
                ol = buf[op + 1]
                rc_at = op + 2 + ((ol & 0x7F) if ol >= 0x80 else 0)
                rc = buf[rc_at + 2]
                del buf[:end]
                return count, rc
            pos = end
            if pos > 1 << 20:
                del buf[:pos]
                pos = 0


SEARCH_DONE = frozenset([0x65])
BIND_DONE = frozenset([0x61])


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def run_sequential(host, port, requests, done_tags, duration, max_ops, bind=None):
    """Send requests one at a time on one connection, timing each.

    Bounded by duration (seconds) and max_ops.  Returns a result dict."""
    conn = Conn(host, port)
    errors = 0
    lat = []
    pdus = 0
    try:
        if bind is not None:
            conn.sock.sendall(bind)
            _, rc = conn.read_until_done(BIND_DONE)
            if rc != 0:
                raise RuntimeError("bind failed with resultCode %d" % rc)
        n = len(requests)
        clock = time.perf_counter
        t_start = clock()
        deadline = t_start + duration
        i = 0
        sendall = conn.sock.sendall
        read = conn.read_until_done
        while i < max_ops:
            t0 = clock()
            sendall(requests[i % n])
            c, rc = read(done_tags)
            t1 = clock()
            lat.append(t1 - t0)
            pdus += c
            if rc != 0:
                errors += 1
            i += 1
            if t1 >= deadline:
                break
        elapsed = clock() - t_start
        conn.sock.sendall(unbind_request(n + 10))
    finally:
        conn.close()
    lat.sort()
    return {
        "ops": len(lat),
        "seconds": elapsed,
        "errors": errors,
        "pdus": pdus,
        "p50_us": percentile(lat, 0.50) * 1e6 if lat else None,
        "p99_us": percentile(lat, 0.99) * 1e6 if lat else None,
    }


def exact_search_requests(base, n_users, count=2000, seed=1):
    rnd = random.Random(seed)
    return [search_request(1 + (k % 2000), base, "uid", "user%d" % rnd.randrange(n_users),
                           scope=2) for k in range(count)]


def big_search_request(base, attr, value):
    return [search_request(7, base, attr, value, scope=2)]


def complete_pdus(buf):
    """(offset of the protocolOp tag, end) of each complete PDU at the start of buf."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        lb = buf[pos + 1]
        if lb < 0x80:
            hdr, length = 2, lb
        else:
            nb = lb & 0x7F
            if n - pos < 2 + nb:
                break
            hdr, length = 2 + nb, int.from_bytes(buf[pos + 2:pos + 2 + nb], "big")
        end = pos + hdr + length
        if end > n:
            break
        p = pos + hdr
        out.append((p + 2 + buf[p + 1], end))
        pos = end
    return out


def _pdus_done(buf, done_tags):
    """Consume complete PDUs from buf; return (#done PDUs seen, #non-zero resultCodes)."""
    done = bad = 0
    pdus = complete_pdus(buf)
    for op, _ in pdus:
        if buf[op] in done_tags:
            done += 1
            ol = buf[op + 1]
            if buf[op + 2 + ((ol & 0x7F) if ol >= 0x80 else 0) + 2] != 0:
                bad += 1
    if pdus:
        del buf[:pdus[-1][1]]
    return done, bad


def run_concurrent(host, port, make_requests, clients, done_tags, duration, max_ops):
    """`clients` persistent connections, one operation outstanding on each
    (closed loop), driven from one thread with selectors.

    make_requests(k) returns the list of pre-encoded requests of connection k.
    Bounded by duration and max_ops.  Returns a result dict."""
    import selectors
    sel = selectors.DefaultSelector()
    conns = []
    try:
        for k in range(clients):
            c = Conn(host, port)
            c.reqs = make_requests(k)
            c.i = 0
            conns.append(c)
        clock = time.perf_counter
        ops = errors = 0
        lat = []
        t_start = clock()
        deadline = t_start + duration
        for c in conns:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
            c.t0 = clock()
            c.sock.send(c.reqs[0])
        sent = clients
        active = clients
        while active:
            for key, _ in sel.select(5.0):
                c = key.data
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by peer")
                c.buf += data
                done, bad = _pdus_done(c.buf, done_tags)
                if not done:
                    continue
                t1 = clock()
                ops += done
                errors += bad
                lat.append(t1 - c.t0)
                if t1 < deadline and sent < max_ops:
                    c.i += 1
                    c.t0 = t1
                    c.sock.send(c.reqs[c.i % len(c.reqs)])
                    sent += 1
                else:
                    sel.unregister(c.sock)
                    active -= 1
        elapsed = clock() - t_start
    finally:
        sel.close()
        for c in conns:
            c.close()
    lat.sort()
    return {"ops": ops, "seconds": elapsed, "errors": errors,
            "p50_us": percentile(lat, 0.50) * 1e6 if lat else None,
            "p99_us": percentile(lat, 0.99) * 1e6 if lat else None}


def bind_requests(people, n_users, count=500, seed=2):
    rnd = random.Random(seed)
    out = []
    for k in range(count):
        i = rnd.randrange(n_users)
        out.append(bind_request(1 + k, "uid=user%d,%s" % (i, people), "pass%d" % i))
    return out
