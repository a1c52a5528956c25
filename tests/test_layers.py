"""
The package's import graph, read from the source with C{ast}: no cycles,
layers importing downward only, no imports inside functions, no private
names taken from another module.

The layers, lowest first (DESIGN.md, "Package layout"):

  wire       bytes: BER, whole-PDU edits, PEM files, PROXY header
  core       pure decisions: session, routing, rewrite, fan-out, DN, policy
  backends   pools, backend connections and links, health, discovery
  listeners  the client-facing protocols and their TLS contexts
  ops        metrics, access log, observer, lifecycle, demo, check/explain
  fleet      what the worker group and the replicas share (Redis throttle, one /metrics)
  top        runtime, service, cli: the package's entry points

C{ldaproute.config} (the key tables and the loader, with the values in
C{ldaproute.configvalues} and the loader's per-section checks in
C{ldaproute.configload}) stands beside the
layers: every layer above C{wire} may import the configuration I{values}
(C{Route}, C{Backend}, ...), so C{config} itself may import only C{wire}
and C{core} (C{core.dn}, to turn DNs into their type at load).

An import under C{if TYPE_CHECKING:} names a type for annotations only (the
frontend's L{Runtime}); it is not a dependency at run time, so it may point
up, and it is left out of the graph.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ldaproute"

LAYERS = ["wire", "core", "backends", "listeners", "ops", "fleet", "top"]
TOP = {"ldaproute.runtime", "ldaproute.service", "ldaproute.__main__", "ldaproute.cli"}

#: Imports inside a function that are not there to dodge a cycle: the
#: global reactor is installed by its first import, so it is imported when
#: it is needed, never at module import time.
ALLOWED_LOCAL_IMPORTS = {"twisted.internet.reactor"}


def _moduleName(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_moduleName(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layerOf(module: str) -> str | None:
    """The layer of a module, or L{None} for the package itself and config."""
    if module in TOP:
        return "top"
    if module in ("ldaproute", "ldaproute.config", "ldaproute.configvalues") or module.startswith(
        ("ldaproute.config.", "ldaproute.configload")
    ):
        return None
    return module.split(".")[1]


def _isTypeCheckingBlock(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _targets(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """C{(module imported, name taken from it or None)} for one statement."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    if node.level or node.module is None:
        raise AssertionError("relative imports are not used in this package")
    out = []
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if submodule in MODULES:
            out.append((submodule, None))
        else:
            out.append((node.module, alias.name))
    return out


class _Imports(ast.NodeVisitor):
    """Every import of a module, split by where it stands."""

    def __init__(self) -> None:
        self.runtime: list[tuple[int, str, str | None]] = []
        self.typeOnly: list[tuple[int, str, str | None]] = []
        self.local: list[tuple[int, str]] = []
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        if _isTypeCheckingBlock(node) and self._depth == 0:
            for child in node.body:
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    self.typeOnly += [(child.lineno, m, n) for m, n in _targets(child)]
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        for module, name in _targets(node):
            if self._depth:
                self.local.append((node.lineno, module if name is None else f"{module}.{name}"))
            else:
                self.runtime.append((node.lineno, module, name))

    visit_Import = visit_ImportFrom = _import


