"""The package's floors: each subpackage imports only its own floor and the floors below it, and no two
subpackages (nor two server modules) import each other.

layers -> models -> weights, schedulers, mask_generators -> perceptual -> pipeline, train -> eval, serve, onnx -> cli.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import moebius

ROOT = Path(moebius.__file__).resolve().parent

# Floor of each top-level subpackage or module of moebius (the package's own __init__ re-exports, lazily).
FLOORS: dict[str, int] = {
    "errors": 0, "image_files": 0, "files": 0,
    "layers": 1,
    "models": 2,
    "weights": 3, "schedulers": 3, "mask_generators": 3,
    "perceptual": 4,
    "pipeline": 5, "train": 5,
    "eval": 6, "serve": 6, "onnx": 6,
    "cli": 7, "__main__": 7,
}


def _module_name(path: Path) -> str:
    parts = ("moebius",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``moebius.*`` module that ``path`` imports, anywhere in the file, as absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "moebius")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "moebius":
                continue
            for alias in node.names:  # ``from . import routes`` names a module, ``from .app import x`` a symbol
                full = f"{target}.{alias.name}"
                found.add(full if _is_module(full) else target)
    return found


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def _top(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_subpackage_has_a_floor():
    tops = {_top(name) for name in _graph()} - {None}
    assert tops <= set(FLOORS), f"give these a floor in FLOORS: {sorted(tops - set(FLOORS))}"


def test_imports_go_only_downwards():
    upward = []
    for module, imported in _graph().items():
        here = _top(module)
        if here is None:  # moebius/__init__.py: the public API's lazy re-exports
            continue
        for target in imported:
            there = _top(target)
            if there is not None and FLOORS[there] > FLOORS[here]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports from a higher floor:\n" + "\n".join(sorted(upward))


def test_train_does_not_import_pipeline():
    offenders = [m for m, imported in _graph().items() if _top(m) == "train"
                 and any(_top(t) == "pipeline" for t in imported)]
    assert not offenders


def test_subpackages_do_not_import_each_other():
    packages: dict[str, set[str]] = {}
    for module, imported in _graph().items():
        here = _top(module)
        if here is not None:
            packages.setdefault(here, set()).update(t for t in map(_top, imported) if t not in (None, here))
    assert _cycle(packages) is None, f"subpackages import each other: {' -> '.join(_cycle(packages))}"


def test_server_modules_form_no_circle():
    graph = _graph()
    serve = {m: {t for t in imported if t.startswith("moebius.serve.") and t != m}
             for m, imported in graph.items() if m.startswith("moebius.serve.")}
    assert _cycle(serve) is None, f"server modules import each other: {' -> '.join(_cycle(serve))}"


def test_the_checks_see_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
