"""A throwaway OpenLDAP slapd for the benchmark (stdlib only).

Data: suffix dc=example,dc=com, rootdn cn=admin,dc=example,dc=com / "secret",
ou=people with N inetOrgPerson entries uid=user0..user{N-1}, password of
userI is "passI" ({SSHA}).  Even-numbered users carry ``employeeType: big``
so that ``(employeeType=big)`` under ou=people matches N/2 entries (5,000 for
the default 10,000): the large-search workload.

Indexes: objectClass, uid, employeeType (eq).  The database runs with
``dbnosync`` (the modify workload would otherwise measure the disk).

Used by bench/run.py; can also be run by hand:

    python bench/slapd.py [--entries N] [--port P]    # runs until Ctrl-C
"""
import argparse
import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SUFFIX = "dc=example,dc=com"
PEOPLE = "ou=people," + SUFFIX
ROOTDN = "cn=admin," + SUFFIX
ROOTPW = "secret"
BIG_FILTER = "(employeeType=big)"


def user_dn(i):
    return "uid=user%d,%s" % (i, PEOPLE)


def _bin(envname, name):
    return os.environ.get(envname) or shutil.which(name) or "/usr/sbin/" + name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d"
                               % (proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on 127.0.0.1:%d after %.0fs" % (port, timeout))


def _ssha(password, salt):
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password + salt).digest() + salt).decode()


def write_ldif(path, entries, blob=0):
    with open(path, "w") as f:
        f.write("dn: %s\nobjectClass: dcObject\nobjectClass: organization\n"
                "dc: example\no: Example\n\n" % SUFFIX)
        f.write("dn: %s\nobjectClass: organizationalUnit\nou: people\n\n" % PEOPLE)
        for i in range(entries):
            salt = hashlib.sha1(b"salt%d" % i).digest()[:8]
            extra = ""
            if blob and i % 2 == 0:
                # a large second description on the "big" entries: the
                # memory bench needs a result larger than the kernel's
                # socket buffers (bench/memory.py)
                extra = "description: %s\n" % ("x" * blob)
            f.write(
                "dn: %s\nobjectClass: inetOrgPerson\nuid: user%d\ncn: User %d\n"
                "sn: Number%d\ngivenName: User\nmail: user%d@example.com\n"
                "employeeNumber: %d\nemployeeType: %s\n"
                "description: initial description of user %d\nuserPassword: %s\n%s\n"
                % (user_dn(i), i, i, i, i, i, "big" if i % 2 == 0 else "small", i,
                   _ssha(b"pass%d" % i, salt), extra))


def write_conf(d):
    sd = os.environ.get("SLAPD_SCHEMADIR", "/etc/ldap/schema")
    mp = os.environ.get("SLAPD_MODULEPATH", "/usr/lib/ldap")
    conf = os.path.join(d, "slapd.conf")
    with open(conf, "w") as f:
        f.write(
            "include {sd}/core.schema\ninclude {sd}/cosine.schema\n"
            "include {sd}/inetorgperson.schema\n"
            "pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n"
            "modulepath {mp}\nmoduleload back_mdb\nloglevel 0\n"
            "sizelimit unlimited\n"
            "access to attrs=userPassword by self write by anonymous auth by * none\n"
            "access to * by * read\n"
            "database mdb\nmaxsize 1073741824\ndbnosync\n"
            "suffix \"{suffix}\"\nrootdn \"{rootdn}\"\nrootpw {rootpw}\n"
            "directory {d}/db\n"
            "index objectClass eq\nindex uid eq\nindex employeeType eq\n".format(
                sd=sd, mp=mp, d=d, suffix=SUFFIX, rootdn=ROOTDN, rootpw=ROOTPW))
    return conf


class Slapd:
    """slapd as our own foreground child, in its own process group."""

    def __init__(self, entries=10000, port=0, workdir=None, blob=0):
        self.entries = entries
        self.blob = blob
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="ldaproute-bench-slapd-")
        self.proc = None

    @property
    def url(self):
        return "ldap://127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        conf = write_conf(self.dir)
        ldif = os.path.join(self.dir, "data.ldif")
        write_ldif(ldif, self.entries, self.blob)
        subprocess.run([_bin("SLAPADD", "slapadd"), "-q", "-f", conf, "-l", ldif],
                       check=True, stdout=subprocess.DEVNULL)
        os.unlink(ldif)
        self.proc = subprocess.Popen(
            [_bin("SLAPD", "slapd"), "-f", conf, "-h", self.url + "/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=10000)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with Slapd(a.entries, a.port) as s:
        print(s.url, "pid", s.pid, "dir", s.dir, flush=True)
        try:
            while s.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
