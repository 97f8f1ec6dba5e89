"""The package's shape, checked on its source: imports point one way (audio -> modules -> models -> batch ->
evaluation / cli / serving), with no cycles; configuration modules import no torch modules; modules stay small."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pengi"
# Layer of each part of the package: a module may import modules of its own layer or a lower one.
LAYERS = {
    "errors": 0,
    "audio": 1,
    "data": 2, "modules": 2, "conversion": 2, "synthetic": 2,
    "models": 3, "presets": 3,
    "batch": 4,
    "evaluation": 5,
    "cli": 6, "serving": 6,
    "__init__": 7, "__main__": 8,
}
MAX_LINES = 420


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "metrics" in path.relative_to(PACKAGE).parts[:2] and path.parent.name != "metrics":
            continue  # the evaluate metric scripts: loaded by path, they import no pengi module
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def pengi_imports(path: Path, name: str, known: set[str] = frozenset()) -> set[str]:
    """The pengi modules ``path`` imports at module level or inside functions (absolute names); imports for type
    checking only (``if TYPE_CHECKING:``) do not count."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "pengi" or target.startswith("pengi."):
                submodules = {f"{target}.{alias.name}" for alias in node.names} & known
                out.update(submodules or {target})  # `from package import module` depends on the module
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name == "pengi" or a.name.startswith("pengi."))
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {t for t in pengi_imports(path, name, set(mods)) if t in mods and t != name}
            for name, path in mods.items()}


def test_imports_point_one_way():
    wrong = [f"{m} imports {t}" for m, targets in graph().items() for t in targets
             if t != "pengi" and layer(t) > layer(m)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == "pengi":
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [node])


def test_configuration_modules_import_no_torch_modules():
    for name, path in modules().items():
        if not name.rsplit(".", 1)[-1].startswith("configuration_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for target in names:
                assert not target.startswith("torch"), f"{name} imports {target}"
                if target.startswith("pengi."):
                    assert target.rsplit(".", 1)[-1].startswith("configuration_"), f"{name} imports {target}"


def test_modules_stay_small():
    big = {name: n for name, path in modules().items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, big


def test_no_sys_path_edits():
    root = PACKAGE.parent
    offenders = [str(p.relative_to(root)) for folder in ("pengi", "pengi_recipes", "tests", "perf")
                 for p in (root / folder).rglob("*.py")
                 if p.name != os.path.basename(__file__) and "sys.path." in p.read_text(encoding="utf-8")]
    assert not offenders, offenders
