"""The README's run command: ``--demo`` serves ldapsearch at once."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.integration.proxy import ROOT, waitForPort
from tests.slapd import freePort


def test_demoServesSearchAndBind(tmp_path: object) -> None:
    port = freePort()
    process = subprocess.Popen(
        [sys.executable, "-m", "ldaproute", "--demo", "--demo-listen", f"tcp:{port}:interface=127.0.0.1"],
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
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert b"Traceback" not in output, output.decode()


def test_demoRemovesItsSocketDirectory(tmp_path: object) -> None:
    """The demo's temporary UNIX-socket directory is gone once the proxy stops."""
    import glob
    import tempfile

    before = set(glob.glob(f"{tempfile.gettempdir()}/ldaproute-demo-*"))
    port = freePort()
    process = subprocess.Popen(
        [sys.executable, "-m", "ldaproute", "--demo", "--demo-listen", f"tcp:{port}:interface=127.0.0.1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        waitForPort(port, process)
        assert set(glob.glob(f"{tempfile.gettempdir()}/ldaproute-demo-*")) - before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    assert set(glob.glob(f"{tempfile.gettempdir()}/ldaproute-demo-*")) - before == set()
