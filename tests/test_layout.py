"""The layout shows the architecture: imports point down, never in a circle (issue 22).

Every module under ``specfw/`` is parsed with :mod:`ast` (nothing is imported),
and every import counts, at module level or inside a function: a function-level
import still ties the two modules together, it only hides the circle until run time.
The tokenizer layer knows formats, the store knows files, and the catalog
maps known model names to both.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "specfw"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


@cache
def _tree(name: str) -> ast.Module:
    path = _modules()[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, tuple[str, ...], int]]:
    """(imported specfw module, names taken from it, line) for every import in ``name``, at any depth."""
    found = []
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            found += [(alias.name, (), node.lineno) for alias in node.names if alias.name.split(".")[0] == "specfw"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..models import y
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] == "specfw":
                found.append((module, tuple(alias.name for alias in node.names), node.lineno))
    return found


@cache
def _graph() -> dict[str, set[str]]:
    """specfw module -> the specfw modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name in modules:
        edges = graph.setdefault(name, set())
        for module, names, _line in _imports(name):
            submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            edges.update(submodules or [module])
            if submodules and len(submodules) < len(names):  # also plain names from the package itself
                edges.add(module)
        edges.discard(name)
    return graph


def _cycles(nodes: set[str]) -> list[list[str]]:
    """The circles of the import graph restricted to ``nodes`` (one path per strongly connected component)."""
    graph = {n: sorted(m for m in _graph()[n] if m in nodes) for n in sorted(nodes)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer(*prefixes: str) -> set[str]:
    return {name for name in _modules() if _in(name, *prefixes)}


def test_the_parser_sees_the_layout():
    """Guards the guards: the modules and edges the other tests rely on are found."""
    modules = _modules()
    for name in ("specfw.tokenizers", "specfw.tokenizers.base", "specfw.tokenizers.registry",
                 "specfw.models.catalog", "specfw.models.store", "specfw.models.loading"):
        assert name in modules, name
    assert "specfw.models.store" in _graph()["specfw.models.catalog"]
    assert "specfw.models.catalog" in _graph()["specfw.models.loading"]
    # function-level imports count: store imports gguf_import inside import_file
    assert "specfw.models.gguf_import" in _graph()["specfw.models.store"]


def test_tokenizers_import_only_errors_and_themselves():
    """The tokenizer layer knows formats: nothing above it (models, study, serve, run, scheduler...)."""
    bad = [
        f"{name}:{line} imports {module}"
        for name in sorted(_layer("specfw.tokenizers"))
        for module, _names, line in _imports(name)
        if _in(module, "specfw.models", "specfw.study", "specfw.serve", "specfw.run", "specfw.scheduler")
        or not _in(module, "specfw.tokenizers", "specfw.errors")
    ]
    assert bad == []


@pytest.mark.parametrize(
    "lower, uppers",
    [
        ("specfw.models.store", ("specfw.models.loading", "specfw.models.catalog")),
        ("specfw.models.catalog", ("specfw.models.loading",)),
        ("specfw.models.gguf_import", ("specfw.models.store", "specfw.models.catalog", "specfw.models.loading")),
        ("specfw.models.embedded", ("specfw.models.store", "specfw.models.catalog", "specfw.models.loading")),
    ],
)
def test_model_layers_import_downward(lower, uppers):
    """The store knows files; the catalog maps names to files and tokenizers; loading sits on both."""
    bad = [f"{lower}:{line} imports {module}" for module, _names, line in _imports(lower) if _in(module, *uppers)]
    assert bad == []


def test_no_import_circle_among_models_and_tokenizers():
    assert _cycles(_layer("specfw.models", "specfw.tokenizers")) == []


def test_no_import_circle_anywhere_in_specfw():
    """The whole package is a layered graph too (the lazy imports in ``specfw/__init__`` count as edges)."""
    assert _cycles(set(_modules())) == []


def test_specfw_imports_name_what_exists():
    """``from specfw.x import y``: y is a submodule of specfw.x or defined at its top level.

    Catches an import left pointing at a moved module (it fails only when its function first runs).
    """
    modules = _modules()

    @cache
    def top_level(module: str) -> set[str]:
        names: set[str] = set()
        for node in _tree(module).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                # lazy attributes: the names a module-level __getattr__ compares its argument with
                names.update(c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str))
        return names

    bad = []
    for name in modules:
        for module, names, line in _imports(name):
            if module not in modules:
                bad.append(f"{name}:{line}: no module {module}")
                continue
            defined = top_level(module)
            for n in names:
                if f"{module}.{n}" not in modules and n != "*" and n not in defined:
                    bad.append(f"{name}:{line}: {module} has no {n}")
    assert bad == []


def test_every_module_starts_with_a_docstring():
    missing = [name for name in _modules() if not ast.get_docstring(_tree(name))]
    assert missing == []
