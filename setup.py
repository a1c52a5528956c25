"""
Setup shim: all metadata lives in setup.cfg.

The default install is pure Python.  With C{LDAPROUTE_MYPYC=1} (and mypy
installed: C{pip install --no-build-isolation .}), the wire layer
(C{ldaproute/wire/}: the BER framing, envelope and PDU edits every
operation goes through) and a few hot modules above it (L{COMPILED}) are
compiled with mypyc; the code is the same, and the compiled form costs an
eighth to a quarter fewer instructions per operation
(README.rst, "Performance").  tools/test-all.sh runs the unit suite
against both.
"""

import glob
import os

from setuptools import setup

#: the modules on every operation's path that mypyc compiles as they are:
#: the wire layer, the backend response demultiplexer and the session core
#: (the rest of the package, its Twisted protocols and the classes declared
#: with zope's implementer, stay interpreted)
COMPILED = sorted(glob.glob(os.path.join("ldaproute", "wire", "*.py"))) + [
    os.path.join("ldaproute", "backends", "responses.py"),
    os.path.join("ldaproute", "core", "admission.py"),
    os.path.join("ldaproute", "core", "identities.py"),
    os.path.join("ldaproute", "core", "lostlinks.py"),
    os.path.join("ldaproute", "core", "routing.py"),
    os.path.join("ldaproute", "core", "session.py"),
]


def extensions() -> list:
    if os.environ.get("LDAPROUTE_MYPYC", "").lower() not in ("1", "yes", "true", "on"):
        return []
    from mypyc.build import mypycify

    # (setup.cfg's [mypy] warns of sections for modules outside this build)
    return mypycify(["--no-warn-unused-configs", *COMPILED], opt_level="3")


if __name__ == "__main__":  # (tools/test-compiled.sh reads COMPILED)
    setup(ext_modules=extensions())
