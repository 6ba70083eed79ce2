import re
from pathlib import Path

import pytest
import yaml

from robustsoup.config import ConfigError, base_model_names, load_schema
from robustsoup.run_config import load_config_file, resolve_config

from conftest import REPO


def _walk_properties(schema, path=""):
    root = schema
    stack = [(schema, path)]
    while stack:
        node, where = stack.pop()
        for key, sub in node.get("properties", {}).items():
            yield f"{where}.{key}".lstrip("."), sub
            stack.append((sub, f"{where}.{key}"))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            stack.append((extra, f"{where}.*"))
        for name, sub in node.get("$defs", {}).items() if node is root else []:
            stack.append((sub, f"$defs.{name}"))


def test_every_schema_key_has_a_description_and_a_default():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for key, sub in _walk_properties(schema):
        assert "description" in sub or "$ref" in sub, f"{key} has no description"
        target = schema
        for part in sub.get("$ref", "#").removeprefix("#").strip("/").split("/"):
            target = target[part] if part else target
        if key.startswith("threats."):  # the data set's documented radius, filled by config._fill_threats
            continue
        assert "default" in sub or ("$ref" in sub and "default" in target), f"{key} has no default"


def test_shipped_config_resolves_and_names_its_models():
    config = load_config_file(REPO / "config" / "config.yaml")
    assert base_model_names(config) == ["linf", "linf-l2", "linf-l1", "linf-nominal"]
    assert config["finetune"]["nominal"]["norm"] == "none"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"pretrain": {"norm": "L3"}}, "'L3' is not accepted; expected 'Linf', 'L2', 'L1', 'none' or a list of"),
        ({"pretrain": {"channels_last": "yes"}}, "expected boolean or 'auto'"),
        ({"threads": 0}, "expected integer ≥ 1 or 'auto'"),
    ],
)
def test_a_value_outside_an_any_of_lists_what_is_accepted(config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(config)


def test_empty_config_takes_the_schema_defaults():
    config = resolve_config({})
    assert config["dataset"] == "digits"
    assert config["pretrain"]["epochs"] == 15 and config["pretrain"]["momentum"] == 0.9
    assert set(config["finetune"]) == {"l2", "l1", "nominal"}


def test_partial_record_keeps_its_own_defaults():
    config = resolve_config({"pretrain": {"epochs": 2}})
    assert config["pretrain"]["epochs"] == 2
    assert config["pretrain"]["schedule"] == "cosine"  # pretrain's default, not the generic piecewise-ft


def test_a_partial_finetune_map_replaces_the_default_targets():
    config = resolve_config(
        {
            "finetune": {"l2": {"norm": "L2"}},
            "soups": {"lines": [["linf", "linf-l2"]], "ensembles": [], "ternary": {"enabled": False}},
        }
    )
    assert list(config["finetune"]) == ["l2"]
    assert config["finetune"]["l2"]["epochs"] == 3


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"pretrain": {"epochs": "many"}}, "pretrain.epochs"),
        ({"pretrain": {"epocs": 3}}, "pretrain"),
        ({"evaluate": {"threats": ["Linf", "L3"]}}, "evaluate.threats.1"),
        ({"threats": {"Linf": -1}}, "threats.Linf"),
        ({"dataset": "mnist"}, "dataset"),
        ({"surprise": 1}, "<top level>"),
    ],
)
def test_bad_key_or_value_names_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        resolve_config(raw)
    assert f"config key '{key}'" in str(info.value)


def test_soup_line_over_an_unknown_model_is_refused():
    with pytest.raises(ConfigError, match="soups.lines.0.*'linf-l7' is not a model"):
        resolve_config({"soups": {"lines": [["linf", "linf-l7"]]}})


def test_unparsable_and_missing_config_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML(.|\n)*bad\.yaml\", line 2"):
        load_config_file(bad)  # the file and the line, which Snakemake's own message lacks
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(listing)


def test_ensembles_and_ternary_corners_must_be_models_of_the_run():
    with pytest.raises(ConfigError, match="soups.ensembles.0.*'linf-l7'"):
        resolve_config({"soups": {"ensembles": [["linf", "linf-l7"]]}})
    with pytest.raises(ConfigError, match="soups.ternary.models"):
        resolve_config({"soups": {"ternary": {"models": ["linf", "linf-l2", "l9"]}}})


def test_yaml_anchors_shared_by_sections_with_other_schemas_resolve(tmp_path: Path):
    """One training block reused with an alias (``*tiny``) by sections whose schemas differ: each place
    gets its own defaults (in-place filling of a shared object once leaked 'resume' into distill)."""
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "rws: {init: &tiny {epochs: 1, batch_size: 64}, finetune: *tiny}\n"
        "distill: {teacher: {training: *tiny}, student: {training: *tiny}, finetune: *tiny}\n"
    )
    config = load_config_file(path)
    assert config["rws"]["init"]["epochs"] == config["distill"]["teacher"]["training"]["epochs"] == 1
    assert config["distill"]["teacher"]["training"] is not config["rws"]["init"]
