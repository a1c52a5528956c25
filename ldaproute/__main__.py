"""
``python -m ldaproute ARGS`` runs ``twistd --nodaemon --pidfile= ldaproute ARGS``:
the proxy in the foreground, without a pid file (what containers and test
harnesses want).
"""
import sys

from twisted.scripts.twistd import run


def main() -> None:
    sys.argv[1:1] = ["--nodaemon", "--pidfile=", "ldaproute"]
    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
