"""
A real redis-server for tests: on 127.0.0.1, a free port, no persistence
(no RDB snapshot, no AOF), its files in a throwaway directory; stopped (or
killed and restarted on the same port, for outage tests) by the test.

Debian's package ``redis-server``; the suite fails, rather than skips, when
it is missing (tools/test-all.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.slapd import freePort


def redisServerProgram() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if path is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server); the fleet tests need it")
    return path


class RedisServer:
    """One redis-server process; L{kill} and L{start} again keep the port."""

    def __init__(self, directory: str, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or freePort()
        self.process: subprocess.Popen[bytes] | None = None
        self.logPath = os.path.join(directory, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(
            [redisServerProgram(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory, "--logfile", self.logPath, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING on {self.port} in {timeout}s: {self.log()}")

    def command(self, *words: str) -> bytes:
        """Send one command (RESP), return the raw first reply chunk."""
        request = f"*{len(words)}\r\n".encode() + b"".join(
            f"${len(w.encode())}\r\n".encode() + w.encode() + b"\r\n" for w in words
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(request)
            return sock.recv(65536)

    def kill(self) -> None:
        """SIGKILL: the outage a crash makes (no goodbye on the connections)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"
