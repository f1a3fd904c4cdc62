"""The layout of src/icm_cli as ARCHITECTURE.md draws it, checked on the code itself (ast):
one folder per floor, its rank in its __init__'s docstring, so a module takes its floor by where
it is put; every module imports only from its own floor or those below, takes part in no import
cycle (imports inside functions count), uses no other module's underscore names, has no function
longer than 80 lines and is no longer than 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "icm_cli"
# The only modules outside a floor's folder: the entry point (on the commands floor) and the
# package's own __init__ and __main__ (above every floor: they may re-export any of them).
ENTRY_POINTS = {"cli": "commands", "": None, "__main__": None}
FLOOR_DOC = re.compile(r"Floor (\d+) \((\w+)\): ")
MAX_MODULE_LINES = 400


def floors() -> dict[str, int]:
    """Each floor's folder and rank, read from the first line of its __init__'s docstring."""
    out = {}
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        match = FLOOR_DOC.match(doc)
        assert match, f"{init.relative_to(SRC.parent)}: its docstring must begin 'Floor N (name): '"
        assert match.group(2) == init.parent.name, f"{init}: names floor {match.group(2)!r}, not its folder"
        assert "May import:" in doc, f"{init}: its docstring must say what the floor may import"
        out[init.parent.name] = int(match.group(1))
    return out


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__") if name != "__init__" else ""] = path
    return out


def floor_of(module: str) -> int:
    """A module's floor is the folder it sits in."""
    ranks = floors()
    if module in ENTRY_POINTS:
        folder = ENTRY_POINTS[module]
        return ranks[folder] if folder else max(ranks.values()) + 1
    folder = module.split(".")[0]
    if folder not in ranks:
        raise AssertionError(f"icm_cli.{module} is in no floor's folder: put it in one of {sorted(ranks)}")
    return ranks[folder]


def test_the_floors_are_the_folders():
    ranks = floors()
    assert sorted(ranks.values()) == list(range(1, len(ranks) + 1)), ranks
    loose = sorted(p.stem for p in SRC.glob("*.py") if p.stem not in {"cli", "__init__", "__main__"})
    assert loose == [], f"modules outside a floor's folder: {loose}"
    nested = sorted(str(p.relative_to(SRC)) for p in SRC.glob("*/*/*.py"))
    assert nested == [], f"a floor is one folder deep: {nested}"


def test_no_module_is_longer_than_400_lines():
    long = [f"{m}: {n} lines" for m, p in modules().items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert long == []


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The icm_cli module an import names (relative or absolute), or '' for another package."""
    if node.level == 0:
        name = node.module or ""
        return name.removeprefix("icm_cli.").removeprefix("icm_cli") if name.startswith("icm_cli") else "\0"
    package = module.split(".")[:-1] if module else []
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, anywhere in the module."""
    out = []
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            if target == "\0":
                continue
            names = [a.name for a in node.names]
            # `from . import x` / `from .backends import loading` name modules, not attributes
            for a in names:
                sub = f"{target}.{a}" if target else a
                if sub in known:
                    out.append((sub, [], node.lineno))
            if target in known:
                out.append((target, [a for a in names if f"{target}.{a}".strip(".") not in known], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("icm_cli."):
                    out.append((a.name.removeprefix("icm_cli."), [], node.lineno))
    return out


def test_every_module_is_on_a_floor_and_imports_nothing_from_above():
    problems = []
    for module, path in modules().items():
        mine = floor_of(module)
        for target, _, line in imports(module, path):
            if floor_of(target) > mine:
                problems.append(f"{module}:{line} imports {target} from a floor above")
    assert problems == []


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t, _, _ in imports(m, p) if t != m} for m, p in modules().items()}
    # Tarjan's strongly connected components; any of size > 1 is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_module_uses_another_modules_private_names():
    problems = []
    known = modules()
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for target, names, line in imports(module, path):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    problems.append(f"{module}:{line} imports {target}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = resolve(module, node)
                for a in node.names:
                    sub = f"{target}.{a.name}" if target else a.name
                    if sub in known:
                        aliases[a.asname or a.name] = sub
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                problems.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert problems == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > 80:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert long == []


@pytest.mark.parametrize("command", ["label", "eval", "compare", "export", "init", "report"])
def test_each_command_has_its_own_module_over_a_plain_function(command):
    path = SRC / "commands" / f"{command}.py"
    assert path.exists(), path
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert f"{command}_command" in functions
