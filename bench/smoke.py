"""The shortest form of the bench, for CI: ``smoke() -> dict``.

Starts slapd (10,000 users), then direct, Twisted portforward and ldaproute
(skipped, with the reason in result["skipped"], when `python -m twisted
ldaproute` does not run yet), each for about 2-3 seconds: search1 (1 client,
p50/p99) and search16 (ldclt, 16 threads; dropped when ldclt is missing).
Nothing is installed and nothing is written to bench/results.

Wiring into pytest (tests/test_bench_smoke.py)::

    import importlib.util, pathlib
    def test_bench_smoke():
        path = pathlib.Path(__file__).parents[1] / "bench" / "smoke.py"
        spec = importlib.util.spec_from_file_location("bench_smoke", path)
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        res = mod.smoke()
        for row in res["rows"]:
            assert row["errors"] == 0 and row["failed_runs"] == 0, row
            assert row["ops_s"] and row["ops_s"] > 0, row

Returned dict: {"meta": {...}, "records": [per-run dicts], "rows": [median rows:
workload, target, ops_s, ratio, proxy_cpu_us_op, slapd_cpu_us_op, p50_us,
p99_us, added_p50_us, errors, failed_runs, notes], "skipped": {target: reason}}.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as _run  # noqa: E402


def smoke(targets=("direct", "portforward", "ldaproute"), duration=1.0, install=False,
          ldaproute_modes=("session",)):
    return _run.run(targets=list(targets), workloads=["search1", "search16"], reps=1,
                    duration=duration, entries=10000, ldaproute_modes=ldaproute_modes,
                    install=install, write=False)


if __name__ == "__main__":
    import json
    res = smoke()
    print(json.dumps({"rows": res["rows"], "skipped": res["skipped"]}, indent=1))
