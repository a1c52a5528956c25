"""What sharing the bind-throttle counts costs a bind (issue 17).

Runs a throwaway slapd, a redis-server (loopback, no persistence) and
ldaproute three ways, then times successful simple binds, one at a time on
one persistent connection (bench/ldapclient.run_sequential, the bind8
requests), alternating the variants for each repetition:

  - local:   throttle_store = local, one process (today's behaviour);
  - redis:   throttle_store = redis://..., one process: every bind asks
             Redis for the fleet's counts of its address and DN first;
  - workers: throttle_store = local, workers = 2: a bind on worker 1 asks
             worker 0 over the worker channel (one on worker 0 does not
             wait; connections are re-made until each worker has served).

Prints p50/p99 bind latency per variant (medians over repetitions) and
the difference to local.  Usage:

    python bench/fleet.py [--reps 3] [--duration 3]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ldapclient  # noqa: E402
from slapd import PEOPLE, Slapd, free_port, wait_port  # noqa: E402


def start_redis(directory):
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, proc=proc)
    return proc, port


def start_proxy(directory, slapd_url, extra):
    port = free_port()
    config = os.path.join(directory, "routes.ini")
    with open(config, "w") as f:
        f.write("[ldaproute]\nlisten = tcp:%d:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\n"
                "access_log = off\n%s[backend:slapd]\nurl = %s\n[pool:main]\nbackends = slapd\n"
                "[route:all]\npool = main\n" % (port, extra, slapd_url))
    proc = subprocess.Popen([sys.executable, "-m", "twisted", "ldaproute", "-c", config], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, proc=proc)
    time.sleep(1.5)  # the store connects, workers join
    return proc, port


def cpu_seconds(pid):
    """utime + stime of a process and its children that it waited for (/proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def group_cpu(pid):
    """CPU seconds of a process and its live children (the workers)."""
    total = cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    total += cpu_seconds(int(entry))
            except (OSError, ValueError):
                pass
    return total


def measure(proc, port, requests, duration):
    before = group_cpu(proc.pid)
    result = ldapclient.run_sequential("127.0.0.1", port, requests, ldapclient.BIND_DONE, duration, 200000)
    result["cpu_us"] = (group_cpu(proc.pid) - before) * 1e6 / max(1, result["ops"])
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="ldaproute-bench-fleet-")
    slapd = Slapd(entries=1000)
    slapd.start()
    redis, redis_port = start_redis(work)
    variants = {
        "local": "",
        "redis": "throttle_store = redis://127.0.0.1:%d/0\n" % redis_port,
        "workers": "workers = 2\nmetrics_per_worker = on\nmetrics = tcp:%d:interface=127.0.0.1\n" % free_port(),
    }
    procs = {}
    try:
        for name, extra in variants.items():
            directory = os.path.join(work, name)
            os.mkdir(directory)
            procs[name] = start_proxy(directory, slapd.url, extra)
        requests = ldapclient.bind_requests(PEOPLE, 1000)
        results = {name: [] for name in variants}
        for rep in range(args.reps):
            for name in variants:
                # several connections: with workers, the kernel picks the worker per connection
                runs = [measure(procs[name][0], procs[name][1], requests, args.duration / 4) for _ in range(4)]
                results[name].append((sorted(r["p50_us"] for r in runs)[len(runs) // 2],
                                      max(r["p99_us"] for r in runs),
                                      sum(r["errors"] for r in runs),
                                      sum(r["cpu_us"] * r["ops"] for r in runs) / sum(r["ops"] for r in runs)))
        base50 = sorted(r[0] for r in results["local"])[args.reps // 2]
        base99 = sorted(r[1] for r in results["local"])[args.reps // 2]
        print("variant   p50_us  p99_us  (p50 - local, p99 - local)  proxy CPU-us/bind  errors")
        for name, rows in results.items():
            p50 = sorted(r[0] for r in rows)[args.reps // 2]
            p99 = sorted(r[1] for r in rows)[args.reps // 2]
            cpu = sorted(r[3] for r in rows)[args.reps // 2]
            print("%-8s %7.0f %7.0f   (%+6.0f, %+6.0f)            %7.0f            %d"
                  % (name, p50, p99, p50 - base50, p99 - base99, cpu, sum(r[2] for r in rows)))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.terminate()
        redis.wait(10)
        slapd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
