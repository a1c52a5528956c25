#!/usr/bin/env bash
# The optional compiled build (setup.py: LDAPROUTE_MYPYC=1 compiles the
# modules setup.py names in COMPILED with mypyc): built in a throwaway copy
# of the tree, checked that the compiled modules are what gets imported, and
# the unit suite run against it.  tools/test-all.sh runs this before the
# whole suite on the pure-Python package, the default install.
# Usage: bash tools/test-compiled.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -a . "$scratch/tree"
cd "$scratch/tree"
rm -rf build
find ldaproute -name '*.so' -delete
if ! LDAPROUTE_MYPYC=1 python3 setup.py --quiet build_ext --inplace >"$scratch/build.log" 2>&1; then
    tail -30 "$scratch/build.log"
    exit 1
fi
python3 - <<'PY'
import importlib, os, runpy, sys
compiled = runpy.run_path("setup.py", run_name="compiled-modules")["COMPILED"]
for path in compiled:
    name = path[:-3].replace(os.sep, ".").removesuffix(".__init__")
    module = importlib.import_module(name)
    if not module.__file__.endswith(".so"):
        sys.exit(f"{name} is not compiled: {module.__file__}")
print("compiled:", len(compiled), "modules")
PY
echo "unit suite against the compiled build"
python3 -m pytest -q -p no:cacheprovider --ignore=tests/integration "$@"
