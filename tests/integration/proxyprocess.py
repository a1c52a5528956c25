"""
The proxy as a child process (C{python -m twisted ldaproute -c FILE}) for
integration tests that drive it with real clients and real sockets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ProxyProcess:
    """
    One proxy process; C{ports} are the TCP ports it must accept on before
    it counts as started.  Its log (JSON lines) is in C{logPath}.
    """

    def __init__(self, directory: str, configText: str, ports: list[int]) -> None:
        self.directory = directory
        self.configPath = os.path.join(directory, "routes.ini")
        self.logPath = os.path.join(directory, "proxy.log")
        with open(self.configPath, "w") as f:
            f.write(configText)
        self.ports = ports
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ProxyProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.logPath, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "--log-format=json",
                "ldaproute",
                "-c",
                self.configPath,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the proxy exited with {self.process.returncode}:\n{self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the proxy did not listen on {port}:\n{self.log()}") from None
                    time.sleep(0.05)
        # let the proxy see the probe connections close, so that tests
        # counting connections start from zero
        time.sleep(0.3)
        return self

    def log(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
