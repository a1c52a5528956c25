"""The README's run command: ``--demo`` serves ldapsearch at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from tests.integration.proxy import ROOT, waitForPort
from tests.slapd import freePort


def test_demoServesSearchAndBind(tmp_path: object) -> None:
    port, metrics = freePort(), freePort()
    process = subprocess.Popen(
        [sys.executable, "-m", "ldaproute", "--demo", "--demo-listen", f"tcp:{port}:interface=127.0.0.1",
         "--demo-metrics", f"tcp:{metrics}:interface=127.0.0.1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        waitForPort(port, process)
        url = f"ldap://127.0.0.1:{port}"
        search = subprocess.run(
            ["ldapsearch", "-x", "-LLL", "-H", url, "-b", "dc=example,dc=com", "(objectClass=person)", "uid"],
            capture_output=True, text=True, timeout=30,
        )
        assert search.returncode == 0, search.stderr
        assert sorted(line for line in search.stdout.splitlines() if line.startswith("uid:"))[:2] == [
            "uid: alice", "uid: bob"
        ]
        whoami = subprocess.run(
            ["ldapwhoami", "-x", "-H", url, "-D", "uid=alice,ou=people,dc=example,dc=com", "-w", "alicepass"],
            capture_output=True, text=True, timeout=30,
        )
        assert whoami.stdout.strip() == "dn:uid=alice,ou=people,dc=example,dc=com", whoami.stderr
        # the metrics site: status page, metrics, health
        waitForPort(metrics, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/", timeout=10) as response:
            page = response.read().decode()
        assert "<title>ldaproute status</title>" in page and "<td>demo</td>" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
            assert b"ldaproute_operations_total" in response.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=10) as response:
            assert json.load(response)["status"] == "ready"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert b"Traceback" not in output, output.decode()
    text = output.decode()
    assert f"Try: ldapsearch -x -H ldap://127.0.0.1:{port} -b dc=example,dc=com '(uid=alice)'" in text
    assert f"status page http://127.0.0.1:{metrics}/ ; metrics http://127.0.0.1:{metrics}/metrics" in text


def test_demoRemovesItsSocketDirectory(tmp_path: object) -> None:
    """
    The demo's temporary UNIX-socket directory is gone once the proxy stops
    (found by name in its log: other demos may run on this machine at once).
    """
    import os
    import re
    import time

    port = freePort()
    logPath = os.path.join(str(tmp_path), "demo.log")
    with open(logPath, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ldaproute", "--demo", "--demo-listen", f"tcp:{port}:interface=127.0.0.1",
             "--demo-metrics", f"tcp:{freePort()}:interface=127.0.0.1"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        waitForPort(port, process)
        found = None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:  # the directory may listen just after the proxy
            with open(logPath) as f:
                found = re.search(r"listening on unix:(\S+)/directory\.sock", f.read())
            time.sleep(0.05)
        assert found is not None, "the demo directory never said where it listens"
        directory = found.group(1)
        assert os.path.isdir(directory)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    assert not os.path.exists(directory)
