"""
A throwaway 389 Directory Server instance on loopback, without systemd, for
integration tests (the project's own version of
../shared/reference/ds389-fixture.sh).

Needs Debian's C{389-ds-base} and C{python3-lib389} (tools/test-all.sh
installs them) and root (ns-slapd starts as root and drops to the dirsrv
user).  Nothing is skipped: when 389 is missing or does not start, the
fixture raises L{DS389Error} with what it saw, and the test fails.

How: lib389 reads its paths from C{$PREFIX/share/dirsrv/inf/defaults.inf};
we build such a prefix under the instance directory (copies of
/usr/share/dirsrv and /etc/dirsrv/{config,schema}, and a defaults.inf with
C{with_systemd = 0} and every state path moved under the prefix), so that
C{dscreate from-file} neither calls systemctl nor writes to /etc, /var or
/run; then C{/usr/sbin/ns-slapd -D ETC -i PIDFILE}.

L{DS389.populate} adds what the shared-mode tests need: C{USERS} users
C{uid=userI,ou=people,dc=example,dc=com} (password C{passI},
C{employeeNumber: I}), the proxy's service account
C{cn=ldaproute,ou=system,dc=example,dc=com} and the ACIs README.rst's
shared-mode section documents: the C{proxy} right for the service account
on the suffix, the root DSE and cn=schema.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

from tests.slapd import freePort

SUFFIX = "dc=example,dc=com"
PEOPLE = f"ou=people,{SUFFIX}"
ROOT_DN = "cn=Directory Manager"
ROOT_PW = "Secret123!"
SERVICE_DN = f"cn=ldaproute,ou=system,{SUFFIX}"
SERVICE_PW = "ldaproute-secret"
DEBIAN_PACKAGES = "389-ds-base python3-lib389"

#: the rights README.rst's "Backend setup (389 Directory Server)" gives
PROXY_ACI = f'(targetattr="*")(version 3.0; acl "ldaproute proxy"; allow (proxy) userdn="ldap:///{SERVICE_DN}";)'
#: what the tests compare through the proxy and directly: bound users read
#: the people, each its own employeeNumber only; anonymous clients nothing
PEOPLE_ACIS = [
    '(targetattr="uid || cn || sn || objectClass")(version 3.0; acl "people read"; '
    'allow (read, search, compare) userdn="ldap:///all";)',
    '(targetattr="employeeNumber")(version 3.0; acl "own number"; allow (read, search, compare) userdn="ldap:///self";)',
]


class DS389Error(AssertionError):
    """389 Directory Server is missing or did not start (a failure, never a skip)."""


class DS389:
    """One instance under C{directory}; see the module docstring."""

    def __init__(self, directory: str, name: str = "ds1", startTimeout: float = 60.0) -> None:
        for program in ("/usr/sbin/dscreate", "/usr/sbin/ns-slapd"):
            if not os.path.exists(program):
                raise DS389Error(f"{program} not found: apt-get install --no-install-recommends {DEBIAN_PACKAGES}")
        self.directory = os.path.abspath(directory)
        parent = os.path.dirname(self.directory)
        while parent != "/":
            if not os.stat(parent).st_mode & 0o001:
                raise DS389Error(
                    f"{parent} is not searchable by others: the dirsrv user could not reach {self.directory} "
                    "(use a directory such as tempfile.mkdtemp(dir='/tmp'))"
                )
            parent = os.path.dirname(parent)
        self.name = name
        self.root = os.path.join(self.directory, "root")
        self.port = freePort()
        self.ldapsPort = freePort()
        while self.ldapsPort == self.port:
            self.ldapsPort = freePort()
        self.startTimeout = startTimeout
        self.etc = os.path.join(self.root, "etc", "dirsrv", f"slapd-{name}")
        self.pidFile = os.path.join(self.root, "run", "dirsrv", f"slapd-{name}.pid")
        self.logDir = os.path.join(self.root, "var", "log", "dirsrv", f"slapd-{name}")
        self._created = False

    # --- names ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldapsURL(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldapsPort}"

    @property
    def caFile(self) -> str:
        """The instance's self-signed CA (its certificate names DNS:localhost)."""
        return os.path.join(self.etc, "Self-Signed-CA.pem")

    @staticmethod
    def userDN(i: int) -> str:
        return f"uid=user{i},{PEOPLE}"

    @staticmethod
    def userPassword(i: int) -> str:
        return f"pass{i}"

    # --- life cycle -----------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(os.environ, PREFIX=self.root, INSTALL_PREFIX=self.root)

    def _prepareRoot(self) -> None:
        root = self.root
        os.makedirs(root, exist_ok=True)
        os.chmod(self.directory, 0o755)
        os.chmod(root, 0o755)
        for d in ("share", "etc/dirsrv", "tmp", "etc/default"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copytree("/usr/share/dirsrv", os.path.join(root, "share", "dirsrv"), symlinks=True)
        for d in ("config", "schema"):
            shutil.copytree(f"/etc/dirsrv/{d}", os.path.join(root, "etc", "dirsrv", d), symlinks=True)
        keep = {"bin_dir", "sbin_dir", "lib_dir", "plugin_dir", "prefix"}
        out = []
        with open("/usr/share/dirsrv/inf/defaults.inf") as f:
            for line in f:
                m = re.match(r"^(\w+)\s*=\s*(.*)$", line)
                if m:
                    key, value = m.groups()
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
        # loopback only from the first start on
        template = os.path.join(root, "share", "dirsrv", "data", "template-dse.ldif")
        with open(template) as f:
            text = f.read()
        text, count = re.subn(
            r"^nsslapd-port: %ds_port%$",
            "nsslapd-port: %ds_port%\nnsslapd-listenhost: 127.0.0.1\nnsslapd-securelistenhost: 127.0.0.1",
            text,
            flags=re.M,
        )
        if count != 1:
            raise DS389Error(f"{template}: no nsslapd-port line to pin to 127.0.0.1")
        with open(template, "w") as f:
            f.write(text)
        # dscreate makes missing parents 770 root-owned, which dirsrv cannot traverse
        for d in ("run", "run/dirsrv", "run/lock", "run/lock/dirsrv", "var", "var/log", "var/log/dirsrv",
                  "var/lib", "var/lib/dirsrv", "dev", "dev/shm"):
            path = os.path.join(root, d)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)

    def _create(self) -> None:
        self._prepareRoot()
        inf = os.path.join(self.directory, f"{self.name}.inf")
        with open(inf, "w") as f:
            f.write(
                "[general]\nfull_machine_name = localhost\nstart = False\nsystemd = False\nselinux = False\n"
                "strict_host_checking = False\n\n"
                f"[slapd]\ninstance_name = {self.name}\nport = {self.port}\nsecure_port = {self.ldapsPort}\n"
                f"root_dn = {ROOT_DN}\nroot_password = {ROOT_PW}\nself_sign_cert = True\nuser = dirsrv\ngroup = dirsrv\n\n"
                f"[backend-userroot]\nsample_entries = yes\nsuffix = {SUFFIX}\n"
            )
        os.chmod(inf, 0o600)
        result = subprocess.run(
            ["/usr/sbin/dscreate", "from-file", inf], env=self._env(), capture_output=True, text=True, timeout=180
        )
        if result.returncode != 0:
            raise DS389Error(f"dscreate failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        self._created = True

    def start(self) -> None:
        if not self._created:
            self._create()
        lock = os.path.join(self.root, "run", "lock", "dirsrv", f"slapd-{self.name}")
        os.makedirs(lock, exist_ok=True)
        for path in (os.path.dirname(self.pidFile), os.path.dirname(lock), lock):
            shutil.chown(path, "dirsrv", "dirsrv")
        out = os.path.join(self.directory, f"{self.name}.ns-slapd.out")
        with open(out, "ab") as log:
            # ns-slapd daemonises itself and writes the pid file
            code = subprocess.call(["/usr/sbin/ns-slapd", "-D", self.etc, "-i", self.pidFile], stdout=log, stderr=log)
        if code != 0:
            raise DS389Error(f"ns-slapd exited {code}: {self._tail()}")
        deadline = time.monotonic() + self.startTimeout
        while not self._answers():
            if time.monotonic() > deadline:
                raise DS389Error(f"389 Directory Server did not answer on {self.url}: {self._tail()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                # an anonymous root DSE read: the server is up when it answers
                s.sendall(bytes.fromhex("3025020101632004000a01000a0100020100020100010100870b6f626a656374636c6173733000"))
                s.settimeout(2)
                return s.recv(1)[:1] == b"\x30"
        except OSError:
            return False

    def errorLines(self) -> list[str]:
        """The instance's C{errors} log (e.g. C{Incoming BER Element was N bytes})."""
        try:
            with open(os.path.join(self.logDir, "errors"), errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def _tail(self) -> str:
        lines = self.errorLines()
        return "\n".join(lines[-20:]) if lines else "(no errors log)"

    @property
    def pid(self) -> int | None:
        try:
            with open(self.pidFile) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        try:
            os.unlink(self.pidFile)
        except OSError:
            pass

    # --- data -------------------------------------------------------------

    def connect(self) -> Any:
        """An ldap3 connection bound as Directory Manager."""
        from ldap3 import Connection, Server

        return Connection(Server(self.url, get_info="NO_INFO"), ROOT_DN, ROOT_PW, auto_bind=True, check_names=False)

    def populate(self, users: int) -> None:
        from ldap3 import MODIFY_ADD

        admin = self.connect()

        def check(what: str) -> None:
            if admin.result["result"] not in (0, 68):  # 68: already exists
                raise DS389Error(f"389: {what}: {admin.result}")

        admin.add(f"ou=system,{SUFFIX}", ["top", "organizationalUnit"], {"ou": "system"})
        check("ou=system")
        admin.add(SERVICE_DN, ["top", "person"], {"cn": "ldaproute", "sn": "proxy", "userPassword": SERVICE_PW})
        check(SERVICE_DN)
        for i in range(users):
            admin.add(
                self.userDN(i),
                ["top", "person", "organizationalPerson", "inetOrgPerson"],
                {"uid": f"user{i}", "cn": f"User {i}", "sn": f"{i}", "employeeNumber": str(i), "userPassword": self.userPassword(i)},
            )
            check(self.userDN(i))
        for dn in (SUFFIX, "", "cn=schema"):
            admin.modify(dn, {"aci": [(MODIFY_ADD, [PROXY_ACI])]})
            check(f"proxy ACI on {dn!r}")
        admin.modify(PEOPLE, {"aci": [(MODIFY_ADD, PEOPLE_ACIS)]})
        check("people ACIs")
        admin.unbind()
