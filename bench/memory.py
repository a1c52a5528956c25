"""Memory targets of the bench (stdlib only): idle connections and a slow reader.

    python bench/run.py --memory                 # with the rest of the bench
    python bench/memory.py [--connections N]     # alone (starts its own slapd)

1. **Idle connections**: N (default 10,000) client connections to ldaproute
   (session mode), opened from this process; the proxy's VmRSS
   (/proc/PID/status) is read before, with the N connections idle and
   without upstream links, and again after as many of them as the file
   descriptor limits allow have done one anonymous search, so that each
   holds its own upstream link to slapd.  The proxy needs two descriptors
   per linked client; RLIMIT_NOFILE is raised to its hard limit for this
   process, the proxy and slapd (children inherit it), and the number of
   linked clients is capped by what remains under that hard limit (a hard
   limit of 20,000 leaves room for about 9,980 linked clients of 10,000).
2. **Slow reader**: one client runs the 5,000-entry search
   ``(employeeType=big)`` and reads 4 KB every 10 ms (its socket receive
   buffer set small, so the kernel does not absorb the result), while the
   proxy's VmRSS is sampled every 10 ms; the peak growth is compared with
   the same search read as fast as possible and with the size of the
   result.  Flow control works when the slow reader's growth does not
   approach the result size.

Each measurement starts its own ldaproute process, so one does not inherit
the other's heap.
"""
import argparse
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ldapclient  # noqa: E402
from slapd import PEOPLE, Slapd, free_port, wait_port  # noqa: E402

IDLE_TARGET_MB = 250.0


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_kb(pid, field="VmRSS"):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise KeyError("Max open files")


class Proxy:
    """ldaproute (session mode) in front of slapd, as a child process."""

    def __init__(self, tmp, slapd_port, name="memory"):
        self.port = free_port()
        self.cfg = os.path.join(tmp, "ldaproute-%s.ini" % name)
        self.logpath = os.path.join(tmp, "ldaproute-%s.log" % name)
        with open(self.cfg, "w") as f:
            # the listener's default limits (10,000 connections, 1,000 per
            # address) would refuse part of the test's clients
            f.write("[ldaproute]\nlisten = tcp:%d:interface=127.0.0.1:backlog=1024\n"
                    "require_tls_for_simple_bind = off\naccess_log = off\n"
                    "max_connections = off\nmax_connections_per_address = off\n\n"
                    "[backend:slapd]\nurl = ldap://127.0.0.1:%d\n\n"
                    "[pool:main]\nbackends = slapd\n\n[route:all]\npool = main\n"
                    % (self.port, slapd_port))
        self.proc = None

    def start(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.logpath, "wb") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ldaproute", "-c", self.cfg], cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=raise_nofile)
        wait_port(self.port, timeout=20, proc=self.proc)
        # one search first: imports and first-use allocations are not
        # counted as the cost of the connections measured afterwards
        c = ldapclient.Conn("127.0.0.1", self.port)
        try:
            c.sock.sendall(_probe(1))
            c.read_until_done(ldapclient.SEARCH_DONE)
        finally:
            c.close()
        time.sleep(0.3)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        return status_kb(self.proc.pid)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def _probe(msgid):
    """An anonymous exact-match search for one entry."""
    return ldapclient.search_request(msgid, PEOPLE, "uid", "user1", scope=2, attrs=("cn",))


def _settle(proxy, seconds=1.0):
    """The proxy's RSS once it stops changing (or after `seconds`)."""
    time.sleep(0.2)
    last = proxy.rss_kb()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = proxy.rss_kb()
        if abs(now - last) < 256:
            return now
        last = now
    return last


