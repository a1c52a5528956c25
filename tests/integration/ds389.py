"""
Throwaway 389 Directory Server instances on loopback, without systemd, for
tests that need a second directory implementation (its 2 MiB request
limit, C{nsslapd-maxbersize}, is the case of issue #14 item 5).

Needs Debian's C{389-ds-base} and C{python3-lib389}
(C{apt-get install -y --no-install-recommends 389-ds-base python3-lib389});
missing, it is an error (L{DS389NotFound}), never a skip, as for slapd.

How (Debian 12, 389-ds-base 2.3; the same steps as the project's reference
script): lib389 reads its paths from C{$PREFIX/share/dirsrv/inf/defaults.inf}
when C{PREFIX} is set.  We build such a prefix under the instance directory
(a copy of C{/usr/share/dirsrv} and C{/etc/dirsrv/{config,schema}}, with
C{with_systemd = 0} and every state path moved under the prefix), so that
C{dscreate from-file} neither calls systemctl nor writes to /etc, /var or
/run.  The server, C{/usr/sbin/ns-slapd}, starts as root and drops to the
C{dirsrv} user, so every directory on the way must be traversable by it:
the instance lives in a fresh C{/tmp/ldaproute-389-*} (mode 755), not in
pytest's private temporary directory.  Creating an instance takes about
ten seconds; use it module-wide.

Only plain LDAP is used (C{url}); the instance's data is dscreate's sample
entries under C{dc=example,dc=com} (ou=people, ou=groups, ...).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from tests.slapd import freePort

__all__ = ["DS389", "DS389Error", "DS389NotFound"]

_PACKAGES = "389-ds-base python3-lib389"
_NS_SLAPD = "/usr/sbin/ns-slapd"
_DSCREATE = "/usr/sbin/dscreate"


class DS389Error(RuntimeError):
    """The instance could not be created, started or stopped; the message says why."""


class DS389NotFound(DS389Error):
    """389 DS is not installed: fail, do not skip."""


class DS389:
    """
    One 389 DS instance.  L{start} creates it the first time; L{kill}
    (SIGKILL) and L{stop} keep its database and port.

    @ivar directory: everything the instance owns lives under it.
    """

    suffix = "dc=example,dc=com"
    rootDN = "cn=Directory Manager"
    rootPW = "Secret123!"

    def __init__(self, name: str | None = None, startTimeout: float = 60.0) -> None:
        """
        @param name: the instance name (default from its port: instances
            share C{/dev/shm} names, so two must not have the same one).
        """
        for program in (_NS_SLAPD, _DSCREATE):
            if not os.access(program, os.X_OK):
                raise DS389NotFound(f"{program} not found; install the Debian packages {_PACKAGES}")
        self.port = freePort()
        self.name = name or f"t{self.port}"
        self.startTimeout = startTimeout
        self.directory = tempfile.mkdtemp(prefix="ldaproute-389-")
        os.chmod(self.directory, 0o755)
        self._root = os.path.join(self.directory, "root")
        self._securePort = freePort()
        self._created = False

    # -- names ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def peopleDN(self) -> str:
        return "ou=people," + self.suffix

    @property
    def _etc(self) -> str:
        return os.path.join(self._root, "etc", "dirsrv", f"slapd-{self.name}")

    @property
    def _pidFile(self) -> str:
        return os.path.join(self._root, "run", "dirsrv", f"slapd-{self.name}.pid")

    @property
    def logDirectory(self) -> str:
        return os.path.join(self._root, "var", "log", "dirsrv", f"slapd-{self.name}")

    def errorLines(self) -> list[str]:
        """The instance's C{errors} log (e.g. C{Incoming BER Element was N bytes})."""
        try:
            with open(os.path.join(self.logDirectory, "errors"), errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    @property
    def pid(self) -> int | None:
        try:
            with open(self._pidFile) as f:
                pid = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid and _alive(pid) else None

    # -- creation --------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(os.environ, PREFIX=self._root, INSTALL_PREFIX=self._root)

    def _prepareRoot(self) -> None:
        root = self._root
        for sub in ("share", "etc/dirsrv", "tmp", "etc/default"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        os.chmod(root, 0o755)
        shutil.copytree("/usr/share/dirsrv", os.path.join(root, "share", "dirsrv"), symlinks=True)
        for sub in ("config", "schema"):
            shutil.copytree(f"/etc/dirsrv/{sub}", os.path.join(root, "etc", "dirsrv", sub), symlinks=True)
        keep = {"bin_dir", "sbin_dir", "lib_dir", "plugin_dir", "prefix"}
        out = []
        with open("/usr/share/dirsrv/inf/defaults.inf") as f:
            for line in f:
                match = re.match(r"^(\w+)\s*=\s*(.*)$", line)
                if match:
                    key, value = match.groups()
                    if key == "with_systemd":
                        value = "0"
                    elif key == "with_selinux":
                        value = "no"
                    elif key == "prefix":
                        value = root
                    elif key == "data_dir":
                        value = root + "/share"
                    elif key == "system_schema_dir":
                        value = root + "/share/dirsrv/schema"
                    elif key not in keep and value.startswith("/"):
                        value = root + value
                    line = f"{key} = {value}\n"
                out.append(line)
        with open(os.path.join(root, "share", "dirsrv", "inf", "defaults.inf"), "w") as f:
            f.writelines(out)
        # loopback only, from the first start during dscreate on
        template = os.path.join(root, "share", "dirsrv", "data", "template-dse.ldif")
        with open(template) as f:
            text = f.read()
        text = text.replace(
            "nsslapd-port: %ds_port%\n",
            "nsslapd-port: %ds_port%\nnsslapd-listenhost: 127.0.0.1\nnsslapd-securelistenhost: 127.0.0.1\n",
        )
        if "nsslapd-listenhost: 127.0.0.1" not in text:
            raise DS389Error(f"cannot restrict {template} to loopback")
        with open(template, "w") as f:
            f.write(text)
        # dscreate makes missing parents 770 root: the dirsrv user could not traverse them
        for sub in ("run", "run/dirsrv", "run/lock", "run/lock/dirsrv", "var", "var/log", "var/log/dirsrv",
                    "var/lib", "var/lib/dirsrv", "dev", "dev/shm"):  # fmt: skip
            path = os.path.join(root, sub)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)

    def _create(self) -> None:
        self._prepareRoot()
        inf = os.path.join(self.directory, f"{self.name}.inf")
        with open(inf, "w") as f:
            f.write(
                "[general]\nfull_machine_name = localhost\nstart = False\nsystemd = False\n"
                "selinux = False\nstrict_host_checking = False\n\n"
                f"[slapd]\ninstance_name = {self.name}\nport = {self.port}\nsecure_port = {self._securePort}\n"
                f"root_dn = {self.rootDN}\nroot_password = {self.rootPW}\nself_sign_cert = True\n"
                "user = dirsrv\ngroup = dirsrv\n\n"
                f"[backend-userroot]\nsample_entries = yes\nsuffix = {self.suffix}\n"
            )
        os.chmod(inf, 0o600)
        result = subprocess.run([_DSCREATE, "from-file", inf], env=self._env(), capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise DS389Error(f"dscreate failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self._created = True

    # -- process -----------------------------------------------------------------

    def start(self) -> None:
        """Create (the first time) and start the instance; wait until it answers."""
        if not self._created:
            self._create()
        if self.pid is not None:
            raise DS389Error(f"389 DS {self.name} already running (pid {self.pid})")
        for sub in ("run/dirsrv", "run/lock/dirsrv", f"run/lock/dirsrv/slapd-{self.name}"):
            path = os.path.join(self._root, sub)
            os.makedirs(path, exist_ok=True)
            shutil.chown(path, "dirsrv", "dirsrv")
        out = open(os.path.join(self.directory, f"{self.name}.ns-slapd.out"), "ab")
        try:
            # ns-slapd daemonises itself and writes the pid file
            subprocess.run([_NS_SLAPD, "-D", self._etc, "-i", self._pidFile], stdout=out, stderr=subprocess.STDOUT,
                           env=self._env(), timeout=120, check=False)  # fmt: skip
        finally:
            out.close()
        deadline = time.monotonic() + self.startTimeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                ["ldapsearch", "-x", "-H", self.url, "-s", "base", "-b", "", "-o", "nettimeout=1", "objectClass=*"],
                capture_output=True, env=dict(os.environ, LDAPCONF=os.devnull), timeout=30,
            )  # fmt: skip
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise DS389Error(f"389 DS {self.name} did not answer on {self.url}:\n" + "\n".join(self.errorLines()[-20:]))

    def kill(self) -> None:
        """SIGKILL the server and wait until it is gone (it refuses to start while its old pid lives)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _waitGone(pid, 30.0)

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _waitGone(pid, 30.0):
                os.kill(pid, signal.SIGKILL)
                _waitGone(pid, 5.0)
        try:
            os.unlink(self._pidFile)
        except FileNotFoundError:
            pass

    def clean(self) -> None:
        """Stop and remove everything the instance owns."""
        self.stop()
        try:
            os.unlink(f"/dev/shm/sem.slapd-{self.name}.stats")
        except FileNotFoundError:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _waitGone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    return False
