"""Configuration: read a config file, fill defaults from the JSON Schema, validate, name the bad key.

The schema (``robustsoup/schemas/config.schema.yaml``, package data; ``workflow/schemas/`` links to it) is the single source of
truth for keys, types and defaults. Its step here (:func:`_apply_schema`, with the foundations' cross-key
checks) is private to the one config reader, :func:`robustsoup.run_config.resolve_config`, which jobs, the
CLI, the findings, the workflow and the tests all call, so a bad key fails the same way everywhere, before
any job runs.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .data.registry import DATASETS, IMAGEFOLDER, dataset_name
from .errors import ConfigError
from .io import write_text_atomic

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"  # package data


# Keys that no longer exist, with what to set instead: a config that still sets one is told so, by name,
# rather than that the key is unexpected.
REMOVED_KEYS = {
    ("rws", "deploy_bits"): (
        "set rws.deploy instead: <b>bit for the b-bit signature (b in rws.bits), shallow for 32 (float32), "
        "or <L>levels (L in rws.levels)"
    ),
}


def _check_removed_keys(config: Mapping[str, Any]) -> None:
    for path, advice in REMOVED_KEYS.items():
        node: Any = config
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and path[-1] in node:
            raise ConfigError(f"config key '{'.'.join(path)}' was removed; {advice}")


def load_schema(path: str | Path | None = None) -> dict:
    """Read the JSON Schema (YAML) of the configuration."""
    schema_path = Path(path) if path is not None else SCHEMA_PATH
    if not schema_path.is_file():
        raise ConfigError(
            f"config schema not found at {schema_path}; reinstall robustsoup (pip install -e .): "
            "the schema ships inside the package (robustsoup/schemas/)"
        )
    return yaml.safe_load(schema_path.read_text(encoding="utf-8"))


def _resolve_ref(schema: dict, root: dict) -> dict:
    """Merge a local ``$ref`` (``#/$defs/...``) into the schema that holds it."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    if not ref.startswith("#/"):
        raise ConfigError(f"only local $ref are supported in the config schema, found {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve_ref(target, root))
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


def _fill_defaults(value: Any, schema: dict, root: dict) -> Any:
    schema = _resolve_ref(schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        default = schema.get("default")
        # A record (fixed properties) takes the missing keys of its own default
        # first, so that `pretrain: {epochs: 5}` keeps pretrain's other defaults.
        if properties and isinstance(default, dict):
            for key, item in default.items():
                value.setdefault(key, copy.deepcopy(item))
        for key, sub in properties.items():
            sub = _resolve_ref(sub, root)
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _fill_defaults(value[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in properties:
                    value[key] = _fill_defaults(value[key], extra, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_fill_defaults(item, schema["items"], root) for item in value]
    return value


def _allowed(schema: dict, root: dict) -> str:
    """What a (sub)schema accepts, in words: its enum values, a list of them, or its type."""
    schema = _resolve_ref(schema, root)
    if "enum" in schema:
        return ", ".join(repr(v) for v in schema["enum"])
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return f"a list of {_allowed(schema['items'], root)}"
    kind = str(schema.get("type", "a value of another kind"))
    return f"{kind} ≥ {schema['minimum']}" if "minimum" in schema else kind


def _message(error: jsonschema.ValidationError, root: dict) -> str:
    """jsonschema's message, with the accepted values spelled out where it says only 'not valid under
    any of the given schemas'."""
    if (
        error.absolute_path
        and error.absolute_path[0] == "threats"
        and error.validator in ("maximum", "exclusiveMinimum")
    ):
        hint = (
            f"; for {error.instance:g}/255 write {error.instance / 255:.7g}"
            if 1 < error.instance <= 255 and error.instance == int(error.instance)
            else ""
        )
        return (
            f"ε of L∞ must be in (0, 1] ([0,1] pixel space), found {error.instance:g}{hint}"
            if error.validator == "maximum"
            else f"ε must be above 0, found {error.instance:g}"
        )
    if error.validator in ("anyOf", "oneOf"):
        options = " or ".join(_allowed(sub, root) for sub in error.validator_value)
        return f"{error.instance!r} is not accepted; expected {options}"
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known]
        hints = [
            f"did you mean {close[0]!r} for {k!r}?" for k in extra if (close := difflib.get_close_matches(k, known, 1))
        ]
        return f"{error.message}; expected keys among {', '.join(known)}" + (f" ({' '.join(hints)})" if hints else "")
    return error.message


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _unshared(value: Any) -> Any:
    """A deep copy in which no two places share a mapping or list. YAML anchors and aliases (``&a`` /
    ``*a``) load as one object in several places, and ``copy.deepcopy`` keeps them shared: filling one
    place's defaults would then fill the others' with keys their schema forbids."""
    if isinstance(value, Mapping):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_unshared(v) for v in value]
    return copy.copy(value)


def _apply_schema(config: Mapping[str, Any] | None) -> dict:
    """A validated copy of ``config`` with every default filled in and the foundations' cross-key checks
    passed: the schema step of :func:`robustsoup.run_config.resolve_config` (the one config reader; call
    that).

    Raises :class:`ConfigError` listing every offending key with what was
    expected and what was found.
    """
    _check_removed_keys(config or {})
    schema = load_schema()
    resolved = _fill_defaults(_unshared(dict(config or {})), schema, schema)
    _fill_threats(resolved)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  - config key '{_key_path(e)}': {_message(e, schema)}" for e in errors]
        raise ConfigError(
            "invalid configuration:\n"
            + "\n".join(lines)
            + "\nSee robustsoup/schemas/config.schema.yaml (linked from workflow/schemas/) for every key, its meaning and its default."
        )
    _check_consistency(resolved)
    return resolved


def schema_defaults(*keys: str) -> Any:
    """The schema's defaults of the section at key path ``keys`` (``"soups", "search"``): what a command
    that takes no config (``robustsoup soup-for``) falls back to. Not a config reader: a config is resolved
    by :func:`robustsoup.run_config.resolve_config` only."""
    value: Any = _apply_schema({})
    for key in keys:
        value = value[key]
    return value


IMAGEFOLDER_ONLY_KEYS = ("name", "resolution", "mean", "std")


def _data_set(config: Mapping[str, Any]):
    """The registered spec of ``config["dataset"]`` (None for imagefolder or a name the schema refuses)."""
    return DATASETS.get(config.get("dataset")) if config.get("dataset") != IMAGEFOLDER else None


def _fill_threats(config: dict) -> None:
    """Fill each radius ``threats`` leaves out with the data set's documented default (none for imagefolder)."""
    spec = _data_set(config)
    threats = config.get("threats")
    if spec is not None and isinstance(threats, dict):
        for norm, eps in (spec.threats or {}).items():
            threats.setdefault(norm, eps)


def threat_bounds(resolution: int) -> dict[str, float]:
    """The largest meaningful ε of each norm at ``resolution`` pixels in [0,1] pixel space: 1 for L∞, the
    L2 and L1 norms of the all-ones image (√(3·R²), 3·R²) for L2 and L1."""
    return {"Linf": 1.0, "L2": math.sqrt(3 * resolution**2), "L1": float(3 * resolution**2)}


def _check_data_keys(config: dict) -> int:
    """The imagefolder keys of ``data``; returns the resolution the run's images have."""
    data = config["data"]
    if config["dataset"] != IMAGEFOLDER:
        given = [k for k in IMAGEFOLDER_ONLY_KEYS if data.get(k) is not None] + (
            ["augmentation"] if data.get("augmentation", {}) != {"flip": True} else []
        )
        if given:
            raise ConfigError(
                f"config key 'data.{given[0]}': applies to dataset: imagefolder only, found dataset "
                f"{config['dataset']!r}; remove it ({config['dataset']} has its own resolution, "
                "normalization and augmentation)"
            )
        return _data_set(config).resolution
    missing = [k for k in ("root", "resolution") if data.get(k) is None]
    if missing:
        raise ConfigError(
            f"config key 'data.{missing[0]}': dataset: imagefolder needs data.root (the folder holding "
            "train/<class>/* and test/<class>/*, or <class>/*) and data.resolution (the side in pixels images are "
            f"brought to, e.g. 32 or 224); missing: {', '.join('data.' + k for k in missing)}"
        )
    if (data.get("mean") is None) != (data.get("std") is None):
        raise ConfigError(
            "config key 'data.mean': give data.mean and data.std together (or neither: both are then computed "
            "from the training images)"
        )
    if dataset_name(config) in DATASETS and DATASETS[dataset_name(config)].class_names is None:
        raise ConfigError(
            f"config key 'data.name': {dataset_name(config)!r} is a built-in data set; name your ImageFolder "
            "otherwise (the name is the results folder, results/<name>/)"
        )
    return int(data["resolution"])


def _check_threats(config: dict, resolution: int) -> None:
    """Every radius present (imagefolder states them) and within :func:`threat_bounds`."""
    threats = config["threats"]
    missing = [n for n in ("Linf", "L2", "L1") if n not in threats]
    if missing:
        raise ConfigError(
            f"config key 'threats': dataset: imagefolder has no documented radii, so the config must state "
            f"every ε; missing {', '.join(missing)}. The papers' values in [0,1] pixel space are, for 32-px "
            "images (CIFAR), Linf: 0.0313725 (8/255), L2: 0.5, L1: 12, and for 224-px images (ImageNet), "
            "Linf: 0.0156863 (4/255), L2: 2.0, L1: 255"
        )
    bounds = threat_bounds(resolution)
    for norm, eps in threats.items():
        if not 0 < eps <= bounds[norm]:
            raise ConfigError(
                f"config key 'threats.{norm}': ε must be in (0, {bounds[norm]:g}] at {resolution} px (in [0,1] "
                f"pixel space{'' if norm == 'Linf' else f'; {bounds[norm]:g} is the {norm} norm of the all-ones image'}), "
                f"found {eps:g}"
                + (f"; for {eps:g}/255 write {eps / 255:.7g}" if norm == "Linf" and 1 < eps <= 255 else "")
            )


def threats_line(config: Mapping[str, Any]) -> str:
    """The resolved radii in words (what ``robustsoup config`` prints under the config), saying where
    they come from: ``threats: Linf 0.0313725 (8/255), L2 0.5, L1 12 (cifar10's documented defaults …)``."""
    spec = _data_set(config)
    documented = dict(spec.threats or {}) if spec is not None else {}
    words = []
    for norm, eps in config["threats"].items():
        fraction = eps * 255
        as_255 = f" ({round(fraction):d}/255)" if norm == "Linf" and abs(fraction - round(fraction)) < 1e-6 else ""
        words.append(f"{norm} {eps:.6g}{as_255}")
    source = "as stated in the config"
    if documented and all(config["threats"].get(n) == e for n, e in documented.items()):
        source = f"{config['dataset']}'s documented defaults, or as stated"
    return f"threats: {', '.join(words)} ({source}; ε in [0,1] pixel space)"


def _check_consistency(config: dict) -> None:
    """The foundations' checks that span several keys and that a schema cannot express (the data set, the
    radii, the parent); each study's are declared beside it (:data:`robustsoup.run_config.STUDY_CHECKS`)."""
    _check_threats(config, _check_data_keys(config))
    _check_parent(config)


def _check_parent(config: dict) -> None:
    if not isinstance(config["pretrain"]["norm"], str) or config["pretrain"]["norm"] == "none":
        raise ConfigError(
            "config key 'pretrain.norm': the parent is adversarially trained against one norm "
            f"(Linf, L2 or L1) and named after it; found {config['pretrain']['norm']!r}"
        )


def parent_name(config: Mapping[str, Any]) -> str:
    """Name of the adversarially trained parent: its norm, lower-case (``linf``)."""
    return config["pretrain"]["norm"].lower()


def finetune_names(config: Mapping[str, Any]) -> list[str]:
    """Names of the fine-tuned models, ``<parent>-<target>``, in config order."""
    parent = parent_name(config)
    return [f"{parent}-{target}" for target in config["finetune"]]


def reference_names(config: Mapping[str, Any]) -> list[str]:
    """Names of the from-scratch reference models, ``scratch-<norm>`` (``references`` in the config)."""
    return [f"scratch-{norm.lower()}" for norm in config["references"]]


def reference_norm(config: Mapping[str, Any], name: str) -> str:
    """The norm of reference model ``name`` (``scratch-l2`` → ``L2``)."""
    for norm in config["references"]:
        if f"scratch-{norm.lower()}" == name:
            return norm
    raise KeyError(f"{name!r} is not a reference model of this config; expected one of {reference_names(config)}")


def base_model_names(config: Mapping[str, Any]) -> list[str]:
    """The parent followed by its fine-tunes: the ingredients of every soup."""
    return [parent_name(config), *finetune_names(config)]


def read_config_file(path: str | Path) -> dict:
    """The mapping a YAML config file holds, as written (:func:`robustsoup.run_config.load_config_file`
    resolves it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist (relative paths are from the working directory); "
            "give the path of a YAML config file, e.g. config/config.yaml"
        )
    try:
        with path.open(encoding="utf-8") as stream:  # a stream, so that a syntax error names the file
            raw = yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {path} is not valid YAML: {exc}\nExpected one 'key: value' per line, nested by spaces; "
            "fix the YAML where it points (tabs and unclosed brackets are the usual causes)"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected a YAML file in UTF-8: "
            "save it as UTF-8"
        ) from exc
    if raw is None:
        raise ConfigError(
            f"config file {path} is empty (or only comments); expected a mapping of keys such as 'dataset: digits'. "
            "Write the keys you want to set (`robustsoup config` prints every key with its default), or run "
            "without --configfile for the default run"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, found {type(raw).__name__}; write one key per "
            "line, e.g. 'dataset: digits'"
        )
    return raw


def config_yaml(config: Mapping) -> str:
    """A resolved config as YAML, keys in schema order, closed by a comment giving the radii in words
    (:func:`threats_line`): what ``robustsoup config`` prints and what every run writes to
    ``results/<dataset>/config.resolved.yaml``, byte for byte."""
    text = yaml.safe_dump(dict(config), sort_keys=False)
    return text + f"# {threats_line(config)}\n" if config.get("threats") else text


def write_resolved_config(config: Mapping, path: str | Path) -> Path:
    """Write the run's resolved config (:func:`config_yaml`) atomically to ``path``."""
    write_text_atomic(path, config_yaml(config))
    return Path(path)


def training_sections(config: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """Every training section of a resolved config, by its key path (``finetune.l2``): the sections with a
    ``gpus`` key, the trainings that launch ranks (``pretrain``, each ``finetune`` target, ``rws.init``,
    ``rws.finetune``, ``distill.teacher.training``, ``distill.student.training``, ``distill.distillation``,
    ``distill.finetune``). All but ``distill.distillation`` are the schema's ``$defs/training``, what
    :func:`robustsoup.train.run.settings_from` reads; the checks of ``nodes`` and ``gpus`` walk them all."""
    found: dict[str, Mapping[str, Any]] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            path = f"{prefix}{key}"
            if "gpus" in value:
                found[path] = value
            found |= training_sections(value, f"{path}.")
    return found
