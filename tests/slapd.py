# -*- test-case-name: tests.integration.test_slapd_fixture -*-
"""
Throwaway OpenLDAP slapd instances on loopback, for integration tests and the
benchmark.

Owns the whole life of one slapd: its slapd.conf, its deterministic data set
(loaded with slapadd), its TLS material, the child process, and readiness
(an LDAP answer from C{ldapwhoami}, not just an open port).  It uses only the
standard library and C{cryptography} (through L{tests.certs}), so the bench can
import it without Twisted.

The data set under C{suffix} (default C{dc=example,dc=com})::

    ou=people         N inetOrgPerson entries uid=userI, password "passI" ({SSHA})
    ou=groups         groupOfNames cn=admins (user0, user1) and cn=group0..3
                      (userI is a member of group(I % 4))
    ou=system         uid=sasluser, password "saslpass" in cleartext, for SASL
                      DIGEST-MD5 / SCRAM-* binds (mapped by authz-regexp)
    ou=elsewhere      a referral entry: ref ldap://other.example.com/ou=elsewhere,...

slapd runs in the foreground (C{-d}) in its own session, so the test owns the
PID and can SIGTERM or SIGKILL it.  Its stderr (and, with C{accessLog=True},
the C{stats} log of every connection and operation) goes to C{slapd.log} in the
instance directory; see L{Slapd.logLines}.

System locations can be overridden with the environment variables SLAPD,
SLAPADD, LDAPWHOAMI, SLAPD_MODULEPATH and SLAPD_SCHEMADIR.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from typing import IO, Any, Callable, Mapping

from tests.certs import ServerCert, makeCA, makeCert

__all__ = [
    "Slapd",
    "SlapdError",
    "SlapdNotFound",
    "freePort",
    "ssha",
    "REFERRAL_URL_TEMPLATE",
    "SlapdFactory",
]

#: The C{ref} value of the referral entry; C{%s} is the instance's suffix.
REFERRAL_URL_TEMPLATE = "ldap://other.example.com/ou=elsewhere,%s"

_GROUP_COUNT = 4
_SASL_USER = "sasluser"
_SASL_PASSWORD = "saslpass"
_DEBIAN_PACKAGES = "slapd ldap-utils libsasl2-modules"


def _waitStopped(pid: int, timeout: float = 5.0) -> None:
    """
    Until every thread of C{pid} is stopped: C{kill} returns before a busy
    thread takes its SIGSTOP, and a test that sends next must find slapd
    hung, not still reading (bounded: a process that never stops is left).
    """
    deadline = time.monotonic() + timeout
    tasks = f"/proc/{pid}/task"
    while time.monotonic() < deadline:
        try:
            states = []
            for task in os.listdir(tasks):
                with open(f"{tasks}/{task}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            return  # gone
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.005)


class SlapdError(RuntimeError):
    """
    slapd could not be prepared, started or stopped; the message says why and
    ends with the tail of its log when there is one.
    """


class SlapdNotFound(SlapdError):
    """
    A required OpenLDAP program is not installed.  Tests must fail on this,
    never skip: a CI image without slapd would otherwise pass silently.
    """


def freePort() -> int:
    """
    Return a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssha(password: str, salt: bytes) -> str:
    """
    Return the RFC 2307 C{{SSHA}} form of C{password} with C{salt}.
    """
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _program(envName: str, name: str) -> str:
    override = os.environ.get(envName)
    if override:
        if not os.access(override, os.X_OK):
            raise SlapdNotFound(f"{envName}={override} is not an executable file")
        return override
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise SlapdNotFound(
            f"{name} not found on PATH or in /usr/sbin; install the Debian packages "
            f"{_DEBIAN_PACKAGES} (or set {envName})"
        )
    return found


def _firstRDN(suffix: str) -> tuple[str, str]:
    first = suffix.split(",", 1)[0]
    attr, sep, value = first.partition("=")
    if not sep or not value:
        raise ValueError(f"suffix {suffix!r} does not start with attr=value")
    return attr.strip().lower(), value.strip()


