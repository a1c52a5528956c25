"""``python -m ldaproute ARGS`` is ``twistd -n ldaproute ARGS``."""
import sys

from twisted.scripts.twistd import run


def main() -> None:
    sys.argv[1:1] = ["-n", "ldaproute"] if sys.argv[1:2] != ["--help"] else ["ldaproute"]
    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
