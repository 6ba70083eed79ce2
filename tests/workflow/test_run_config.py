"""robustsoup.run_config: the one config reader, with each study's checks in one registry; and every rule's
rerun keys declared by exactly one owner beside it (robustsoup.rerun dispatches; torch-free)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import robustsoup.config
import robustsoup.paths
from robustsoup.config import ConfigError
from robustsoup.data.rerun import DATA_RULES
from robustsoup.distill.config import DISTILL_CHECKS, DISTILL_RULES
from robustsoup.evaluate.rerun import EVALUATION_RULES
from robustsoup.lp.config import LP_RULES
from robustsoup.paths import RunPaths
from robustsoup.run_config import STUDY_CHECKS, resolve_config
from robustsoup.rws.config import RWS_CHECKS, RWS_RULES
from robustsoup.soups.config import SOUPS_CHECKS, SOUPS_RULES

REPO = Path(__file__).resolve().parents[2]
OWNERS = (DATA_RULES, EVALUATION_RULES, LP_RULES, SOUPS_RULES, RWS_RULES, DISTILL_RULES)


def test_there_is_one_public_config_reader():
    """Only run_config resolves: config keeps its schema step private, paths resolves nothing, and no other
    module calls the schema step."""
    assert not hasattr(robustsoup.config, "resolve_config") and not hasattr(robustsoup.paths, "resolve_run_config")
    callers = [
        str(path.relative_to(REPO))
        for path in (REPO / "src" / "robustsoup").rglob("*.py")
        if "_apply_schema" in path.read_text() and path.name not in ("config.py", "run_config.py")
    ]
    assert callers == []
    for name in ("check_device", "check_nodes", "check_external_files", "gpus", "nodes", "training_context"):
        assert not hasattr(RunPaths, name), f"RunPaths.{name}: paths names artifacts only"


def test_each_study_checks_are_declared_beside_it_and_skipped_when_disabled():
    assert STUDY_CHECKS == {"soups": SOUPS_CHECKS, "rws": RWS_CHECKS, "distill": DISTILL_CHECKS}
    # rws.severities defaults to [5], which data.severities [1, 3] lacks: an error only when RWS runs.
    with pytest.raises(ConfigError, match=r"rws\.severities"):
        resolve_config({"data": {"severities": [1, 3]}})
    assert resolve_config({"data": {"severities": [1, 3]}, "rws": {"enabled": False}})["rws"]["enabled"] is False
    bad = {"student": {"training": {"epochs": 0}}}  # 0 epochs needs pretrained weights
    with pytest.raises(ConfigError, match=r"distill\.student\.training\.epochs"):
        resolve_config({"distill": bad})
    resolve_config({"distill": {**bad, "enabled": False}})
    with pytest.raises(ConfigError, match=r"'soups\.lines\.0': model 'linf-l7' is not a model of this run"):
        resolve_config({"soups": {"lines": [["linf", "linf-l7"]]}})  # the soups have no switch


def test_the_reader_fills_seeds_and_resolves_a_resolved_config_to_itself():
    config = resolve_config({"seed": 3})
    assert config["seeds"] == [3] and resolve_config(config) == config


def test_every_rule_with_rerun_keys_has_exactly_one_owner():
    declared = [rule for rules in OWNERS for rule in rules]
    assert len(declared) == len(set(declared))
    used = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r"P\.rerun\(\"(\w+)\"", smk.read_text()))
    assert used == set(declared)
    p = RunPaths(resolve_config({}), 0)
    assert all(p.rerun(rule, "l2") for rule in declared if rule not in ("prepare_shift", "train_rws_model"))
    off = RunPaths(resolve_config({"rws": {"enabled": False}, "distill": {"enabled": False}}), 0)
    for rule in (*RWS_RULES, *DISTILL_RULES):  # a disabled study's rules have no rerun keys
        with pytest.raises(KeyError, match="no rerun keys"):
            off.rerun(rule)