def idle_connections(slapd, tmp, connections=10000, log=print):
    """Measure 1: the proxy's RSS holding `connections` idle clients."""
    limit = raise_nofile()
    if limit < connections + 100:
        raise RuntimeError("RLIMIT_NOFILE hard limit %d is too low for %d client sockets"
                           % (limit, connections))
    proxy = Proxy(tmp, slapd.port, "idle").start()
    socks = []
    sel = selectors.DefaultSelector()
    res = {"connections": connections}
    try:
        res["proxy_fd_limit"] = fd_limit(proxy.pid)
        res["slapd_fd_limit"] = fd_limit(slapd.pid)
        res["rss_before_kb"] = _settle(proxy)
        base = open_fds(proxy.pid)
        t0 = time.monotonic()
        for i in range(connections):
            s = socket.socket()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for attempt in range(20):
                try:
                    s.connect(("127.0.0.1", proxy.port))
                    break
                except OSError:
                    if attempt == 19:
                        raise
                    time.sleep(0.05)
            socks.append(s)
        res["connect_seconds"] = round(time.monotonic() - t0, 2)
        # every connection accepted by the proxy (not only by the kernel)
        deadline = time.monotonic() + 60
        while open_fds(proxy.pid) < base + connections and time.monotonic() < deadline:
            time.sleep(0.2)
        res["proxy_fds_idle"] = open_fds(proxy.pid)
        res["rss_idle_kb"] = _settle(proxy, 3.0)
        log("memory: %d idle connections: proxy RSS %d -> %d kB" % (
            connections, res["rss_before_kb"], res["rss_idle_kb"]))

        # as many as the proxy's descriptor limit allows get an upstream link
        spare = res["proxy_fd_limit"] - res["proxy_fds_idle"] - 50
        linked = max(0, min(connections, spare))
        res["linked"] = linked
        pending = {}
        t0 = time.monotonic()
        for k in range(linked):
            s = socks[k]
            s.sendall(_probe(2))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
            pending[s] = True
            # bounded pipelining: at most 500 searches in flight
            while len(pending) >= 500:
                _drain(sel, pending, 30.0)
        while pending:
            _drain(sel, pending, 30.0)
        res["search_seconds"] = round(time.monotonic() - t0, 2)
        res["proxy_fds_linked"] = open_fds(proxy.pid)
        res["rss_linked_kb"] = _settle(proxy, 3.0)
        res["rss_hwm_kb"] = status_kb(proxy.pid, "VmHWM")
        res["alive"] = proxy.proc.poll() is None
        per = lambda a, b, n: round((a - b) * 1024 / n) if n else None  # noqa: E731
        res["bytes_per_idle_connection"] = per(res["rss_idle_kb"], res["rss_before_kb"], connections)
        res["bytes_per_link"] = per(res["rss_linked_kb"], res["rss_idle_kb"], linked)
        # what 10,000 clients each with a link would take, by extrapolation
        # when the descriptor limit did not allow all of them
        res["rss_all_linked_est_mb"] = round(
            (res["rss_linked_kb"] + (connections - linked) * (res["bytes_per_link"] or 0) / 1024)
            / 1024, 1)
        res["target_mb"] = IDLE_TARGET_MB
        res["met"] = max(res["rss_idle_kb"], res["rss_linked_kb"]) / 1024 < IDLE_TARGET_MB \
            and res["rss_all_linked_est_mb"] < IDLE_TARGET_MB
        log("memory: %d of them with an upstream link: proxy RSS %d kB (%d fds)" % (
            linked, res["rss_linked_kb"], res["proxy_fds_linked"]))
    finally:
        sel.close()
        for s in socks:
            s.close()
        proxy.stop()
    return res


def _drain(sel, pending, timeout):
    events = sel.select(timeout)
    if not events:
        raise RuntimeError("no answer from the proxy for %.0fs (%d searches pending)"
                           % (timeout, len(pending)))
    for key, _ in events:
        s, buf = key.fileobj, key.data
        data = s.recv(65536)
        if not data:
            raise ConnectionError("the proxy closed a client connection")
        buf += data
        done, bad = ldapclient._pdus_done(buf, ldapclient.SEARCH_DONE)
        if bad:
            raise RuntimeError("anonymous search failed through the proxy")
        if done:
            sel.unregister(s)
            s.setblocking(True)
            del pending[s]


