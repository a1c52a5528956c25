"""
Setup shim: all metadata lives in setup.cfg.

The default install is pure Python.  With C{LDAPROUTE_MYPYC=1} (and mypy
installed: C{pip install --no-build-isolation .}), the wire layer
(C{ldaproute/wire/}: the BER framing, envelope and PDU edits every
operation goes through) is compiled with mypyc; the code is the same, the
compiled form costs about a tenth fewer instructions per operation
(README.rst, "Performance").  tools/test-all.sh runs the unit suite
against both.
"""

import glob
import os

from setuptools import setup

#: the wire modules on every operation's path (the rest of the package, and
#: its Twisted and zope classes, stay interpreted)
COMPILED = sorted(glob.glob(os.path.join("ldaproute", "wire", "*.py")))


def extensions() -> list:
    if os.environ.get("LDAPROUTE_MYPYC", "").lower() not in ("1", "yes", "true", "on"):
        return []
    from mypyc.build import mypycify

    # (setup.cfg's [mypy] warns of sections for modules outside this build)
    return mypycify(["--no-warn-unused-configs", *COMPILED], opt_level="3")


setup(ext_modules=extensions())
