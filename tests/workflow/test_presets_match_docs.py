"""The paper presets and their key-by-key tables in docs/reproducing.md cannot drift apart.

Each preset is resolved as ``robustsoup config <preset>`` resolves it (the same function); every
row of its table in docs/reproducing.md (section "Preset `config/presets/<name>.yaml`") names a
dotted key, its value as YAML, a source and a status. A value that differs from the resolved
config, a key that does not exist, a row without a source or a status that is neither faithful,
ours nor deviation fails.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from robustsoup.run_config import load_config_file

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "reproducing.md"
PRESETS = ("cifar10", "imagenet")
STATUSES = ("faithful", "deviation", "ours")
# Keys that decide a table number and that each table must carry.
REQUIRED = {
    "cifar10": {
        "model.architecture", "threats.Linf", "finetune.l2.epochs", "finetune.l2.lr", "soups.weights.start",
        "soups.batchnorm", "evaluate.mode", "rws.layer_rule", "rws.layers", "rws.levels", "rws.levels_range",
        "rws.finetune.epochs", "rws.finetune.lr", "rws.finetune.schedule", "rws.finetune.batch_size",
        "distill.selection.calibration",
    },
    "imagenet": {
        "model.architecture", "threats.Linf", "finetune.l2.epochs", "data.k_adapt_per_class", "soups.search.k",
        "soups.search.step", "soups.batchnorm", "rws.layer_rule", "rws.levels_range", "rws.finetune.epochs",
        "distill.student.architecture", "distill.selection.calibration",
    },
}  # fmt: skip


def preset_table(text: str, preset: str) -> list[dict[str, str]]:
    """The rows of the table under the heading naming ``config/presets/<preset>.yaml``."""
    heading = re.search(rf"^#+ .*`config/presets/{re.escape(preset)}\.yaml`.*$", text, flags=re.M)
    if heading is None:
        raise AssertionError(f"{DOCS} has no section headed with `config/presets/{preset}.yaml`")
    rows, header = [], None
    for line in text[heading.end() :].splitlines():
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        rows.append(dict(zip(header, cells)))
    return rows


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    if match is None:
        raise AssertionError(f"expected one `code` span, found {cell!r}")
    return match.group(1)


def _lookup(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise AssertionError(f"key {dotted!r}: the resolved preset has no {part!r}")
        value = value[part]
    return value


def same(documented, resolved) -> bool:
    if isinstance(documented, bool) or isinstance(resolved, bool):
        return documented is resolved
    if isinstance(documented, (int, float)) and isinstance(resolved, (int, float)):
        return math.isclose(documented, resolved, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(documented, list) and isinstance(resolved, (list, tuple)):
        return len(documented) == len(resolved) and all(same(a, b) for a, b in zip(documented, resolved))
    if isinstance(documented, dict) and isinstance(resolved, dict):
        return documented.keys() == resolved.keys() and all(same(documented[k], resolved[k]) for k in documented)
    return documented == resolved


def mismatches(rows: list[dict[str, str]], config: dict) -> list[str]:
    problems = []
    for row in rows:
        key = _code(row["key"])
        documented = yaml.safe_load(_code(row["value"]))
        try:
            resolved = _lookup(config, key)
        except AssertionError as error:
            problems.append(str(error))
            continue
        if not same(documented, resolved):
            problems.append(f"{key}: docs say {documented!r}, the preset resolves to {resolved!r}")
        if not row.get("source"):
            problems.append(f"{key}: no source")
        if not row.get("status", "").startswith(STATUSES):
            problems.append(f"{key}: status {row.get('status')!r} is none of {STATUSES}")
        elif row["status"].startswith("deviation") and "`" not in row["status"]:
            problems.append(f"{key}: a deviation names the key that restores the reference")
    return problems


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_resolves_to_what_its_docs_table_says(preset):
    config = load_config_file(ROOT / "config" / "presets" / f"{preset}.yaml")
    rows = preset_table(DOCS.read_text(encoding="utf-8"), preset)
    keys = [_code(r["key"]) for r in rows]
    assert len(keys) == len(set(keys)), "a key has two rows"
    assert not REQUIRED[preset] - set(keys), f"rows missing for {sorted(REQUIRED[preset] - set(keys))}"
    assert mismatches(rows, config) == []


def test_the_check_fails_on_a_drifted_value():
    """The comparison itself: a changed value, a missing key and a bare deviation are each caught."""
    config = load_config_file(ROOT / "config" / "presets" / "imagenet.yaml")
    rows = preset_table(DOCS.read_text(encoding="utf-8"), "imagenet")
    k = next(r for r in rows if r["key"] == "`soups.search.k`")
    assert mismatches([k], config) == []
    drifted = {**k, "value": "`[100, 200]`"}
    assert mismatches([drifted], config) == ["soups.search.k: docs say [100, 200], the preset resolves to [1000]"]
    assert "no 'nothing'" in mismatches([{**k, "key": "`soups.nothing`"}], config)[0]
    assert "restores" in mismatches([{**k, "status": "deviation (cheaper)"}], config)[0]
    # the float ε is compared to the last digits
    assert not same(4 / 255, 0.0156862745)


def test_imagenet_preset_chooses_soups_on_1000_adaptation_images_at_step_0_1():
    config = load_config_file(ROOT / "config" / "presets" / "imagenet.yaml")
    assert config["soups"]["search"]["k"] == [1000] and config["soups"]["search"]["step"] == 0.1
    assert config["data"]["k_adapt_per_class"] * 1000 == 1000  # 1 per class × 1,000 classes
