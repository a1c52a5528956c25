"""
The benchmark's short smoke form, so CI notices when bench/ stops working:
real slapd, direct vs portforward vs ldaproute (session and shared), about a
second each.  No timing is asserted: the bench reports ratios, tests do not.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any


def loadSmoke() -> Any:
    path = pathlib.Path(__file__).parents[1] / "bench" / "smoke.py"
    spec = importlib.util.spec_from_file_location("bench_smoke", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchSmoke() -> None:
    result = loadSmoke().smoke(ldaproute_modes=("session", "shared"))
    assert result["skipped"] == {}, result["skipped"]
    targets = {row["target"] for row in result["rows"]}
    assert {"direct", "portforward", "ldaproute", "ldaproute-shared"} <= targets
    for row in result["rows"]:
        assert row["errors"] == 0 and row["failed_runs"] == 0, row
        assert row["ops_s"] and row["ops_s"] > 0, row
