"""No import cycle among robustsoup's modules, counting imports inside functions (issue 27).

The graph is grimp's (import-linter's): every ``import`` statement of every module, at module
level, inside functions and under ``TYPE_CHECKING`` alike. The layers themselves are held by
import-linter's contracts in pyproject.toml (``lint-imports``). Reads source files only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The cycles of ``graph`` ({node: nodes it imports}): its strongly connected components of more
    than one node, or of one node importing itself (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(component))
    return cycles


@pytest.fixture(scope="module")
def imports() -> grimp.ImportGraph:
    return grimp.build_graph("robustsoup", cache_dir=None)


def module_graph(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules if m.startswith("robustsoup")}


def package_graph(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """The graph between ``robustsoup``'s top-level modules and subpackages (``robustsoup.data``,
    ``robustsoup.config``, …): an import between two of their modules is an import between them."""

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for importer, imported in module_graph(graph).items():
        packages.setdefault(top(importer), set()).update(top(m) for m in imported if top(m) != top(importer))
    return packages


def _explain(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    lines = []
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & set(cycle)):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"  {importer}:{detail['line_number']}  {detail['line_contents']}")
    return "\n".join(lines)


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"a"}}) == [["a"]]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) == []


def test_the_graph_counts_imports_inside_functions(imports):
    # report_distill imports its report (matplotlib) inside the function: the graph holds it.
    assert "robustsoup.distill.report" in imports.find_modules_directly_imported_by("robustsoup.distill.stages")
    details = imports.get_import_details(importer="robustsoup.distill.stages", imported="robustsoup.distill.report")
    assert any(d["line_contents"].startswith("from .report import distill_table") for d in details)


def test_no_module_imports_itself_round_a_cycle(imports):
    cycles = strongly_connected(module_graph(imports))
    assert not cycles, "import cycles among robustsoup's modules:\n" + "\n\n".join(_explain(imports, c) for c in cycles)


def test_no_package_imports_itself_round_a_cycle(imports):
    """config ↔ data would be no cycle between modules, yet the two packages could be in no order."""
    cycles = strongly_connected(package_graph(imports))
    assert not cycles, f"import cycles between robustsoup's packages: {cycles}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def function_level_imports() -> list[tuple[str, int, str]]:
    """(importer, line, robustsoup module imported) for every import of a robustsoup module inside a
    function of src/robustsoup (``from . import report`` counts as the module ``report``)."""
    found = []
    for path in sorted((SRC / "robustsoup").rglob("*.py")):
        importer = _module_name(path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        functions = [
            n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in {i for f in functions for i in ast.walk(f) if isinstance(i, ast.Import | ast.ImportFrom)}:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                targets = [f"{module}.{a.name}" if _module_file(f"{module}.{a.name}") else module for a in node.names]
            else:
                targets = [node.module]
            found += [(importer, node.lineno, t) for t in targets if t.split(".")[0] == "robustsoup"]
    return sorted(set(found))


def _imports_matplotlib(module: str) -> bool:
    tree = ast.parse(_module_file(module).read_text())
    names = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)]
    return any(name.split(".")[0] == "matplotlib" for name in names)


def test_a_module_imports_another_inside_a_function_only_to_spare_jobs_matplotlib():
    """An import inside a function is for import cost only: of robustsoup's modules, only the reports that
    import matplotlib (a third of a second) are imported late, by the one report rule of each stages module;
    anything else is imported at the top of the module, and a circle is fixed by moving code down."""
    found = function_level_imports()
    assert ("robustsoup.distill.stages", "robustsoup.distill.report") in {(i, t) for i, _, t in found}, (
        "the scan misses report_distill's import of its report: it is broken"
    )
    late = [f"{i}:{n} imports {t}" for i, n, t in found if not _imports_matplotlib(t)]
    assert not late, "imports inside functions without an import cost to spare (move them to the top):\n" + "\n".join(
        late
    )
