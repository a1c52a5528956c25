#!/usr/bin/env python3
"""ldaproute benchmark: real slapd, real load generator, ratios to direct.

    python bench/run.py --quick      # smoke form, < 2 minutes
    python bench/run.py              # full form: 3 repetitions, ~10 minutes

Starts a throwaway slapd with 10,000 indexed users, then runs bounded
workloads against each target (direct slapd, HAProxy mode tcp, Twisted
portforward, ldaptor ProxyBase, ldaproute), interleaved, several repetitions,
and reports medians.  Writes bench/results/latest.{md,json,png}.

Missing tools (ldclt, haproxy, matplotlib) are installed unless --no-install
is given; see bench/README.md.  Every process started here runs in its own
process group and is killed on exit, error or Ctrl-C.
"""
import argparse
import glob
import json
import os
import platform
import random
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ldapclient  # noqa: E402
import memory  # noqa: E402
from slapd import PEOPLE, ROOTDN, ROOTPW, Slapd, free_port, wait_port  # noqa: E402

TOOLS = os.path.join(HERE, ".tools")
HZ = os.sysconf("SC_CLK_TCK")

ALL_TARGETS = ["direct", "haproxy", "portforward", "ldaptor", "ldaproute", "ldaproute-defaults"]
# ldclt: uid=userXXXX with -r1000 -R9999 gives 4-digit numbers, so ldclt's
# zero padding never applies and every generated uid exists.
_RANGE = ["-r", "1000", "-R", "9999"]
_RBIND = ["randombinddn", "randombinddnlow=1000", "randombinddnhigh=9999"]
_USER = ["-D", "uid=userXXXX," + PEOPLE, "-w", "passXXXX"]
WORKLOADS = {
    "search1": dict(kind="py", clients=1,
                    desc="exact-match search (uid=userN), 1 client, one bound persistent "
                         "connection; Python raw-socket client, p50/p99 per op"),
    "search16": dict(kind="ldclt", clients=16, warm=100,
                     args=["-e", "esearch,random", "-f", "uid=userXXXX"] + _RANGE,
                     desc="exact-match search, 16 ldclt threads, persistent connections"),
    "bind8": dict(kind="py", clients=8,
                  desc="simple bind as a random user, 8 persistent connections re-binding, "
                       "one bind outstanding on each (Python client driving 8 sockets; "
                       "ldclt's bindonly does not re-bind on a persistent connection)"),
    "modify8": dict(kind="ldclt", clients=8, warm=50,
                    args=["-e", "attreplace=description:XXXXXXXXXX,random",
                          "-f", "uid=userXXXX", "-D", ROOTDN, "-w", ROOTPW] + _RANGE,
                    desc="replace description of a random user (as rootdn), 8 ldclt threads"),
    "churn8": dict(kind="ldclt", clients=8, warm=20,
                   args=["-e", ",".join(["bindeach", "esearch", "random"] + _RBIND),
                         "-f", "uid=userXXXX"] + _USER + _RANGE,
                   desc="connect + bind + exact search + unbind per op, 8 ldclt threads"),
    "bigsearch": dict(kind="py", clients=1,
                      desc="one subtree search of ou=people returning 5,000 entries "
                           "(employeeType=big), 1 client, sequential; op = whole search"),
}
ALL_WORKLOADS = list(WORKLOADS)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# --- tools -----------------------------------------------------------------

