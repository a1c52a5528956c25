"""
The proxy as a real process for integration tests: ``python -m ldaproute -c``
on a generated routes.ini, listening on loopback, stopped with SIGTERM.

It runs from this checkout (the working directory is the repository root, so
``twisted/plugins`` here is found), so tests exercise the code under test, not
an older installed copy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from typing import Any

from tests.slapd import freePort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def waitForPort(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


class ProxyProcess:
    """
    One ldaproute process.  C{config} is routes.ini text in which C{{port}}
    stands for the listening port chosen here.
    """

    def __init__(self, directory: str, config: str, port: int | None = None, command: list[str] | None = None) -> None:
        self.directory = directory
        self.port = port or freePort()
        self.configPath = os.path.join(directory, "routes.ini")
        with open(self.configPath, "w") as f:
            f.write(config.replace("{port}", str(self.port)))
        self.logPath = os.path.join(directory, "ldaproute.log")
        self.command = command or [sys.executable, "-m", "ldaproute"]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> ProxyProcess:
        log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            [*self.command, "-c", self.configPath],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            waitForPort(self.port, self.process)
        except RuntimeError:
            raise RuntimeError(f"{self.command} did not start:\n{self.log()}") from None
        return self

    def stop(self, timeout: float = 15.0) -> int:
        """
        SIGTERM, wait; the exit status, 0 for a clean stop.  (twistd ends a
        process stopped by a signal by re-raising that signal, so a clean
        SIGTERM stop shows as -15 unless the service exits by itself.)
        """
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"ldaproute ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        return 0 if self.process.returncode == -signal.SIGTERM else self.process.returncode

    def log(self) -> str:
        with open(self.logPath, errors="replace") as f:
            return f.read()


def singleBackendConfig(backendURL: str, extra: str = "") -> str:
    return (
        "[ldaproute]\n"
        "listen = tcp:{port}:interface=127.0.0.1\n"
        "; the tests bind with passwords over loopback cleartext\n"
        "require_tls_for_simple_bind = off\n"
        f"{extra}"
        "[backend:slapd]\n"
        f"url = {backendURL}\n"
        "[pool:main]\n"
        "backends = slapd\n"
        "[route:all]\n"
        "pool = main\n"
    )


class Proxy(ProxyProcess):
    """
    An ldaproute process whose log is JSON lines (``twist --log-format=json``),
    for tests that read structured events; C{configText} gets the
    C{[ldaproute] listen} line added.
    """

    def __init__(self, directory: str, configText: str, globalKeys: str = "") -> None:
        """@param globalKeys: more C{[ldaproute]} lines."""
        super().__init__(
            directory,
            "[ldaproute]\nlisten = tcp:{port}:interface=127.0.0.1\n"
            "require_tls_for_simple_bind = off  ; cleartext test binds on loopback\n" + globalKeys + configText,
            command=[sys.executable, "-m", "twisted", "--log-format=json", "--log-file=-", "ldaproute"],
        )

    def start(self) -> ProxyProcess:  # type: ignore[override]
        return super().start()

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events written so far."""
        out = []
        for line in self.log().splitlines():
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
