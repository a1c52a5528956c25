"""
Run ldaproute as a subprocess (C{python -m twisted ldaproute -c FILE}) for
integration tests, on a free loopback port, with its JSON log kept for
assertions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from tests.slapd import freePort

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Proxy:
    """One ldaproute process serving C{configText} (its C{listen} is added)."""

    def __init__(self, directory: str, configText: str) -> None:
        self.port = freePort()
        self.directory = directory
        self.configPath = os.path.join(directory, "routes.ini")
        self.logPath = os.path.join(directory, "proxy.log")
        with open(self.configPath, "w") as f:
            f.write(f"[ldaproute]\nlisten = tcp:{self.port}:interface=127.0.0.1\n{configText}")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.logPath, "wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "twisted", "--log-format=json", "--log-file=-",
             "ldaproute", "-c", self.configPath],
            cwd=_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ldaproute exited: {open(self.logPath).read()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"ldaproute did not listen on {self.port}: {open(self.logPath).read()[-3000:]}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self._log.close()

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events written so far."""
        out = []
        with open(self.logPath, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        return out

    def healthEvents(self, backend: str) -> list[tuple[float, str]]:
        """C{(time, "up"|"down")} of each state change of C{backend}."""
        return [
            (e["log_time"], e["health"])
            for e in self.events()
            if e.get("health") is not None and e.get("backend") == backend
        ]