IMPORTS = {}
for _name, _path in MODULES.items():
    _visitor = _Imports()
    _visitor.visit(ast.parse(_path.read_text(), str(_path)))
    IMPORTS[_name] = _visitor


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at run time."""
    return {
        name: {module for _, module, _ in visitor.runtime if module in MODULES}
        for name, visitor in IMPORTS.items()
    }


def test_everyModuleIsRead() -> None:
    assert {"ldaproute.wire.ber", "ldaproute.wire.pdu", "ldaproute.config", "ldaproute.runtime"} <= set(MODULES)
    assert all(layerOf(m) in LAYERS + [None] for m in MODULES), [m for m in MODULES if layerOf(m) not in LAYERS + [None]]


def test_noCycles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dependency in sorted(edges[module]):
            if state.get(dependency) == 1:
                cycle = path[path.index(dependency) :] + [dependency]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dependency not in state:
                visit(dependency)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_layersImportDownward() -> None:
    wrong = []
    for module, dependencies in graph().items():
        layer = layerOf(module)
        for dependency in dependencies:
            target = layerOf(dependency)
            if dependency == "ldaproute":
                continue  # the package: its version
            if layer is None and module.startswith("ldaproute.config"):  # and its loader modules
                if target not in ("wire", "core", None):
                    wrong.append(f"{module} (the configuration) imports {dependency}")
                continue
            if target is None:  # the configuration's values
                if layer == "wire":
                    wrong.append(f"{module} (wire) imports {dependency}")
                continue
            if layer is not None and LAYERS.index(target) > LAYERS.index(layer):
                wrong.append(f"{module} ({layer}) imports {dependency} ({target})")
    assert wrong == []


def test_noImportsInsideFunctions() -> None:
    found = [
        f"{module}:{line} imports {target}"
        for module, visitor in IMPORTS.items()
        for line, target in visitor.local
        if target not in ALLOWED_LOCAL_IMPORTS
    ]
    assert found == []


def test_noPrivateNamesAcrossModules() -> None:
    """Neither C{from m import _x} nor C{m._x} for another module of the package."""
    found = []
    for module, visitor in IMPORTS.items():
        for line, target, name in visitor.runtime + visitor.typeOnly:
            if target.startswith("ldaproute") and name is not None and name.startswith("_") and not name.startswith("__"):
                found.append(f"{module}:{line} imports {target}.{name}")
        tree = ast.parse(MODULES[module].read_text())
        aliases = {
            alias.asname or alias.name.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
            if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ldaproute"))
            or (isinstance(node, ast.Import) and alias.name.startswith("ldaproute"))
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert found == []


_MUTATORS = frozenset(
    {"append", "add", "clear", "discard", "extend", "insert", "pop", "popitem", "remove", "setdefault", "update"}
)


def mutatedGlobals(tree: ast.Module) -> set[str]:
    """
    Module-level names that code inside a function of C{tree} changes:
    assigned through C{global}, or a container filled or emptied
    (C{name[k] = v}, C{del name[k]}, C{name.setdefault(...)}...).
    """
    names = {
        target.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    found = set()
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Global):
                found.update(name for name in node.names if name in names)
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id in names:
                        found.add(target.value.id)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in names
                and node.func.attr in _MUTATORS
            ):
                found.add(node.func.value.id)
    return found


def test_noModuleLevelCaches() -> None:
    """
    A module-level container that functions fill is a process global:
    caches belong to the runtime that owns the configuration they were
    built from (L{ldaproute.runtime.Runtime}: its DN cache, rewriters and
    shared pools; each L{BackendState}'s client TLS options).
    """
    found = {
        module: sorted(mutatedGlobals(ast.parse(path.read_text())))
        for module, path in MODULES.items()
    }
    assert {module: names for module, names in found.items() if names} == {}


def test_cacheCheckSeesACache() -> None:
    tree = ast.parse("_cache = {}\nTABLE = {1: 2}\ndef get(k):\n    _cache[k] = TABLE[k]\n    return _cache[k]\n")
    assert mutatedGlobals(tree) == {"_cache"}


@pytest.mark.parametrize(
    "source, reason",
    [
        ("import ldaproute.listeners.frontend\n", "wire imports listeners"),
        ("def f():\n    from ldaproute.core import dn\n", "import inside a function"),
        ("from ldaproute.wire.ber import _secret\n", "private name"),
    ],
)
def test_checksSeeMistakes(source: str, reason: str) -> None:
    """The visitor finds each kind of mistake the tests above look for."""
    visitor = _Imports()
    visitor.visit(ast.parse(source))
    if reason == "wire imports listeners":
        [(_, module, _)] = visitor.runtime
        assert LAYERS.index(layerOf(module)) > LAYERS.index("wire")  # type: ignore[arg-type]
    elif reason == "import inside a function":
        assert visitor.local == [(2, "ldaproute.core.dn")]
    else:
        assert visitor.runtime == [(1, "ldaproute.wire.ber", "_secret")]


def test_everyPackageIsInstalled() -> None:
    """
    setup.cfg lists every package of ldaproute (it cannot use find:, which
    does not see twisted.plugins): a package left out installs without its
    modules and the installed twistd plugin fails to import.
    """
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    packages = {_moduleName(path.parent / "__init__.py") for path in PACKAGE.rglob("__init__.py")}
    assert packages <= listed, sorted(packages - listed)
