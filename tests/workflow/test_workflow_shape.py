"""The workflow's shape (issue 13): rule → script → package function in one hop, named alike; the
.smk files hold getters, not logic; no script rebuilds a name from a path. Reads files only."""

from __future__ import annotations

import ast
import re

from conftest import REPO

RULES = REPO / "workflow" / "rules"
SCRIPTS = REPO / "workflow" / "scripts"
SNAKEFILES = [REPO / "workflow" / "Snakefile", *sorted(RULES.glob("*.smk"))]
ENTRY = re.compile(r"^(rule|checkpoint|onstart|onsuccess|onerror|include|wildcard_constraints|report)\b")


def rule_scripts() -> dict[str, str]:
    """{rule: the script it runs}, from every .smk file."""
    found = {}
    for smk in SNAKEFILES:
        text = smk.read_text()
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
            script = re.search(r"script:\s*\n\s*\"\.\./scripts/([\w.]+)\"", body)
            if script:
                found[name] = script.group(1)
    return found


def test_every_rule_runs_the_script_and_package_function_of_its_name():
    scripts = rule_scripts()
    assert len(scripts) >= 30
    for rule, script in scripts.items():
        assert script == f"{rule}.py", f"rule {rule} runs scripts/{script}"
        tree = ast.parse((SCRIPTS / script).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert rule in imported, f"scripts/{script} does not import a package function named {rule}"
    assert sorted(p.name for p in SCRIPTS.glob("*.py")) == sorted(scripts.values()), "a script no rule runs"


def test_no_script_rebuilds_a_name_from_a_path():
    for script in SCRIPTS.glob("*.py"):
        text = script.read_text()
        for pattern in (r"\bPath\(", r"\.stem\b", r"\bzip\(", r"with_suffix", r"\[-1\]", r"\[0\]"):
            assert not re.search(pattern, text), f"{script.name} rebuilds a name or folder from a path ({pattern})"


def python_lines(text: str) -> list[str]:
    """The lines of a Snakefile that are Python outside rule declarations (comments and blanks excluded)."""
    lines, in_block = [], False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ENTRY.match(line):
            in_block = line.rstrip().endswith(":")
            continue
        if in_block and line[0] in " \t":
            continue
        in_block = False
        lines.append(line)
    return lines


def test_the_snakefiles_hold_only_a_little_python():
    total = {smk.name: len(python_lines(smk.read_text())) for smk in SNAKEFILES}
    assert sum(total.values()) <= 80, total
