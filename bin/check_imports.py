"""Import checks import-linter's contracts do not make, run by ``make lint``.

1. No import cycle between modules: the module graph of ``campaigns``, ``tracker`` and
   ``postbacks`` (built by grimp, as import-linter builds it; ``TYPE_CHECKING`` imports left
   out, since they never run) has no strongly connected component of two modules or more.
2. No import of a project module placed inside a function, the usual way to dodge a
   cycle; an ``AppConfig.ready()`` is the one place allowed (Django loads it after every
   model, which is where signal wiring and the apps' plug-ins belong).
3. Every module has a floor: it is (in) a domain module or a screen of the contract
   ``domain-imports-no-screen`` in ``pyproject.toml``, or project wiring (:data:`WIRING`).
   A new module nobody placed would escape the contracts.

Prints each problem and exits 1 when there is any, 0 otherwise.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grimp

PACKAGES = ("campaigns", "tracker", "postbacks")
ROOT = Path(__file__).resolve().parent.parent
CONTRACT = "domain-imports-no-screen"
# Entry points and configuration: above the domain, outside the screens' contracts.
WIRING = (
    *PACKAGES,
    "tracker.settings",
    "tracker.urls",
    "tracker.wsgi",
    "tracker.asgi",
    "campaigns.migrations",
    "tracker.migrations",
    "postbacks.migrations",
    "tracker.management",
    "postbacks.management",
)


def unplaced(modules: set[str]) -> list[str]:
    """The modules that are neither domain nor screen in :data:`CONTRACT`, nor wiring."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == CONTRACT)
    placed = (*contract["source_modules"], *contract["forbidden_modules"])
    return sorted(
        module
        for module in modules
        if module not in WIRING
        and not any(module == top or module.startswith(f"{top}.") for top in placed)
        and not any(module.startswith(f"{top}.") for top in WIRING if top not in PACKAGES)
    )


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _is_ready(function: ast.FunctionDef | ast.AsyncFunctionDef, parents: list[ast.AST]) -> bool:
    return function.name == "ready" and any(
        isinstance(node, ast.ClassDef)
        and any(
            getattr(base, "id", getattr(base, "attr", "")) == "AppConfig" for base in node.bases
        )
        for node in parents
    )


def local_imports(path: Path) -> Iterator[str]:
    """``path:line`` and the import, for each project import inside a function of ``path``
    (but an ``AppConfig.ready()``)."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def visit(node: ast.AST, parents: list[ast.AST], function: ast.AST | None) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = None if _is_ready(child, [*parents, node]) else child
            if function is not None and isinstance(child, ast.Import | ast.ImportFrom):
                names = (
                    [alias.name for alias in child.names]
                    if isinstance(child, ast.Import)
                    else ["." * child.level + (child.module or "")]
                )
                if any(name.startswith(".") or name.split(".")[0] in PACKAGES for name in names):
                    yield f"{path.relative_to(ROOT)}:{child.lineno}: {ast.unparse(child)}"
            yield from visit(child, [*parents, node], inner)

    yield from visit(tree, [], None)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    problems = [f"Import cycle: {' <-> '.join(component)}" for component in cycles(graph)]
    problems += [
        f"No floor for {module}: add it to the domain or the screens of {CONTRACT}"
        for module in unplaced(set(graph.modules))
    ]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                problems += [f"Import inside a function: {line}" for line in local_imports(path)]
    for problem in problems:
        print(problem)
    if not problems:
        print(
            f"No import cycle among {len(graph.modules)} modules, no import inside a function,"
            " every module placed."
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
