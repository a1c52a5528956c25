"""
Runs the coverage-guided fuzz target tests/fuzz/fuzz_frontend.py (atheris)
for a bounded number of executions in the default suite, and for longer on
demand:

    pytest -m slow tests/test_fuzz_atheris.py          # 5 minutes
    LDAPROUTE_FUZZ_SECONDS=600 pytest tests/test_fuzz_atheris.py

A crash leaves its input in the test's temporary directory (crash-*), and
the test fails with libFuzzer's report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "fuzz" / "fuzz_frontend.py"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def runFuzzer(tmp_path: Path, *limits: str) -> int:
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is not installed: pip install atheris (the fuzz test needs it)")
    output = tmp_path / "new-inputs"
    output.mkdir()
    result = subprocess.run(
        [sys.executable, str(TARGET), str(output), str(CORPUS), f"-artifact_prefix={tmp_path}/", *limits],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=3600,
    )
    report = result.stdout.decode("utf-8", "replace")
    assert result.returncode == 0, f"the fuzzer found a failure:\n{report[-6000:]}"
    match = re.search(r"Done (\d+) runs", report)
    assert match, report[-3000:]
    runs = int(match.group(1))
    print(f"\natheris: {runs} executions of the frontend fuzz target")
    return runs


def test_seedCorpusIsRecordedTraffic() -> None:
    seeds = sorted(CORPUS.iterdir())
    assert len(seeds) >= 10
    assert all(seed.read_bytes()[:1] == b"\x30" for seed in seeds)


def test_fuzzFrontendShort(tmp_path: Path) -> None:
    seconds = os.environ.get("LDAPROUTE_FUZZ_SECONDS")
    limits = [f"-max_total_time={seconds}"] if seconds else ["-runs=4000", "-max_total_time=60"]
    assert runFuzzer(tmp_path, *limits) > 0


@pytest.mark.slow
def test_fuzzFrontendLong(tmp_path: Path) -> None:
    assert runFuzzer(tmp_path, "-max_total_time=300") > 0