def _ldclt_works(path):
    try:
        r = subprocess.run([path, "-?"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "error while loading shared libraries" not in r.stderr


def find_ldclt(install):
    for c in [os.environ.get("LDCLT"), shutil.which("ldclt"),
              os.path.join(TOOLS, "usr", "bin", "ldclt")]:
        if c and os.path.exists(c) and _ldclt_works(c):
            return c, None
    if install:
        # A standalone ldclt without installing the 389 Directory Server:
        # download the Debian package and unpack it under bench/.tools.
        log("ldclt not found: apt-get download 389-ds-base && dpkg -x into", TOOLS)
        os.makedirs(TOOLS, exist_ok=True)
        try:
            for deb in glob.glob(os.path.join(TOOLS, "389-ds-base_*.deb")):
                os.unlink(deb)
            subprocess.run(["apt-get", "download", "389-ds-base"], cwd=TOOLS, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
            deb = glob.glob(os.path.join(TOOLS, "389-ds-base_*.deb"))[0]
            subprocess.run(["dpkg", "-x", deb, TOOLS], check=True, timeout=300)
            path = os.path.join(TOOLS, "usr", "bin", "ldclt")
            if _ldclt_works(path):
                return path, None
            return None, ("ldclt unpacked but cannot run (missing libraries, see `ldd %s`;"
                          " try: apt-get install libnss3 libnspr4 libldap-2.5-0 libsasl2-2)" % path)
        except Exception as e:  # noqa: BLE001
            return None, "could not fetch ldclt (%s)" % e
    return None, ("ldclt not found: `apt-get install 389-ds-base`, or `cd bench/.tools && "
                  "apt-get download 389-ds-base && dpkg -x 389-ds-base_*.deb .`, or set LDCLT")


def find_haproxy(install):
    c = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if c:
        return c, None
    if install and os.geteuid() == 0:
        log("haproxy not found: apt-get install -y haproxy")
        r = subprocess.run(["apt-get", "install", "-y", "-q", "haproxy"],
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        c = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if r.returncode == 0 and os.path.exists(c):
            return c, None
    return None, "haproxy not found: `apt-get install haproxy` (Debian 12 ships 2.6)"


def ensure_matplotlib(install):
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    if install:
        log("matplotlib not found: pip install matplotlib")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], timeout=600)
        try:
            import matplotlib  # noqa: F401,F811
            return True
        except ImportError:
            pass
    return False


# --- processes ----------------------------------------------------------------

def build_compiled(tmp):
    """A copy of this checkout with setup.py's COMPILED modules built by mypyc
    (LDAPROUTE_MYPYC=1); returns (its path, None) or (None, why not)."""
    dest = os.path.join(tmp, "compiled")
    ignore = shutil.ignore_patterns(".git", "build", "results", ".tools", "*.so", "__pycache__")
    shutil.copytree(REPO, dest, ignore=ignore)
    env = dict(os.environ, LDAPROUTE_MYPYC="1")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=dest, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, "the mypyc build failed (is mypy installed?): " + (r.stderr or r.stdout)[-400:]
    log("built the mypyc-compiled copy in %.0fs: %s" % (time.monotonic() - t0, dest))
    return dest, None


def group_cpu_ticks(pgid):
    """utime+stime (clock ticks) of every live process in process group pgid."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        if int(rest[2]) == pgid:
            total += int(rest[11]) + int(rest[12])
    return total


def kill_group(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


class Target:
    """A proxy (or nothing, for direct) in front of slapd."""

    def __init__(self, name, tmp, slapd, tools, ldaproute_mode=None, repo=REPO):
        self.name = name
        #: the checkout the ldaproute targets run from (a compiled copy for -mypyc)
        self.repo = repo
        self.tmp = tmp
        self.slapd = slapd
        self.tools = tools
        self.mode = ldaproute_mode
        self.proc = None
        self.port = None
        self.skip = None
        self.logpath = os.path.join(tmp, name + ".log")

    def command(self):
        sp = str(self.slapd.port)
        if self.name == "haproxy":
            if not self.tools.get("haproxy"):
                self.skip = self.tools["haproxy_msg"]
                return None
            cfg = os.path.join(self.tmp, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write("global\n  maxconn 8000\n\ndefaults\n  mode tcp\n"
                        "  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n\n"
                        "frontend ldap\n  bind 127.0.0.1:%d\n  default_backend slapd\n\n"
                        "backend slapd\n  server s1 127.0.0.1:%s\n" % (self.port, sp))
            return [self.tools["haproxy"], "-db", "-f", cfg]
        if self.name == "portforward":
            return [sys.executable, os.path.join(HERE, "portforward.py"), str(self.port), "127.0.0.1", sp]
        if self.name == "ldaptor":
            return [sys.executable, os.path.join(HERE, "ldaptorproxy.py"), str(self.port), "127.0.0.1", sp]
        if self.name.startswith("ldaproute"):
            cfg = os.path.join(self.tmp, self.name + ".ini")
            with open(cfg, "w") as f:
                f.write("[ldaproute]\nlisten = tcp:%d:interface=127.0.0.1\n" % self.port)
                # loopback bench: cleartext simple binds, and no per-operation
                # access log line (a log write per operation is what is measured
                # otherwise; LDAPROUTE_BENCH_ACCESS_LOG=on measures it)
                f.write("require_tls_for_simple_bind = off\n")
                # ldaproute-defaults: the default access log (on, to stdout:
                # this target's log file), to price it beside access_log = off
                if self.name != "ldaproute-defaults":
                    f.write("access_log = %s\n" % os.environ.get("LDAPROUTE_BENCH_ACCESS_LOG", "off"))
                if self.mode and self.mode != "session":
                    f.write("mode = %s\n" % self.mode)
                f.write("\n[backend:slapd]\nurl = ldap://127.0.0.1:%s\n\n"
                        "[pool:main]\nbackends = slapd\n" % sp)
                if self.mode == "shared":
                    # the rootdn may assert any identity of its database
                    # (Proxied Authorization); docs/shared-mode.rst
                    f.write("service_bind_dn = %s\nservice_bind_password = %s\n" % (ROOTDN, ROOTPW))
                f.write("\n[route:all]\npool = main\n")
            return [sys.executable, "-m", "ldaproute", "-c", cfg]
        raise ValueError(self.name)

    def start(self):
        if self.name == "direct":
            self.port = self.slapd.port
            return True
        self.port = free_port()
        cmd = self.command()
        if cmd is None:
            return False
        env = dict(os.environ)
        env["PYTHONPATH"] = self.repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        logf = open(self.logpath, "wb")
        try:
            self.proc = subprocess.Popen(cmd, cwd=self.repo, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            logf.close()
        try:
            wait_port(self.port, timeout=15, proc=self.proc)
            self.check()
        except Exception as e:  # noqa: BLE001
            tail = ""
            try:
                with open(self.logpath, errors="replace") as f:
                    lines = [l.rstrip() for l in f if l.strip()]
                tail = " | ".join(lines[-3:])
            except OSError:
                pass
            self.skip = "did not start or does not answer (%s)%s" % (
                e, ("; its output: " + tail[-600:]) if tail else "")
            if self.name.startswith("ldaproute"):
                self.skip = ("`python -m ldaproute` is not available or not working yet "
                             "in this checkout: " + self.skip)
            self.stop()
            return False
        return True

    def check(self):
        """One bound search through the target must return the entry."""
        r = ldapclient.run_sequential(
            "127.0.0.1", self.port, ldapclient.exact_search_requests(PEOPLE, 10, 1),
            ldapclient.SEARCH_DONE, 5.0, 1,
            bind=ldapclient.bind_request(1, "uid=user1," + PEOPLE, "pass1"))
        if r["errors"] or r["pdus"] != 2:
            raise RuntimeError("test search through the target failed: %r" % r)

    def cpu_ticks(self):
        if self.proc is None:
            return None
        return group_cpu_ticks(self.proc.pid)

    def stop(self):
        kill_group(self.proc)


# --- workloads ------------------------------------------------------------------

def run_ldclt(ldclt, port, wl, per_thread, timeout):
    """Run ldclt with -T per_thread ops per thread; time until all threads end.

    Returns (ops, seconds, errors, note)."""
    n = wl["clients"]
    cmd = [ldclt, "-h", "127.0.0.1", "-p", str(port), "-b", PEOPLE, "-n", str(n),
           "-T", str(per_thread), "-t", "30", "-E", "1000"] + wl["args"]
    if shutil.which("stdbuf"):
        cmd = ["stdbuf", "-oL", "-eL"] + cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    dead = errors = 0
    t_end = None
    note = None
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = t0 + timeout
    try:
        while dead < n:
            left = deadline - time.perf_counter()
            if left <= 0:
                note = "timeout after %.0fs (%d of %d threads done)" % (timeout, dead, n)
                break
            if not sel.select(min(left, 0.5)):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                note = note or "ldclt exited early (%d of %d threads done)" % (dead, n)
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if b"thread is dead" in line:
                    dead += 1
                    t_end = time.perf_counter()
                elif b"error=" in line or b"Max error" in line:
                    errors += 1
    finally:
        sel.close()
        kill_group(proc, timeout=2)
        proc.stdout.close()
    if dead < n or t_end is None:
        return None, time.perf_counter() - t0, errors, note
    ops = max(0, n * per_thread - errors)
    return ops, t_end - t0, errors, note


def measure(target, slapd, wl_name, params, ctx):
    wl = WORKLOADS[wl_name]
    c0 = target.cpu_ticks()
    s0 = group_cpu_ticks(slapd.pid)
    rec = {"target": target.name, "workload": wl_name}
    if wl["kind"] == "ldclt":
        ops, secs, errors, note = run_ldclt(ctx["ldclt"], target.port, wl, params["T"],
                                            timeout=ctx["timeout"])
        p50 = p99 = None
    elif wl_name == "search1":
        r = ldapclient.run_sequential(
            "127.0.0.1", target.port, ctx["search_reqs"], ldapclient.SEARCH_DONE,
            params["duration"], 200000,
            bind=ldapclient.bind_request(1, "uid=user2," + PEOPLE, "pass2"))
        ops, secs, errors, note, p50, p99 = r["ops"], r["seconds"], r["errors"], None, r["p50_us"], r["p99_us"]
    elif wl_name == "bind8":
        r = ldapclient.run_concurrent(
            "127.0.0.1", target.port, ctx["bind_reqs"], wl["clients"], ldapclient.BIND_DONE,
            params["duration"], 2000000)
        ops, secs, errors, note, p50, p99 = r["ops"], r["seconds"], r["errors"], None, r["p50_us"], r["p99_us"]
    else:  # bigsearch
        r = ldapclient.run_sequential(
            "127.0.0.1", target.port, ctx["big_reqs"], ldapclient.SEARCH_DONE,
            params["duration"], 1000)
        ops, secs, errors, note, p50, p99 = r["ops"], r["seconds"], r["errors"], None, r["p50_us"], r["p99_us"]
        if ops and r["pdus"] != ops * (ctx["big_entries"] + 1):
            note = "expected %d PDUs per search, got %.1f" % (ctx["big_entries"] + 1, r["pdus"] / ops)
    c1 = target.cpu_ticks()
    s1 = group_cpu_ticks(slapd.pid)
    rec.update(ops=ops, seconds=round(secs, 4), errors=errors, note=note, p50_us=p50, p99_us=p99)
    rec["ops_s"] = ops / secs if ops else None
    rec["proxy_cpu_us_op"] = ((c1 - c0) * 1e6 / HZ / ops) if (ops and c0 is not None) else None
    rec["slapd_cpu_us_op"] = ((s1 - s0) * 1e6 / HZ / ops) if ops else None
    return rec


def calibrate(target, slapd, wl_name, ctx):
    """A short warm-up run; sizes -T so that one measured run lasts ~duration."""
    wl = WORKLOADS[wl_name]
    if wl["kind"] == "py":
        measure(target, slapd, wl_name, {"duration": min(0.3, ctx["duration"])}, ctx)
        return {"duration": ctx["duration"]}
    rec = measure(target, slapd, wl_name, {"T": wl["warm"]}, ctx)
    if not rec["ops_s"]:
        return {"T": wl["warm"], "warmup": rec}
    T = int(rec["ops_s"] * ctx["duration"] / wl["clients"])
    return {"T": max(10, min(T, 2000000))}


# --- reporting -------------------------------------------------------------------

def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(records, targets, workloads):
    direct = {(r["workload"], r["rep"]): r for r in records if r["target"] == "direct"}
    for r in records:
        d = direct.get((r["workload"], r["rep"]))
        r["ratio"] = (r["ops_s"] / d["ops_s"]) if (d and d["ops_s"] and r["ops_s"]) else None
        r["added_p50_us"] = (r["p50_us"] - d["p50_us"]) if (d and d.get("p50_us") is not None
                                                          and r.get("p50_us") is not None) else None
    rows = []
    for w in workloads:
        for t in targets:
            rs = [r for r in records if r["target"] == t and r["workload"] == w]
            if not rs:
                continue
            rows.append({
                "workload": w, "target": t, "reps": len(rs),
                "ops_s": _med([r["ops_s"] for r in rs]),
                "ratio": _med([r["ratio"] for r in rs]),
                "proxy_cpu_us_op": _med([r["proxy_cpu_us_op"] for r in rs]),
                "slapd_cpu_us_op": _med([r["slapd_cpu_us_op"] for r in rs]),
                "p50_us": _med([r["p50_us"] for r in rs]),
                "p99_us": _med([r["p99_us"] for r in rs]),
                "added_p50_us": _med([r["added_p50_us"] for r in rs]),
                "errors": sum(r["errors"] or 0 for r in rs),
                "failed_runs": sum(1 for r in rs if not r["ops"]),
                "notes": sorted({r["note"] for r in rs if r.get("note")}),
            })
    return rows


def _f(x, fmt="{:,.0f}"):
    return "–" if x is None else fmt.format(x)


def markdown(meta, rows, skipped, mem=None):
    out = ["# ldaproute bench: %s" % meta["started"], "",
           "%s; %d CPUs; load average before %s; %d entries; %d rep(s) of ~%.1fs per "
           "target and workload, interleaved; medians." % (
               meta["host"], meta["cpus"], meta["loadavg_before"], meta["entries"],
               meta["reps"], meta["duration"]), ""]
    if skipped:
        out += ["Skipped targets:", ""] + ["- **%s**: %s" % kv for kv in skipped.items()] + [""]
    out += ["| workload | target | ops/s | ratio to direct | proxy CPU-µs/op | slapd CPU-µs/op "
            "| p50 µs | p99 µs | added p50 µs | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        err = str(r["errors"]) + (" (%d failed runs)" % r["failed_runs"] if r["failed_runs"] else "")
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["workload"], r["target"], _f(r["ops_s"]), _f(r["ratio"], "{:.2f}"),
            _f(r["proxy_cpu_us_op"]), _f(r["slapd_cpu_us_op"]), _f(r["p50_us"]),
            _f(r["p99_us"]), _f(r["added_p50_us"]), err))
    notes = [(r["workload"], r["target"], n) for r in rows for n in r["notes"]]
    if notes:
        out += ["", "Notes:", ""] + ["- %s / %s: %s" % n for n in notes]
    out += ["", "Workloads:", ""] + ["- **%s**: %s" % (w, WORKLOADS[w]["desc"])
                                      for w in meta["workloads"]]
    out += ["", "bigsearch: one op is one whole 5,000-entry search; CPU-µs/op is per search.",
            "ratio: proxied ops/s over direct ops/s in the same repetition (median over reps). "
            "CPU-µs/op: utime+stime from /proc of the proxy's process group (or slapd) during the "
            "run, divided by operations completed (resolution 1/%d s)." % HZ, ""]
    if mem:
        out += [memory.markdown(mem)]
    return "\n".join(out)


def plot(rows, targets, workloads, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 1, figsize=(11, 8))
    width = 0.8 / max(1, len(targets))
    for ax, key, title in ((axes[0], "ratio", "throughput ratio to direct (higher is better)"),
                           (axes[1], "proxy_cpu_us_op", "proxy CPU-µs per op (lower is better; log)")):
        for i, t in enumerate(targets):
            if key == "proxy_cpu_us_op" and t == "direct":
                continue
            xs, ys = [], []
            for j, w in enumerate(workloads):
                r = next((r for r in rows if r["target"] == t and r["workload"] == w), None)
                if r and r[key]:
                    xs.append(j + (i - (len(targets) - 1) / 2) * width)
                    ys.append(r[key])
            ax.bar(xs, ys, width, label=t, color="C%d" % i)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if key == "proxy_cpu_us_op":
            ax.set_yscale("log")
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].legend(ncol=len(targets), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main --------------------------------------------------------------------------

def run(targets=None, workloads=None, reps=3, duration=4.0, entries=10000,
        ldaproute_modes=("session",), install=True, outdir=None, write=True,
        memory_connections=None, compiled=False):
    """Run the bench; returns {"meta", "records", "rows", "skipped"}."""
    targets = list(targets or ALL_TARGETS)
    workloads = list(workloads or ALL_WORKLOADS)
    if "ldaproute" in targets:
        i = targets.index("ldaproute")
        targets[i:i + 1] = [("ldaproute" if m == "session" else "ldaproute-" + m) + suffix
                            for m in ldaproute_modes
                            for suffix in (("", "-mypyc") if compiled else ("",))]
    if "direct" not in targets:
        targets.insert(0, "direct")
    tools = {}
    skipped = {}
    need_ldclt = any(WORKLOADS[w]["kind"] == "ldclt" for w in workloads)
    if need_ldclt:
        tools["ldclt"], msg = find_ldclt(install)
        if not tools["ldclt"]:
            log("WARNING:", msg, "- skipping ldclt workloads")
            skipped["ldclt workloads"] = msg
            workloads = [w for w in workloads if WORKLOADS[w]["kind"] != "ldclt"]
    if "haproxy" in targets:
        tools["haproxy"], tools["haproxy_msg"] = find_haproxy(install)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_before": open("/proc/loadavg").read().split()[0],
            "entries": entries, "reps": reps, "duration": duration, "workloads": workloads,
            "ldclt": tools.get("ldclt"), "haproxy": tools.get("haproxy"),
            "python": sys.version.split()[0]}
    tmp = tempfile.mkdtemp(prefix="ldaproute-bench-")
    compiledRepo = None
    if any(name.endswith("-mypyc") for name in targets):
        compiledRepo, msg = build_compiled(tmp)
        if compiledRepo is None:
            log("WARNING:", msg)
            for name in [n for n in targets if n.endswith("-mypyc")]:
                skipped[name] = msg
                targets.remove(name)
    slapd = Slapd(entries=entries, workdir=os.path.join(tmp, "slapd"))
    live = []
    records = []
    try:
        t0 = time.monotonic()
        slapd.start()
        log("slapd with %d entries on %s (pid %d), %.1fs" % (entries, slapd.url, slapd.pid,
                                                              time.monotonic() - t0))
        for name in targets:
            mode = None
            repo = REPO
            if name.startswith("ldaproute"):
                base = name.removesuffix("-mypyc")
                mode = base.split("-", 1)[1] if "-" in base else "session"
                if mode == "defaults":
                    mode = "session"
                if name.endswith("-mypyc"):
                    repo = compiledRepo
            t = Target(name, tmp, slapd, tools, ldaproute_mode=mode, repo=repo)
            if t.start():
                live.append(t)
                log("target %-16s port %d%s" % (name, t.port, " pid %d" % t.proc.pid if t.proc else ""))
            else:
                skipped[name] = t.skip
                log("SKIP target %s: %s" % (name, t.skip))
        ctx = {"ldclt": tools.get("ldclt"), "duration": duration,
               "timeout": max(15.0, 6 * duration),
               "search_reqs": ldapclient.exact_search_requests(PEOPLE, entries),
               "bind_reqs": lambda k: ldapclient.bind_requests(PEOPLE, entries, seed=k),
               "big_reqs": ldapclient.big_search_request(PEOPLE, "employeeType", "big"),
               "big_entries": (entries + 1) // 2}
        params = {}
        for w in workloads:
            for t in live:
                params[(t.name, w)] = calibrate(t, slapd, w, ctx)
        for rep in range(reps):
            for w in workloads:
                order = live[rep % len(live):] + live[:rep % len(live)]
                for t in order:
                    rec = measure(t, slapd, w, params[(t.name, w)], ctx)
                    rec["rep"] = rep
                    records.append(rec)
                    log("rep %d %-9s %-16s %10s ops/s  proxy %6s µs/op  p50 %6s µs  errors %s%s" % (
                        rep, w, t.name, _f(rec["ops_s"]), _f(rec["proxy_cpu_us_op"]),
                        _f(rec["p50_us"]), rec["errors"],
                        ("  (%s)" % rec["note"]) if rec["note"] else ""))
                    if t.proc is not None and t.proc.poll() is not None:
                        raise RuntimeError("target %s died (exit %s); see %s" % (
                            t.name, t.proc.returncode, t.logpath))
    finally:
        for t in live:
            t.stop()
        slapd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    names = [t.name for t in live]
    rows = summarize(records, names, workloads)
    result = {"meta": meta, "records": records, "rows": rows, "skipped": skipped}
    if memory_connections:
        # bench/memory.py: its own slapd (large entries) and proxies
        mtmp = tempfile.mkdtemp(prefix="ldaproute-bench-memory-")
        try:
            result["memory"] = memory.run(mtmp, memory_connections, log=log)
        finally:
            shutil.rmtree(mtmp, ignore_errors=True)
    if write:
        outdir = outdir or os.path.join(HERE, "results")
        os.makedirs(outdir, exist_ok=True)
        with open(os.path.join(outdir, "latest.json"), "w") as f:
            json.dump(result, f, indent=1)
        md = markdown(meta, rows, skipped, result.get("memory"))
        with open(os.path.join(outdir, "latest.md"), "w") as f:
            f.write(md)
        if ensure_matplotlib(install):
            plot(rows, names, workloads, os.path.join(outdir, "latest.png"))
        else:
            log("matplotlib not available (pip install matplotlib): no plot")
        print(md)
        log("wrote", os.path.join(outdir, "latest.{md,json,png}"))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke form: 1 repetition of ~1s per target and workload (< 2 min)")
    p.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 4; 1 with --quick)")
    p.add_argument("--targets", help="comma list of %s (default all)" % ",".join(ALL_TARGETS))
    p.add_argument("--workloads", help="comma list of %s (default all)" % ",".join(ALL_WORKLOADS))
    p.add_argument("--ldaproute-mode", action="append", choices=["session", "shared"],
                   help="ldaproute variant(s) to run; repeat for several (default: session)")
    p.add_argument("--compiled", action="store_true",
                   help="also run each ldaproute variant from a copy built with LDAPROUTE_MYPYC=1 "
                        "(setup.py's COMPILED modules built by mypyc; targets named ...-mypyc)")
    p.add_argument("--entries", type=int, default=10000)
    p.add_argument("--memory", action="store_true",
                   help="also measure memory (bench/memory.py): idle client connections "
                        "and a 5,000-entry search to a slow reader")
    p.add_argument("--memory-connections", type=int, default=10000,
                   help="idle client connections for --memory (default 10,000)")
    p.add_argument("--no-install", action="store_true",
                   help="do not install missing tools (ldclt, haproxy, matplotlib)")
    p.add_argument("--out", help="output directory (default bench/results)")
    p.add_argument("--replot", metavar="JSON",
                   help="only redraw the PNG (next to JSON) from an earlier run's JSON")
    a = p.parse_args(argv)
    if a.replot:
        with open(a.replot) as f:
            res = json.load(f)
        names = list(dict.fromkeys(r["target"] for r in res["rows"]))
        png = os.path.splitext(a.replot)[0] + ".png"
        plot(res["rows"], names, res["meta"]["workloads"], png)
        log("wrote", png)
        return
    reps = a.reps or (1 if a.quick else 3)
    duration = a.duration or (1.0 if a.quick else 4.0)
    targets = a.targets.split(",") if a.targets else None
    workloads = a.workloads.split(",") if a.workloads else None
    for t in targets or []:
        if t not in ALL_TARGETS:
            p.error("unknown target %r" % t)
    for w in workloads or []:
        if w not in WORKLOADS:
            p.error("unknown workload %r" % w)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that
    # ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, on_term)
    random.seed(1)
    run(targets, workloads, reps, duration, a.entries, tuple(a.ldaproute_mode or ["session"]),
        install=not a.no_install, outdir=a.out,
        memory_connections=a.memory_connections if a.memory else None, compiled=a.compiled)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted; every started process was stopped")
        sys.exit(130)
