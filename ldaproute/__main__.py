"""
``python -m ldaproute ARGS``: the ``ldaproute`` command (L{ldaproute.cli}).
``check`` and ``explain`` are subcommands; anything else runs ``twistd
--nodaemon --pidfile= ldaproute ARGS``: the proxy in the foreground, without
a pid file (what containers and test harnesses want).
"""
from ldaproute.cli import script

if __name__ == "__main__":
    script()
