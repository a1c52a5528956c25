# -*- test-case-name: tests.integration.test_ad -*-
"""
A throwaway Samba Active Directory domain controller for integration tests.

Owns provisioning (once per test run, into a temporary directory), cloning a
provisioned domain for a module that needs a pristine DC, starting samba
bound to one loopback address, and stopping it.  It installs nothing: when
the Samba AD packages are missing it raises L{SambaNotFound} naming them, so
CI fails loudly instead of skipping.

Samba's LDAP ports are fixed (389, 636, 3268, 3269), so instances are
isolated by address (127.0.0.2 by default; Linux routes all of 127/8 to lo).
The CLDAP port is configurable but defaults to 389 so that C{net ads lookup}
(which has no port option) can reach it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

#: Debian packages the fixture needs (install with --no-install-recommends).
PACKAGES = (
    "samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules "
    "winbind smbclient krb5-user ldb-tools ldap-utils"
)


class SambaError(RuntimeError):
    """Samba could not be provisioned or started."""


class SambaNotFound(SambaError):
    """The Samba AD DC packages are not installed."""


def _need(program: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(program)
    if found is None:
        raise SambaNotFound(
            f"{program} not found: install the Samba AD DC packages with "
            f"apt-get install --no-install-recommends {PACKAGES}"
        )
    return found


class SambaDC:
    """
    One Samba AD DC in C{directory}, listening on C{address}.

    @ivar users: how many extra users C{user0000..} the provisioned domain
        holds (for paged-results tests).
    """

    realm = "EXAMPLE.TEST"
    domain = "EXAMPLE"
    hostName = "dc1"
    adminPassword = "Adm1n!Passw0rd"

    def __init__(self, directory: str, address: str = "127.0.0.2", cldapPort: int = 389, users: int = 0) -> None:
        self.directory = os.path.abspath(directory)
        self.address = address
        self.cldapPort = cldapPort
        self.users = users
        self._process: subprocess.Popen[bytes] | None = None

    # --- names ------------------------------------------------------------

    @property
    def dnsDomain(self) -> str:
        return self.realm.lower()

    @property
    def baseDN(self) -> str:
        return ",".join(f"DC={part}" for part in self.dnsDomain.split("."))

    @property
    def adminDN(self) -> str:
        return f"CN=Administrator,CN=Users,{self.baseDN}"

    @property
    def adminPrincipal(self) -> str:
        return f"Administrator@{self.realm}"

    @property
    def confPath(self) -> str:
        return os.path.join(self.directory, "etc", "smb.conf")

    @property
    def samPath(self) -> str:
        return os.path.join(self.directory, "private", "sam.ldb")

    @property
    def url(self) -> str:
        return f"ldap://{self.address}"

    @property
    def caFile(self) -> str:
        return os.path.join(self.directory, "tls", "ca.pem")

    def userDN(self, i: int) -> str:
        return f"CN=user{i:04d},CN=Users,{self.baseDN}"

    # --- provisioning -----------------------------------------------------

    def provision(self) -> None:
        """A fresh domain in C{directory} (about 10 s), with test data."""
        samba_tool = _need("samba-tool")
        _need("samba")
        _need("ldbadd")
        if os.path.exists(self.directory):
            shutil.rmtree(self.directory)
        for sub in ("etc", "log", "run", "cache"):
            os.makedirs(os.path.join(self.directory, sub))
        log = os.path.join(self.directory, "log", "provision.log")
        with open(log, "wb") as out:
            code = subprocess.call(
                [
                    samba_tool, "domain", "provision", f"--targetdir={self.directory}",
                    f"--realm={self.realm}", f"--domain={self.domain}",
                    f"--adminpass={self.adminPassword}", "--server-role=dc", "--dns-backend=NONE",
                    "--use-rfc2307", f"--host-name={self.hostName}", f"--host-ip={self.address}",
                    f"--option=interfaces={self.address}/8", "--option=bind interfaces only=yes",
                ],
                stdout=out, stderr=subprocess.STDOUT, timeout=300,
            )
        if code != 0:
            raise SambaError(f"samba-tool domain provision failed ({code}):\n{_tail(log)}")
        self._writeConf()
        self._makeTLS()
        common = ["-H", self.samPath, "-s", self.confPath]
        self._run([samba_tool, "domain", "passwordsettings", "set", *common,
                   "--complexity=off", "--max-pwd-age=0", "--min-pwd-age=0"])
        self._run([samba_tool, "user", "add", "alice", "Alice!Passw0rd", *common, "--use-username-as-cn",
                   "--given-name=Alice", "--surname=Test", f"--mail-address=alice@{self.dnsDomain}"])
        if self.users:
            ldif = os.path.join(self.directory, "users.ldif")
            with open(ldif, "w") as f:
                for i in range(self.users):
                    f.write(
                        f"dn: {self.userDN(i)}\nobjectClass: user\nsAMAccountName: user{i:04d}\n"
                        f"userAccountControl: 514\n\n"
                    )
            self._run([_need("ldbadd"), "-H", self.samPath, f"--configfile={self.confPath}", "--nosync", ldif], timeout=600)

    def cloneFrom(self, source: SambaDC) -> None:
        """Copy a provisioned, stopped domain (about 0.2 s)."""
        if os.path.exists(self.directory):
            shutil.rmtree(self.directory)
        shutil.copytree(source.directory, self.directory, symlinks=True,
                        ignore=shutil.ignore_patterns("run", "log", "msg.lock", "msg.sock"))
        for sub in ("run", "log"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        self.users = source.users
        self._writeConf()
        if self.address != source.address:
            self._makeTLS()

    def _run(self, argv: list[str], timeout: float = 120) -> None:
        result = subprocess.run(argv, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise SambaError(f"{' '.join(argv[:3])} failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def _writeConf(self) -> None:
        d = self.directory
        text = f"""[global]
	netbios name = {self.hostName.upper()}
	realm = {self.realm}
	workgroup = {self.domain}
	server role = active directory domain controller
	server services = ldap, cldap, kdc
	interfaces = {self.address}/8
	bind interfaces only = yes
	cldap port = {self.cldapPort}
	ldap server require strong auth = no
	idmap_ldb:use rfc2307 = yes
	private dir = {d}/private
	lock directory = {d}
	state directory = {d}/state
	cache directory = {d}/cache
	pid directory = {d}/run
	ncalrpc dir = {d}/run/ncalrpc
	binddns dir = {d}/bind-dns
	winbindd socket directory = {d}/run/winbindd
	ntp signd socket directory = {d}/run/ntp_signd
	log file = {d}/log/log.%m
	tls enabled = yes
	tls keyfile = {d}/tls/server.key
	tls certfile = {d}/tls/server.pem
	tls cafile = {d}/tls/ca.pem

