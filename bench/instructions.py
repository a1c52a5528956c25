"""Instructions per operation in the proxy process, counted by callgrind.

    python bench/instructions.py [--checkout DIR ...] [--mode session --mode shared]
                                 [--workloads search1,search16,bind8] [--ops 1500]

Timings on a small shared machine move by 10-20 % from run to run; the number
of instructions the proxy executes for a fixed load does not.  For each
checkout (default: this one), mode and workload this starts ldaproute under
``valgrind --tool=callgrind --instr-atstart=no`` in front of one real slapd,
warms it up, switches instrumentation on, drives a fixed number of
operations with the bench's own raw-socket clients, dumps the counters and
divides the instructions (``Ir``) by the operations.  Kernel work (system
calls) is not counted: ``bench/run.py`` measures that.  Use it to compare two
versions of the code in one run, e.g. the commit before a change
(``git worktree add /tmp/before HEAD~1``) with the working tree.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ldapclient  # noqa: E402
from slapd import PEOPLE, ROOTDN, ROOTPW, Slapd, free_port, wait_port  # noqa: E402

USERS = 2000


def config(port, slapdPort, mode, accessLog="off"):
    lines = ["[ldaproute]", "listen = tcp:%d:interface=127.0.0.1" % port,
             "require_tls_for_simple_bind = off", "access_log = %s" % ("off" if accessLog == "off" else "stdout")]
    if accessLog == "json":
        lines.append("log_format = json")
    if mode != "session":
        lines.append("mode = %s" % mode)
    lines += ["", "[backend:slapd]", "url = ldap://127.0.0.1:%d" % slapdPort, "",
              "[pool:main]", "backends = slapd"]
    if mode == "shared":
        lines += ["service_bind_dn = %s" % ROOTDN, "service_bind_password = %s" % ROOTPW]
    lines += ["", "[route:all]", "pool = main", ""]
    return "\n".join(lines)


def drive(port, workload, ops):
    bind = ldapclient.bind_request(1, "uid=user1," + PEOPLE, "pass1")
    if workload == "search1":
        r = ldapclient.run_sequential("127.0.0.1", port, ldapclient.exact_search_requests(PEOPLE, USERS),
                                      ldapclient.SEARCH_DONE, 600.0, ops, bind=bind)
    elif workload == "search16":
        r = ldapclient.run_concurrent("127.0.0.1", port,
                                      lambda k: ldapclient.exact_search_requests(PEOPLE, USERS, seed=k + 1),
                                      16, ldapclient.SEARCH_DONE, 600.0, ops)
    elif workload == "bind8":
        r = ldapclient.run_concurrent("127.0.0.1", port,
                                      lambda k: ldapclient.bind_requests(PEOPLE, USERS, seed=k + 1),
                                      8, ldapclient.BIND_DONE, 600.0, ops)
    else:
        raise SystemExit("unknown workload %r" % workload)
    if r["errors"]:
        raise RuntimeError("%s: %d errors" % (workload, r["errors"]))
    return r["ops"]


def totalIr(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + path)


def measure(checkout, mode, workload, ops, slapd, tmp, accessLog="off"):
    port = free_port()
    ini = os.path.join(tmp, "proxy.ini")
    with open(ini, "w") as f:
        f.write(config(port, slapd.port, mode, accessLog))
    out = os.path.join(tmp, "callgrind.%s.%s.%d" % (mode, workload, time.monotonic_ns()))
    env = dict(os.environ, PYTHONPATH=checkout, PYTHONHASHSEED="0")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out,
         sys.executable, "-m", "ldaproute", "-c", ini],
        cwd=checkout, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, timeout=300, proc=proc)
        drive(port, workload, max(50, ops // 10))  # warm-up: connections, caches
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        done = drive(port, workload, ops)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
    # "-d" wrote OUT.1: what ran between switching instrumentation on and the
    # dump; the file written at exit covers the rest and is not counted
    return totalIr(out + ".1") / done


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", action="append", help="repository root to measure (default: this one)")
    p.add_argument("--mode", action="append", choices=["session", "shared"])
    p.add_argument("--workloads", default="search1,search16")
    p.add_argument("--ops", type=int, default=1500)
    p.add_argument("--access-log", action="append", choices=["off", "on", "json"],
                   help="access_log setting(s) to measure (default off; on writes text lines to stdout, here "
                        "/dev/null; json the same with log_format = json)")
    a = p.parse_args()
    accessLogs = a.access_log or ["off"]
    checkouts = [os.path.abspath(c) for c in (a.checkout or [REPO])]
    modes = a.mode or ["session", "shared"]
    with tempfile.TemporaryDirectory(prefix="ldaproute-ir-") as tmp, Slapd(entries=USERS) as slapd:
        print("| checkout | mode | access_log | workload | instructions/op |")
        print("|---|---|---|---|---|")
        for workload in a.workloads.split(","):
            for mode in modes:
                for checkout in checkouts:
                    for accessLog in accessLogs:
                        ir = measure(checkout, mode, workload, a.ops, slapd, tmp, accessLog)
                        print("| %s | %s | %s | %s | %s |" % (checkout, mode, accessLog, workload, format(int(ir), ",")),
                              flush=True)


if __name__ == "__main__":
    main()
