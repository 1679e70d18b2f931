"""The house's rules, read from the code itself (like Ray Train's circular-import test).

Walks every module of the package with ``ast`` (imports inside functions included) and fails
on an import cycle, on an import that points up the floors (:data:`FLOORS`), on
``from raynn.x import _private`` across modules, and on a module over ``MAX_LINES`` lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "raynn"
MAX_LINES = 400

# The floors of the house (docs/DESIGN.md), top first. A module imports only from its own
# floor or the floors below; the two kinds never import each other.
FLOORS: list[tuple[str, ...]] = [
    ("raynn", "raynn.__main__", "raynn.cli", "raynn.api", "raynn.kinds", "raynn.compat",
     "raynn.bench", "raynn.submit", "raynn.joblib", "raynn.sklearn"),  # the faces
    ("raynn.kfold", "raynn.hogwild"),  # the two kinds
    ("raynn.runs",),  # the run machinery both kinds share
    ("raynn.placement",),  # placement on Ray
    ("raynn.core", "raynn.spec"),  # the pure core
    ("raynn.errors", "raynn._version"),
]  # fmt: skip
KINDS = ("raynn.kfold", "raynn.hogwild")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, str | None]]:
    """``(module imported, name taken from it or None)`` for every raynn import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name in mods]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in mods:  # a submodule
                    found.append((f"{target}.{alias.name}", None))
                elif target in mods:
                    found.append((target, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {t for t, _ in _imports(m, p, mods) if t != m} for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    # the package's __init__ is the public face: it may import anything, nothing imports it
    graph = _graph()
    users = sorted(m for m, targets in graph.items() if "raynn" in targets)
    assert not users, f"modules importing the package face `raynn` (import the module): {users}"
    assert not _cycles(graph), _cycles(graph)


def _room(module: str) -> tuple[int, str]:
    """``(floor index, top first; the floor's package)`` of a module."""
    best = max(
        ((i, p) for i, floor in enumerate(FLOORS) for p in floor if module in (p,) or
         module.startswith(p + ".")),
        key=lambda f: len(f[1]),
        default=None,
    )  # fmt: skip
    assert best is not None, f"{module} is on no floor: add its package to FLOORS"
    return best


def test_every_import_points_down_the_floors():
    bad = []
    for module, targets in _graph().items():
        floor, room = _room(module)
        for target in targets:
            t_floor, t_room = _room(target)
            if t_floor < floor or (room in KINDS and t_room in KINDS and room != t_room):
                bad.append(f"{module} -> {target}")
    assert not bad, f"imports that point up the floors (or across the kinds): {sorted(bad)}"


def test_no_private_names_imported_across_modules():
    mods = _modules()
    bad = [
        f"{m} imports {name} from {target}"
        for m, path in mods.items()
        for target, name in _imports(m, path, mods)
        if name and name.startswith("_") and not name.startswith("__") and target != m
    ]
    assert not bad, bad


def test_every_module_reads_in_one_sitting():
    long = {
        m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_ci_runs_the_readmes_lint_and_tests_in_a_fresh_virtualenv():
    readme = (REPO / "README.md").read_text().split("## Development", 1)[1]
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    lint = next(line for line in block.splitlines() if line.startswith("ruff "))
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert lint in steps, f".ci/run does not run the README's lint: {lint}"
    assert "ruff format --check" in lint  # the repo is kept format-clean, and checked
    assert "python -m pytest -q" in steps
    # an old .ci-venv is emptied first: nothing left over from an earlier install is tested
    assert any(s.startswith("python3 -m venv --clear .ci-venv") for s in steps)