[sysvol]
	path = {d}/state/sysvol
	read only = No

[netlogon]
	path = {d}/state/sysvol/{self.dnsDomain}/scripts
	read only = No
"""
        with open(self.confPath, "w") as f:
            f.write(text)

    def _makeTLS(self) -> None:
        t = os.path.join(self.directory, "tls")
        os.makedirs(t, exist_ok=True)
        openssl = _need("openssl")
        host = f"{self.hostName}.{self.dnsDomain}"
        self._run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                   "-subj", "/CN=Samba AD test CA", "-keyout", f"{t}/ca.key", "-out", f"{t}/ca.pem"])
        self._run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
                   "-keyout", f"{t}/server.key", "-out", f"{t}/server.csr"])
        with open(f"{t}/ext.cnf", "w") as f:
            f.write(f"subjectAltName=DNS:{host},DNS:{self.dnsDomain},DNS:localhost,IP:{self.address}\n"
                    "extendedKeyUsage=serverAuth\n")
        self._run([openssl, "x509", "-req", "-in", f"{t}/server.csr", "-CA", f"{t}/ca.pem",
                   "-CAkey", f"{t}/ca.key", "-CAcreateserial", "-days", "3650",
                   "-extfile", f"{t}/ext.cnf", "-out", f"{t}/server.pem"])
        os.chmod(f"{t}/server.key", 0o600)
        os.chmod(f"{t}/ca.key", 0o600)

    # --- running ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def clientEnv(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LDAPTLS_CACERT"] = self.caFile
        env["LDAPTLS_REQCERT"] = "demand"
        env["LDAPNOINIT"] = "1"
        return env

    def start(self, timeout: float = 30.0) -> None:
        """Start samba (one process) and wait until LDAP answers."""
        if self.running:
            return
        samba = _need("samba")
        ldapsearch = _need("ldapsearch")
        out = open(os.path.join(self.directory, "log", "samba.out"), "wb")
        self._process = subprocess.Popen(
            [samba, "-s", self.confPath, "-F", "--debug-stdout", "-d", "1", "-M", "single"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SambaError(f"samba exited with {self._process.returncode}:\n{self.logTail()}")
            probe = subprocess.run(
                [ldapsearch, "-x", "-H", self.url, "-b", "", "-s", "base", "-LLL", "dnsHostName"],
                capture_output=True, timeout=5, env=self.clientEnv(),
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise SambaError(f"samba not answering LDAP on {self.address} after {timeout} s:\n{self.logTail()}")

    def stop(self) -> None:
        """SIGTERM the samba we started; SIGKILL its process group after 10 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def logTail(self, lines: int = 30) -> str:
        return _tail(os.path.join(self.directory, "log", "samba.out"), lines)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError as e:
        return f"({path}: {e})"
