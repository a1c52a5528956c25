#!/usr/bin/env bash
# The optional compiled build (setup.py: LDAPROUTE_MYPYC=1 compiles
# ldaproute/wire/ with mypyc): built in a throwaway copy of the tree, checked
# that the compiled modules are what gets imported, and the unit suite run
# against it.  tools/test-all.sh runs this before the whole suite on the
# pure-Python package, the default install.
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
import glob, importlib, os, sys
for path in sorted(glob.glob("ldaproute/wire/*.py")):
    name = path[:-3].replace(os.sep, ".").removesuffix(".__init__")
    module = importlib.import_module(name)
    if not module.__file__.endswith(".so"):
        sys.exit(f"{name} is not compiled: {module.__file__}")
print("compiled wire layer:", len(glob.glob("ldaproute/wire/*.so")), "modules")
PY
echo "unit suite against the compiled wire layer"
python3 -m pytest -q -p no:cacheprovider --ignore=tests/integration "$@"