class Slapd:
    """
    One throwaway slapd instance in C{directory}.

    The constructor only records settings and checks the programs exist;
    L{start} writes the configuration and data (the first time) and starts the
    process; L{stop}, L{kill} and L{restart} keep the database and ports, so a
    restarted instance answers on the same URL with the same data.

    @ivar directory: the instance directory (config, database, certs, log).
    @ivar suffix: the database suffix.
    @ivar entries: the number of uid=userI entries under ou=people.
    """

    rootPW = "secret"
    saslUser = _SASL_USER
    saslPassword = _SASL_PASSWORD

    def __init__(
        self,
        directory: str,
        port: int | None = None,
        suffix: str = "dc=example,dc=com",
        entries: int = 2000,
        tls: bool | ServerCert | None = None,
        extraConfig: str = "",
        extraGlobalConfig: str = "",
        accessLog: bool = False,
        saslMaxSSF: int | None = 0,
        ldapi: bool = False,
        ldapsPort: int | None = None,
        startTimeout: float = 30.0,
        maxIncoming: int | None = None,
    ) -> None:
        """
        @param directory: an existing, preferably empty directory.
        @param port: the ldap:// port on 127.0.0.1; a free one if L{None}.
        @param suffix: the suffix of the one mdb database (e.g.
            C{dc=corp,dc=example,dc=com} for a second backend).
        @param entries: how many users to load under ou=people.
        @param tls: L{None}/C{False} for no TLS; C{True} to make a CA and a
            certificate for C{localhost} and C{127.0.0.1} in C{directory};
            or a L{ServerCert} to share one CA between instances.  With TLS,
            StartTLS works on L{url} and slapd also listens on L{ldapsURL}.
        @param extraConfig: slapd.conf lines appended after the database
            section (overlays, limits, indexes).
        @param extraGlobalConfig: slapd.conf lines placed before the
            C{database} line (global directives, moduleload).
        @param accessLog: run with C{-d stats} so every connection and
            operation is written to C{slapd.log} (see L{logLines}).  Costs CPU;
            off for the benchmark.
        @param saslMaxSSF: the C{maxssf} SASL security property.  The default
            0 keeps DIGEST-MD5 from installing an integrity/confidentiality
            layer, so LDAP PDUs stay readable after a SASL bind (what a proxy
            needs).  L{None} leaves slapd's default (layers allowed).
        @param ldapi: also listen on a unix socket, C{directory/ldapi}
            (see L{ldapiURL}); the path must fit in a sockaddr_un.
        @param ldapsPort: the ldaps:// port when C{tls}; a free one if
            L{None}.
        @param startTimeout: seconds to wait for slapd to answer.
        @param maxIncoming: the largest request slapd reads, in bytes, from
            anonymous and from authenticated sessions alike
            (C{sockbuf_max_incoming} and C{sockbuf_max_incoming_auth});
            slapd closes the connection of a client that sends a longer
            one.  L{None} keeps slapd's defaults (256 KiB and 4 MiB).
        @raise SlapdNotFound: when slapd, slapadd or ldapwhoami is missing.
        """
        self._slapd = _program("SLAPD", "slapd")
        self._slapadd = _program("SLAPADD", "slapadd")
        self._ldapwhoami = _program("LDAPWHOAMI", "ldapwhoami")
        self._modulePath = os.environ.get("SLAPD_MODULEPATH", "/usr/lib/ldap")
        self._schemaDir = os.environ.get("SLAPD_SCHEMADIR", "/etc/ldap/schema")
        if not os.path.isfile(os.path.join(self._schemaDir, "core.schema")):
            raise SlapdNotFound(
                f"no core.schema in {self._schemaDir}; install {_DEBIAN_PACKAGES} "
                "(or set SLAPD_SCHEMADIR)"
            )
        self.directory = os.path.abspath(directory)
        self.suffix = suffix
        self.entries = entries
        self.extraConfig = extraConfig
        self.extraGlobalConfig = extraGlobalConfig
        self.accessLog = accessLog
        self.saslMaxSSF = saslMaxSSF
        self.startTimeout = startTimeout
        self.maxIncoming = maxIncoming
        self._firstAttr, self._firstValue = _firstRDN(suffix)
        self._port = port if port is not None else freePort()
        self._tlsSetting = tls
        self._serverCert: ServerCert | None = None
        self._ldapsPort: int | None = None
        if tls:
            self._ldapsPort = ldapsPort if ldapsPort is not None else freePort()
        self._ldapiPath: str | None = None
        if ldapi:
            path = os.path.join(self.directory, "ldapi")
            if len(path.encode()) > 100:
                raise ValueError(
                    f"ldapi socket path {path!r} is too long for a unix socket; "
                    "use a shorter directory"
                )
            self._ldapiPath = path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._prepared = False

    # -- names and addresses ------------------------------------------------

    @property
    def port(self) -> int:
        """The ldap:// TCP port on 127.0.0.1."""
        return self._port

    @property
    def url(self) -> str:
        """C{ldap://127.0.0.1:PORT} (no trailing slash: ldap3 refuses one); StartTLS is available here with TLS."""
        return f"ldap://127.0.0.1:{self._port}"

    @property
    def ldapsPort(self) -> int | None:
        """The ldaps:// port, or L{None} without TLS."""
        return self._ldapsPort

    @property
    def ldapsURL(self) -> str | None:
        """C{ldaps://127.0.0.1:PORT}, or L{None} without TLS."""
        if self._ldapsPort is None:
            return None
        return f"ldaps://127.0.0.1:{self._ldapsPort}"

    @property
    def ldapiPath(self) -> str | None:
        """The unix socket path, or L{None} unless C{ldapi=True}."""
        return self._ldapiPath

    @property
    def ldapiURL(self) -> str | None:
        """C{ldapi://%2F...%2Fldapi}, or L{None} unless C{ldapi=True}."""
        if self._ldapiPath is None:
            return None
        return "ldapi://" + urllib.parse.quote(self._ldapiPath, safe="")

    @property
    def caFile(self) -> str | None:
        """The CA certificate to trust for this instance, or L{None}."""
        return self._serverCert.caFile if self._serverCert else None

    @property
    def serverCert(self) -> ServerCert | None:
        """slapd's certificate, key and CA paths, or L{None} without TLS."""
        return self._serverCert

    @property
    def rootDN(self) -> str:
        """The database's rootdn (password L{rootPW}); not subject to ACLs."""
        return "cn=admin," + self.suffix

    @property
    def peopleDN(self) -> str:
        return "ou=people," + self.suffix

    @property
    def groupsDN(self) -> str:
        return "ou=groups," + self.suffix

    @property
    def systemDN(self) -> str:
        return "ou=system," + self.suffix

    @property
    def referralDN(self) -> str:
        """The DN of the referral entry (C{ou=elsewhere,SUFFIX})."""
        return "ou=elsewhere," + self.suffix

    @property
    def referralURL(self) -> str:
        """The C{ref} value slapd returns for L{referralDN}."""
        return REFERRAL_URL_TEMPLATE % (self.suffix,)

    @property
    def saslUserDN(self) -> str:
        """The entry that SASL binds as L{saslUser} map to."""
        return f"uid={self.saslUser},{self.systemDN}"

    def userDN(self, i: int) -> str:
        """The DN of user C{i}: C{uid=userI,ou=people,SUFFIX}."""
        return f"uid=user{i},{self.peopleDN}"

    @staticmethod
    def userPassword(i: int) -> str:
        """The cleartext password of user C{i}: C{passI}."""
        return f"pass{i}"

    def groupDN(self, k: int) -> str:
        """The DN of C{cn=groupK}; user I is a member of group C{I % 4}."""
        return f"cn=group{k},{self.groupsDN}"

    @property
    def adminsGroupDN(self) -> str:
        """C{cn=admins}: members user0 and user1 (when they exist)."""
        return "cn=admins," + self.groupsDN

    @property
    def pid(self) -> int | None:
        """The running slapd's PID, or L{None} when it is not running."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def logPath(self) -> str:
        """slapd's stderr and, with C{accessLog}, its stats log."""
        return os.path.join(self.directory, "slapd.log")

    @property
    def confPath(self) -> str:
        return os.path.join(self.directory, "slapd.conf")

    def clientEnv(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """
        An environment for OpenLDAP command-line clients talking to this
        instance: no system or user ldap.conf (C{LDAPCONF}, C{LDAPRC}; not
        C{LDAPNOINIT}, which would also ignore C{LDAPTLS_*}), and the CA as
        C{LDAPTLS_CACERT} when TLS is on.

        @param base: the environment to extend; L{os.environ} by default.
        """
        env = dict(os.environ if base is None else base)
        env.pop("LDAPNOINIT", None)
        env["LDAPCONF"] = os.devnull
        env["LDAPRC"] = os.path.join(self.directory, "no-ldaprc")
        if self.caFile is not None:
            env["LDAPTLS_CACERT"] = self.caFile
            env["LDAPTLS_REQCERT"] = "demand"
        return env

    def logLines(self) -> list[str]:
        """
        The lines slapd has written to L{logPath} so far.  With
        C{accessLog=True} these include C{conn=N op=M SRCH base=...},
        C{BIND dn=...} and C{RESULT ... err=...} lines.
        """
        try:
            with open(self.logPath, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []

    # -- configuration and data ----------------------------------------------

    def _writeConfig(self) -> None:
        tlsLines = ""
        if self._serverCert is not None:
            tlsLines = (
                f"TLSCACertificateFile {self._serverCert.caFile}\n"
                f"TLSCertificateFile {self._serverCert.certFile}\n"
                f"TLSCertificateKeyFile {self._serverCert.keyFile}\n"
                "TLSVerifyClient never\n"
            )
        secprops = ""
        if self.saslMaxSSF is not None:
            secprops = f"sasl-secprops noanonymous,noplain,maxssf={self.saslMaxSSF}\n"
        # SASL: slapd's internal auxprop reads the cleartext userPassword of the
        # entry the SASL identity maps to; the realm component is optional.
        authz = (
            'authz-regexp "^uid=([^,]+)(,cn=[^,]+)?,cn=[^,]+,cn=auth$" '
            f'"uid=$1,{self.systemDN}"\n'
        )
        limits = ""
        if self.maxIncoming is not None:
            limits = f"sockbuf_max_incoming {self.maxIncoming}\nsockbuf_max_incoming_auth {self.maxIncoming}\n"
        sd = self._schemaDir
        conf = (
            f"include {sd}/core.schema\n"
            f"include {sd}/cosine.schema\n"
            f"include {sd}/nis.schema\n"
            f"include {sd}/inetorgperson.schema\n"
            f"pidfile {self.directory}/slapd.pid\n"
            f"argsfile {self.directory}/slapd.args\n"
            f"modulepath {self._modulePath}\n"
            "moduleload back_mdb\n"
            "loglevel stats\n"
            "sizelimit unlimited\n"
            "timelimit unlimited\n"
            f"{authz}"
            f"{secprops}"
            f"{tlsLines}"
            f"{limits}"
            f"{self.extraGlobalConfig}\n"
            "access to attrs=userPassword by self write by anonymous auth by * none\n"
            "access to * by self write by * read\n"
            "database mdb\n"
            "maxsize 1073741824\n"
            # a throwaway instance: no fsync per write
            "dbnosync\n"
            f'suffix "{self.suffix}"\n'
            f'rootdn "{self.rootDN}"\n'
            f"rootpw {self.rootPW}\n"
            f"directory {self.directory}/db\n"
            "index objectClass eq\n"
            "index uid,cn,mail eq\n"
            "index member eq\n"
            "limits * size=unlimited time=unlimited\n"
            f"{self.extraConfig}\n"
        )
        with open(self.confPath, "w") as f:
            f.write(conf)

    def _suffixEntry(self) -> str:
        attr, value = self._firstAttr, self._firstValue
        if attr == "dc":
            return (
                f"dn: {self.suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
                f"dc: {value}\no: {value}\n\n"
            )
        if attr == "o":
            return f"dn: {self.suffix}\nobjectClass: organization\no: {value}\n\n"
        if attr == "ou":
            return f"dn: {self.suffix}\nobjectClass: organizationalUnit\nou: {value}\n\n"
        return (
            f"dn: {self.suffix}\nobjectClass: top\nobjectClass: extensibleObject\n"
            f"{attr}: {value}\n\n"
        )

    def writeLDIF(self, path: str) -> None:
        """
        Write this instance's deterministic data set to C{path} as LDIF.
        """
        n = self.entries
        with open(path, "w") as f:
            f.write(self._suffixEntry())
            for ou in ("people", "groups", "system"):
                f.write(f"dn: ou={ou},{self.suffix}\nobjectClass: organizationalUnit\nou: {ou}\n\n")
            for i in range(n):
                salt = hashlib.sha1(b"salt%d" % i).digest()[:8]  # deterministic
                f.write(
                    f"dn: {self.userDN(i)}\n"
                    "objectClass: inetOrgPerson\n"
                    f"uid: user{i}\n"
                    f"cn: User {i}\n"
                    f"sn: Number{i}\n"
                    "givenName: User\n"
                    f"mail: user{i}@example.com\n"
                    f"employeeNumber: {i}\n"
                    f"description: initial description of user {i}\n"
                    f"userPassword: {ssha(self.userPassword(i), salt)}\n\n"
                )
            groups: list[tuple[str, list[str]]] = [
                (self.adminsGroupDN, [self.userDN(i) for i in range(min(n, 2))])
            ]
            for k in range(_GROUP_COUNT):
                groups.append((self.groupDN(k), [self.userDN(i) for i in range(k, n, _GROUP_COUNT)]))
            for dn, members in groups:
                cn = dn.split(",", 1)[0].split("=", 1)[1]
                # groupOfNames must have a member; an empty group holds the rootdn
                members = members or [self.rootDN]
                f.write(f"dn: {dn}\nobjectClass: groupOfNames\ncn: {cn}\n")
                f.writelines(f"member: {m}\n" for m in members)
                f.write("\n")
            f.write(
                f"dn: {self.saslUserDN}\n"
                "objectClass: account\n"
                "objectClass: simpleSecurityObject\n"
                f"uid: {self.saslUser}\n"
                f"userPassword: {self.saslPassword}\n\n"
            )
            f.write(
                f"dn: {self.referralDN}\n"
                "objectClass: referral\n"
                "objectClass: extensibleObject\n"
                "ou: elsewhere\n"
                f"ref: {self.referralURL}\n\n"
            )

    def _prepare(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        if self._tlsSetting is True:
            ca = makeCA(self.directory)
            self._serverCert = makeCert(ca, self.directory, ["localhost", "127.0.0.1"])
        elif isinstance(self._tlsSetting, ServerCert):
            self._serverCert = self._tlsSetting
        dbDir = os.path.join(self.directory, "db")
        os.makedirs(dbDir, exist_ok=True)
        self._writeConfig()
        ldif = os.path.join(self.directory, "data.ldif")
        self.writeLDIF(ldif)
        result = subprocess.run(
            [self._slapadd, "-q", "-f", self.confPath, "-l", ldif],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if result.returncode != 0:
            raise SlapdError(
                f"slapadd failed with exit code {result.returncode}:\n"
                + result.stdout.decode("utf-8", "replace")
            )
        self._prepared = True

    # -- process ---------------------------------------------------------------

    def _listenURLs(self) -> str:
        urls = [self.url]
        if self.ldapsURL is not None:
            urls.append(self.ldapsURL)
        if self.ldapiURL is not None:
            urls.append(self.ldapiURL)
        return " ".join(urls)

    def _tail(self, lines: int = 30) -> str:
        got = self.logLines()[-lines:]
        return ("\n--- slapd.log (tail) ---\n" + "\n".join(got)) if got else ""

    def start(self) -> None:
        """
        Prepare the instance (first time only), start slapd and wait until it
        answers C{ldapwhoami -x}.

        @raise SlapdError: if slapd exits or does not answer in time.
        """
        if self.running:
            raise SlapdError(f"slapd already running with pid {self.pid}")
        if not self._prepared:
            self._prepare()
        debug = "stats" if self.accessLog else "0"
        self._log = open(self.logPath, "ab")
        self._process = subprocess.Popen(
            [self._slapd, "-f", self.confPath, "-h", self._listenURLs(), "-d", debug],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._waitReady()
        except BaseException:
            self.kill()
            raise

    def _waitReady(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startTimeout
        env = self.clientEnv()
        last = ""
        while True:
            code = self._process.poll()
            if code is not None:
                raise SlapdError(f"slapd exited with code {code} during start-up{self._tail()}")
            result = subprocess.run(
                [self._ldapwhoami, "-x", "-H", self.url, "-o", "nettimeout=1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
            if result.returncode == 0:
                return
            last = result.stdout.decode("utf-8", "replace").strip()
            if time.monotonic() > deadline:
                raise SlapdError(
                    f"slapd on {self.url} did not answer within {self.startTimeout:.0f}s "
                    f"(last ldapwhoami: {last}){self._tail()}"
                )
            time.sleep(0.05)

    def _reap(self, timeout: float) -> None:
        assert self._process is not None
        try:
            self._process.wait(timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM slapd and wait for it to exit (SIGKILL after C{timeout}).
        Does nothing if it is not running.
        """
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            self._process.send_signal(signal.SIGCONT)  # in case it was paused
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._reap(timeout)

    def kill(self) -> None:
        """
        SIGKILL slapd (a crash, as a backend failure test wants it) and reap it.
        """
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._reap(10.0)

    def restart(self) -> None:
        """
        Stop (if running) and start again on the same ports with the same data.
        """
        self.stop()
        self.start()

    def pause(self) -> None:
        """
        SIGSTOP slapd: connections stay open but nothing is answered (a hung
        backend).  L{resume} continues it.
        """
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
            _waitStopped(self.pid)

    def resume(self) -> None:
        """SIGCONT a paused slapd."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> "Slapd":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Slapd {self.suffix} {self.url} pid={self.pid}>"


#: The type of the C{slapdFactory} fixture: keyword arguments of L{Slapd}
#: (except C{directory}) in, a started instance out.
SlapdFactory = Callable[..., Slapd]


def main(argv: list[str] | None = None) -> None:
    """
    Run one instance in the foreground until interrupted, for manual use:
    C{python -m tests.slapd --entries 10000 --tls}.
    """
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.slapd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="instance directory (default: a new temp dir)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--suffix", default="dc=example,dc=com")
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    directory = args.dir or tempfile.mkdtemp(prefix="ldaproute-slapd-")
    os.makedirs(directory, exist_ok=True)
    instance = Slapd(directory, port=args.port, suffix=args.suffix, entries=args.entries,
                     tls=args.tls, accessLog=args.access_log)
    instance.start()
    sys.stdout.write(f"{instance.url}\n")
    sys.stderr.write(f"dir={directory} pid={instance.pid} ldaps={instance.ldapsURL} "
                     f"ca={instance.caFile} rootDN={instance.rootDN} rootPW={instance.rootPW}\n")
    sys.stdout.flush()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # a handler, not a blocked signal mask: slapd would inherit the mask
    signal.signal(signal.SIGTERM, interrupted)
    try:
        while instance.running:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        instance.stop()


if __name__ == "__main__":
    main()
