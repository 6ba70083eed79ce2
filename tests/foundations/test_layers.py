"""No import cycle among robustsoup's modules, counting imports inside functions (issue 27).

The graph is grimp's (import-linter's): every ``import`` statement of every module, at module
level, inside functions and under ``TYPE_CHECKING`` alike. The layers themselves are held by
import-linter's contracts in pyproject.toml (``lint-imports``). Reads source files only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grimp
import pytest


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
    # _DecodedBatches.__init__ imports FileSource inside the function: the graph holds it.
    assert "robustsoup.data.sources" in imports.find_modules_directly_imported_by("robustsoup.data.loading")
    details = imports.get_import_details(importer="robustsoup.data.loading", imported="robustsoup.data.sources")
    assert any(d["line_contents"].startswith("from .sources import FileSource") for d in details)


def test_no_module_imports_itself_round_a_cycle(imports):
    cycles = strongly_connected(module_graph(imports))
    assert not cycles, "import cycles among robustsoup's modules:\n" + "\n\n".join(_explain(imports, c) for c in cycles)


def test_no_package_imports_itself_round_a_cycle(imports):
    """config ↔ data would be no cycle between modules, yet the two packages could be in no order."""
    cycles = strongly_connected(package_graph(imports))
    assert not cycles, f"import cycles between robustsoup's packages: {cycles}"