def stream(port, pid, chunk, pause, rcvbuf=None, slow_seconds=None, interval=0.01,
           timeout=180.0):
    """One 5,000-entry search read `chunk` bytes at a time with `pause` between reads.

    With slow_seconds, reads slowly for that long, then drains the rest fast.
    Returns bytes received (in the slow phase and in all), entries, seconds,
    and the proxy's RSS before and at its peak (sampled every `interval` s
    from a thread)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    before = status_kb(pid)
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], status_kb(pid))
            except OSError:
                return
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    total = 0
    slow_bytes = None
    buf = bytearray()
    entries = 0
    t0 = time.monotonic()
    try:
        s.sendall(ldapclient.big_search_request(PEOPLE, "employeeType", "big")[0])
        done = False
        while not done:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("search not finished after %.0fs" % timeout)
            data = s.recv(chunk)
            if not data:
                raise ConnectionError("the proxy closed the connection mid-search")
            total += len(data)
            buf += data
            n, done = _count_entries(buf)
            entries += n
            if pause and slow_bytes is None:
                if slow_seconds and time.monotonic() - t0 > slow_seconds:
                    slow_bytes = total
                    chunk = 262144
                else:
                    time.sleep(pause)
    finally:
        seconds = time.monotonic() - t0
        stop.set()
        th.join()
        s.close()
    return {"bytes": total, "slow_bytes": total if slow_bytes is None else slow_bytes,
            "entries": entries, "seconds": round(seconds, 2),
            "rss_before_kb": before, "rss_peak_kb": peak[0],
            "growth_kb": peak[0] - before}


def _count_entries(buf):
    """Consume whole PDUs from buf: (#SearchResultEntry, SearchResultDone seen)."""
    pdus = ldapclient.complete_pdus(buf)
    tags = [buf[op] for op, _ in pdus]
    if pdus:
        del buf[:pdus[-1][1]]
    return tags.count(0x64), 0x65 in tags


def slow_reader(slapd, tmp, log=print, chunk=4096, pause=0.01, rcvbuf=8192, slow_seconds=8.0):
    """Measure 2: peak RSS growth while a slow reader streams the big search.

    The reader reads `chunk` bytes every `pause` s for `slow_seconds`, then
    drains the rest fast: what matters is whether the proxy keeps reading
    from slapd faster than its client reads (it must not: its client's
    transport pauses the upstream link)."""
    proxy = Proxy(tmp, slapd.port, "stream").start()
    try:
        # a fast read first also warms up the proxy's buffers and allocator
        warm = stream(proxy.port, proxy.pid, 262144, 0)
        time.sleep(0.5)
        fast = stream(proxy.port, proxy.pid, 262144, 0)
        time.sleep(0.5)
        slow = stream(proxy.port, proxy.pid, chunk, pause, rcvbuf=rcvbuf,
                      slow_seconds=slow_seconds)
    finally:
        proxy.stop()
    res = {"result_bytes": slow["bytes"], "entries": slow["entries"],
           "reader": "%d B every %d ms for %.0f s, SO_RCVBUF %d, then fast" % (
               chunk, pause * 1000, slow_seconds, rcvbuf),
           "warmup": warm, "fast": fast, "slow": slow}
    # bounded: the slow reader grows the proxy by well under the result size
    res["slow_growth_over_result"] = round(slow["growth_kb"] * 1024 / slow["bytes"], 3)
    res["met"] = slow["growth_kb"] * 1024 < 0.05 * slow["bytes"]
    log("memory: %d-entry search (%d bytes): fast reader +%d kB, slow reader (%.1fs) +%d kB" % (
        slow["entries"], slow["bytes"], fast["growth_kb"], slow["seconds"], slow["growth_kb"]))
    return res


#: bytes of the extra description of each of the 5,000 "big" entries: the
#: result (about 22 MB) is then far larger than what the kernel's socket
#: buffers between slapd, the proxy and the client can hold, so a proxy
#: without flow control would have to hold most of it in its own memory
BLOB = 4000


def run(tmp, connections=10000, entries=10000, blob=BLOB, log=print):
    """Both measurements against a slapd of their own (with large entries)."""
    raise_nofile()  # inherited by slapd and the proxies
    with Slapd(entries=entries, workdir=os.path.join(tmp, "slapd-memory"), blob=blob) as slapd:
        return {"slow_reader": slow_reader(slapd, tmp, log=log),
                "idle": idle_connections(slapd, tmp, connections, log=log)}


def markdown(res):
    i, s = res["idle"], res["slow_reader"]
    mb = lambda kb: "%.1f" % (kb / 1024)  # noqa: E731
    out = ["## Memory (ldaproute, session mode)", "",
           "| measurement | proxy VmRSS MB | target | met |", "|---|---:|---|---|",
           "| before connections | %s | | |" % mb(i["rss_before_kb"]),
           "| %d idle client connections, no upstream link | %s | < %d MB | %s |" % (
               i["connections"], mb(i["rss_idle_kb"]), IDLE_TARGET_MB,
               "yes" if i["rss_idle_kb"] / 1024 < IDLE_TARGET_MB else "NO"),
           "| %d of them with an upstream link to slapd (one anonymous search each) | %s | "
           "< %d MB | %s |" % (i["linked"], mb(i["rss_linked_kb"]), IDLE_TARGET_MB,
                               "yes" if i["rss_linked_kb"] / 1024 < IDLE_TARGET_MB else "NO"),
           "| all %d with a link (extrapolated, %s bytes per link) | %s | < %d MB | %s |" % (
               i["connections"], i["bytes_per_link"], i["rss_all_linked_est_mb"],
               IDLE_TARGET_MB, "yes" if i["rss_all_linked_est_mb"] < IDLE_TARGET_MB else "NO"),
           "", "About %s bytes per idle client connection, %s per upstream link. "
           "Descriptor limits: proxy %d, slapd %d (the hard limit here; the proxy needs "
           "two per linked client)." % (i["bytes_per_idle_connection"], i["bytes_per_link"],
                                        i["proxy_fd_limit"], i["slapd_fd_limit"]), "",
           "| %d-entry search, %d bytes | seconds | proxy RSS before MB | peak growth kB | "
           "growth / result size |" % (s["entries"], s["result_bytes"]),
           "|---|---:|---:|---:|---:|"]
    for name, label in (("fast", "fast reader (256 KB reads)"),
                        ("slow", "slow reader (%s)" % s["reader"])):
        r = s[name]
        out.append("| %s | %.2f | %s | %d | %.4f |" % (
            label, r["seconds"], mb(r["rss_before_kb"]), r["growth_kb"],
            r["growth_kb"] * 1024 / r["bytes"]))
    out += ["", "Slow reader bounded (growth under 5 %% of the result size): %s." % (
        "yes" if s["met"] else "NO"), ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--entries", type=int, default=10000)
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    raise_nofile()
    import json
    tmp = tempfile.mkdtemp(prefix="ldaproute-memory-")
    try:
        res = run(tmp, a.connections, a.entries,
                  log=lambda *m: print(time.strftime("%H:%M:%S"), *m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print(markdown(res))


if __name__ == "__main__":
    main()
