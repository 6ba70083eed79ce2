"""The bad-input corpus: one row per bad input a person may give robustsoup (issue 26).

Each row runs one command in-process (``robustsoup.cli.main``; ``call:`` rows run a function the
workflow runs at parse time or in a rule) on the files of ``world.py`` and asserts

1. the exit code;
2. no traceback in stdout or stderr;
3. a message that names the key or file (``names``), what was expected (``expected``) and what to do
   (``advice``): three case-insensitive substrings of stderr;
4. no file written or changed under the world folder, except the outputs a row names in ``writes``
   (rows where the input is accepted with a warning, e.g. ``--allow-unrelated``).

Adding a case is adding a row. ``{w}`` is the world folder. The issue's numbered problems are
marked ``#N`` in the rows' ids (problem 2, 7 and the report's are other helpers').
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from robustsoup.cli import main

W = "{w}"


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # the command line after `robustsoup`, split on spaces; or "call:<name> <args>"
    code: int
    names: str  # the key or file the message names
    expected: str  # what was expected
    advice: str  # what to do
    writes: tuple[str, ...] = ()


C = Case
CASES = [
    # ---- info: missing and damaged checkpoints
    C("info-missing", "info {w}/nope.safetensors", 2, "nope.safetensors", "expected a .safetensors", "sidecar beside"),
    C("info-folder", "info {w}/images", 2, "images", "expected a .safetensors", "sidecar beside"),
    C("info-no-sidecar", "info {w}/nosidecar.safetensors", 2, "nosidecar.json", "expected it beside", "sidecar"),
    C("info-truncated", "info {w}/truncated.safetensors", 2, "truncated.safetensors", "truncated", "restore it"),
    C("info-replaced", "info {w}/replaced.safetensors", 2, "replaced.safetensors", "sidecar says", "restore it"),
    C("info-not-json", "info {w}/notjson.safetensors", 2, "notjson.json", "not valid JSON", "restore it"),
    C("info-not-utf8", "info {w}/notutf8.safetensors", 2, "notutf8.json", "expected the JSON", "restore it"),
    C("info-format", "info {w}/wrongformat.safetensors", 2, "wrongformat.json", "expected format", "restore it"),
    C("info-field", "info {w}/nofield.safetensors", 2, "nofield.json", "architecture", "restore it"),
    C("info-no-hash-#3", "info {w}/nohash.safetensors", 2, "nohash.json", "weights_sha256", "--trust-unverified"),
    C("info-pt-file", "info {w}/file.txt", 2, "file.json", "expected it beside", "sidecar"),
    # ---- soup
    C(
        "soup-unrelated-#1",
        "soup {w}/a.safetensors:0.5 {w}/stranger.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "stranger",
        "common ancestor",
        "--allow-unrelated",
    ),
    C(
        "soup-unrelated-3",
        "soup {w}/a.safetensors:0.4 {w}/b.safetensors:0.3 {w}/stranger.safetensors:0.3 -o {w}/out.safetensors",
        2,
        "stranger",
        "common ancestor",
        "--allow-unrelated",
    ),
    C(
        "soup-overwrites-input-#4",
        "soup {w}/a.safetensors:0.5 {w}/b.safetensors:0.5 -o {w}/a.safetensors",
        2,
        "a.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "soup-overwrites-second",
        "soup {w}/a.safetensors:0.5 {w}/b.safetensors:0.5 -o {w}/./b.safetensors",
        2,
        "b.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "soup-output-json",
        "soup {w}/a.safetensors:0.5 {w}/b.safetensors:0.5 -o {w}/a.json",
        2,
        "a.json",
        "expected a .safetensors path",
        "give e.g.",
    ),
    C(
        "soup-output-pt",
        "soup {w}/a.safetensors:0.5 {w}/b.safetensors:0.5 -o {w}/soup.pt",
        2,
        "soup.pt",
        "expected a .safetensors path",
        "give e.g.",
    ),
    C(
        "soup-output-folder",
        "soup {w}/a.safetensors:0.5 {w}/b.safetensors:0.5 -o {w}/no/such/soup.safetensors",
        2,
        "no/such",
        "does not exist",
        "create it",
    ),
    C(
        "soup-weight-text",
        "soup {w}/a.safetensors:half {w}/b.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "half",
        "PATH:WEIGHT",
        "e.g.",
    ),
    C(
        "soup-no-colon",
        "soup {w}/a.safetensors {w}/b.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "a.safetensors",
        "PATH:WEIGHT",
        "e.g.",
    ),
    C("soup-no-output", "soup {w}/a.safetensors:0.5 {w}/b.safetensors:0.5", 2, "-o", "required", "usage"),
    C(
        "soup-other-width",
        "soup {w}/a.safetensors:0.5 {w}/wide.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "wide",
        "one architecture",
        "choose",
    ),
    C(
        "soup-other-data",
        "soup {w}/a.safetensors:0.5 {w}/cifar.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "cifar",
        "must share the data set",
        "choose",
    ),
    C(
        "soup-missing",
        "soup {w}/a.safetensors:0.5 {w}/gone.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "gone.safetensors",
        "does not exist",
        "sidecar beside",
    ),
    C(
        "soup-no-hash-#3",
        "soup {w}/a.safetensors:0.5 {w}/nohash.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "nohash.json",
        "weights_sha256",
        "--trust-unverified",
    ),
    C(
        "soup-truncated",
        "soup {w}/a.safetensors:0.5 {w}/truncated.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "truncated.safetensors",
        "truncated",
        "restore it",
    ),
    C(
        "soup-nan-weight",
        "soup {w}/a.safetensors:nan {w}/b.safetensors:0.5 -o {w}/out.safetensors",
        2,
        "nan",
        "finite",
        "e.g.",
    ),
    C(
        "soup-allowed-unrelated-warns-#1",
        "soup {w}/a.safetensors:0.5 {w}/stranger.safetensors:0.5 -o {w}/out.safetensors --allow-unrelated",
        0,
        "stranger",
        "random init, seed 0",
        "mixing them anyway",
        ("out.safetensors", "out.json"),
    ),
    C(
        "soup-trusted-unverified-warns-#3",
        "soup {w}/a.safetensors:0.5 {w}/nohash.safetensors:0.5 -o {w}/out.safetensors --trust-unverified",
        0,
        "nohash.safetensors",
        "weights_sha256",
        "unverified",
        ("out.safetensors", "out.json"),
    ),
    # ---- soup-for
    C(
        "soupfor-cuda-#6",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --device cuda",
        2,
        "--device cuda",
        "no CUDA device",
        "--device cpu",
    ),
    C(
        "soupfor-gpu-#6",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --device gpu",
        2,
        "--device gpu",
        "expected cpu, cuda",
        "--device cpu",
    ),
    C(
        "soupfor-cuda-index",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --device cuda:3",
        2,
        "--device cuda:3",
        "no CUDA device",
        "--device cpu",
    ),
    C(
        "soupfor-mps",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --device mps",
        2,
        "--device mps",
        "expected cpu, cuda",
        "--device cpu",
    ),
    C(
        "soupfor-one-model",
        "soup-for {w}/images {w}/a.safetensors -o {w}/out.safetensors",
        2,
        "soup-for",
        "at least two checkpoints",
        "MODEL MODEL",
    ),
    C(
        "soupfor-missing-folder",
        "soup-for {w}/nowhere {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors",
        2,
        "nowhere",
        "does not exist",
        "give a folder of images",
    ),
    C(
        "soupfor-file-not-folder",
        "soup-for {w}/file.txt {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors",
        2,
        "file.txt",
        "not a folder",
        "give a folder of images",
    ),
    C(
        "soupfor-empty-folder",
        "soup-for {w}/empty {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors",
        2,
        "empty",
        "expected images",
        "at any depth",
    ),
    C(
        "soupfor-no-images",
        "soup-for {w}/notes {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors",
        2,
        "notes",
        "expected images",
        "at any depth",
    ),
    C(
        "soupfor-unrelated-#1",
        "soup-for {w}/images {w}/a.safetensors {w}/stranger.safetensors -o {w}/out.safetensors",
        2,
        "stranger",
        "common ancestor",
        "--allow-unrelated",
    ),
    C(
        "soupfor-overwrites-input-#4",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/b.safetensors",
        2,
        "b.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "soupfor-threshold",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --threshold 1.5",
        2,
        "--threshold",
        "between 0 and 1",
        "e.g.",
    ),
    C(
        "soupfor-extend",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --extend -1",
        2,
        "--extend",
        "expected 0 or more",
        "e.g.",
    ),
    C(
        "soupfor-max-images",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --max-images -3",
        2,
        "--max-images",
        "expected 0 (all) or a positive count",
        "e.g.",
    ),
    C(
        "soupfor-step",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --step 0",
        2,
        "--step",
        "expected",
        "e.g.",
    ),
    C(
        "soupfor-step-text",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --step fine",
        2,
        "--step",
        "invalid float value",
        "usage",
    ),
    C(
        "soupfor-fallback",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --fallback c",
        2,
        "--fallback",
        "none of the checkpoints given",
        "name one of",
    ),
    C(
        "soupfor-twice",
        "soup-for {w}/images {w}/a.safetensors {w}/a.safetensors -o {w}/out.safetensors",
        2,
        "'a'",
        "share the name",
        "give each base model once",
    ),
    C(
        "soupfor-method",
        "soup-for {w}/images {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --method vote",
        2,
        "--method",
        "invalid choice",
        "choose from",
    ),
    C(
        "soupfor-no-hash-#3",
        "soup-for {w}/images {w}/a.safetensors {w}/nohash.safetensors -o {w}/out.safetensors",
        2,
        "nohash.json",
        "weights_sha256",
        "--trust-unverified",
    ),
    C(
        "soupfor-other-width",
        "soup-for {w}/images {w}/a.safetensors {w}/wide.safetensors -o {w}/out.safetensors",
        2,
        "wide",
        "one architecture",
        "choose",
    ),
    C(
        "soupfor-photos-warn-#10",
        "soup-for {w}/photos {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --step 0.5",
        0,
        "photos",
        "do not look like digits",
        "check that the folder",
        ("out.safetensors", "out.json"),
    ),
    C(
        "soupfor-large-warn-#10",
        "soup-for {w}/large {w}/a.safetensors {w}/b.safetensors -o {w}/out.safetensors --step 0.5",
        0,
        "large",
        "trained at 32 px",
        "give images of the shift",
        ("out.safetensors", "out.json"),
    ),
    # ---- patch / unpatch
    C(
        "patch-overwrites-model-#4",
        "patch {w}/a.safetensors --rws {w}/fog.safetensors:1 -o {w}/a.safetensors",
        2,
        "a.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "patch-overwrites-signature",
        "patch {w}/a.safetensors --rws {w}/fog.safetensors:1 -o {w}/fog.safetensors",
        2,
        "fog.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "patch-companion-overwrites-model",
        "patch {w}/patched.unpatch.safetensors --rws {w}/fog.safetensors:1 -o {w}/patched.safetensors",
        2,
        "patched.unpatch.safetensors",
        "input of this command",
        "choose another",
    ),
    C(
        "patch-unrelated-#1",
        "patch {w}/stranger.safetensors --rws {w}/fog.safetensors:1 -o {w}/out.safetensors",
        2,
        "stranger",
        "share no trained ancestor",
        "--allow-unrelated",
    ),
    C(
        "patch-missing-signature",
        "patch {w}/a.safetensors --rws {w}/rain.safetensors:1 -o {w}/out.safetensors",
        2,
        "rain.safetensors",
        "does not exist",
        "give the",
    ),
    C(
        "patch-lambda-text",
        "patch {w}/a.safetensors --rws {w}/fog.safetensors:strong -o {w}/out.safetensors",
        2,
        "strong",
        "SIGNATURE:LAMBDA",
        "e.g.",
    ),
    C(
        "patch-checkpoint-as-signature",
        "patch {w}/a.safetensors --rws {w}/b.safetensors:1 -o {w}/out.safetensors",
        2,
        "b.json",
        "expected format",
        "signature",
    ),
    C(
        "patch-no-hash-#3",
        "patch {w}/nohash.safetensors --rws {w}/fog.safetensors:1 -o {w}/out.safetensors",
        2,
        "nohash.json",
        "weights_sha256",
        "--trust-unverified",
    ),
    C(
        "patch-other-width",
        "patch {w}/wide.safetensors --rws {w}/fog.safetensors:1 -o {w}/out.safetensors",
        2,
        "wide",
        "width",
        "signature",
    ),
    C("patch-no-rws", "patch {w}/a.safetensors -o {w}/out.safetensors", 2, "--rws", "required", "usage"),
    C(
        "patch-again-#5",
        "patch {w}/b.safetensors --rws {w}/fog.safetensors:1 -o {w}/out.safetensors",
        0,
        "rws-fog",
        "share the ancestor",
        "transfer table",
        ("out.safetensors", "out.json", "out.unpatch.safetensors"),
    ),
    C(
        "unpatch-not-patched",
        "unpatch {w}/a.safetensors -o {w}/out.safetensors",
        2,
        "a.safetensors",
        "not a patched checkpoint",
        "robustsoup patch",
    ),
    C(
        "unpatch-overwrites-input-#4",
        "unpatch {w}/patched.safetensors -o {w}/patched.safetensors",
        2,
        "patched.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "unpatch-overwrites-companion",
        "unpatch {w}/patched.safetensors -o {w}/patched.unpatch.safetensors",
        2,
        "patched.unpatch.safetensors",
        "input of this command",
        "choose another output",
    ),
    C(
        "unpatch-no-companion",
        "unpatch {w}/lonely.safetensors -o {w}/out.safetensors",
        2,
        "lonely.unpatch.safetensors",
        "is missing",
        "beside",
    ),
    C(
        "unpatch-wrong-companion",
        "unpatch {w}/mixed.safetensors -o {w}/out.safetensors",
        2,
        "mixed.safetensors",
        "another patch",
        "companion",
    ),
    # ---- config
    C("config-empty-#9", "config {w}/empty.yaml", 2, "empty.yaml", "expected a mapping", "robustsoup config"),
    C("config-comments-#9", "config {w}/comments.yaml", 2, "comments.yaml", "expected a mapping", "robustsoup config"),
    C("config-missing", "config {w}/nope.yaml", 2, "nope.yaml", "does not exist", "give the path"),
    C("config-invalid-yaml", "config {w}/invalid.yaml", 2, "invalid.yaml", "not valid YAML", "fix the YAML"),
    C("config-tab", "config {w}/tab.yaml", 2, "tab.yaml", "not valid YAML", "fix the YAML"),
    C("config-not-utf8", "config {w}/notutf8.yaml", 2, "notutf8.yaml", "UTF-8", "save it"),
    C("config-list", "config {w}/list.yaml", 2, "list.yaml", "must hold a mapping", "dataset: digits"),
    C("config-unknown-key", "config {w}/unknown.yaml", 2, "datset", "expected keys among", "did you mean 'dataset'"),
    C("config-seed", "config {w}/seed.yaml", 2, "'seed'", "minimum of 0", "config.schema.yaml"),
    C("config-dataset", "config {w}/dataset.yaml", 2, "'dataset'", "digits", "config.schema.yaml"),
    C("config-device", "config {w}/device.yaml", 2, "'device'", "cuda", "config.schema.yaml"),
    C("config-epochs", "config {w}/epochs.yaml", 2, "pretrain.epochs", "integer", "config.schema.yaml"),
    C("config-norm", "config {w}/norm.yaml", 2, "pretrain.norm", "expected", "config.schema.yaml"),
    C("config-line", "config {w}/line.yaml", 2, "soups.lines", "linf-l3", "expected"),
    C("config-threat-name", "config {w}/threat.yaml", 2, "'threats'", "expected keys among linf", "config.schema.yaml"),
    C("config-linf-8-#2", "config {w}/linf8.yaml", 2, "threats.Linf", "must be in (0, 1]", "for 8/255 write"),
    C("config-linf-1.5-#2", "config {w}/linf15.yaml", 2, "threats.Linf", "must be in (0, 1]", "config.schema.yaml"),
    C("config-l2-beyond-image", "config {w}/l2big.yaml", 2, "threats.L2", "must be in (0, 55.4256]", "all-ones image"),
    C("config-l1-zero", "config {w}/l1zero.yaml", 2, "threats.L1", "above 0", "config.schema.yaml"),
    C("config-own-data-radii", "config {w}/ownradii.yaml", 2, "'threats'", "must state every", "for 32-px images"),
    C(
        "preset-roots-#9",
        "call:preset_data config/presets/imagenet.yaml",
        2,
        "data.shifts.imagenet-c",
        "8 of the 8 data roots",
        "robustsoup data check",
    ),
    # ---- data check
    C(
        "data-fogg-#9",
        "data check --dataset cifar10-c --root {w}/nowhere --corruptions fogg",
        2,
        "fogg",
        "expected names from",
        "--corruptions fog,contrast",
    ),
    C(
        "data-fogg-list",
        "data check --dataset cifar10-c --root {w}/nowhere --corruptions fog,,snoww",
        2,
        "snoww",
        "expected names from",
        "--corruptions fog,contrast",
    ),
    C(
        "data-severity",
        "data check --dataset cifar10-c --root {w}/nowhere --severities 1,7",
        2,
        "--severities",
        "between 1 and 5",
        "e.g. 1,3,5",
    ),
    C("data-unknown-set", "data check --dataset mnist", 2, "--dataset", "invalid choice", "choose from"),
    C("data-no-root", "data check --dataset cifar10", 2, "cifar10", "no data root was given", "--root"),
    C("data-root-missing", "data check --dataset cifar10 --root {w}/nowhere", 2, "nowhere", "Expected layout", "ROOT/"),
    C(
        "data-root-file",
        "data check --dataset cifar10 --root {w}/file.txt",
        2,
        "file.txt",
        "not a folder",
        "Expected layout",
    ),
    C(
        "data-root-wrong-layout",
        "data check --dataset cifar10 --root {w}/images",
        2,
        "images",
        "Expected layout",
        "ROOT/",
    ),
    # ---- the workflow's soup rules on unrelated models
    C(
        "rule-make-soup-unrelated-#1",
        "call:make_soup a stranger",
        2,
        "stranger",
        "common ancestor",
        "allow_unrelated: true",
    ),
    C(
        "rule-select-soups-unrelated-#1",
        "call:soup_states a stranger",
        2,
        "stranger",
        "common ancestor",
        "allow_unrelated: true",
    ),
    # ---- no command, unknown command
    C("no-command", "", 2, "command", "required", "usage"),
    C("unknown-command", "mix {w}/a.safetensors", 2, "mix", "invalid choice", "choose from"),
]


def _files(root: Path) -> dict[str, str]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _call(name: str, args: list[str], w: Path) -> int:
    """The workflow's functions a ``call:`` row runs; a ConfigError / CheckpointError is exit 2 with its message
    on stderr, as the workflow shows it."""
    import sys

    from robustsoup.checkpoint import CheckpointError
    from robustsoup.config import ConfigError

    try:
        if name == "preset_data":
            from robustsoup.data.check import check_run_data
            from robustsoup.run_config import load_config_file

            check_run_data(load_config_file(Path(__file__).parents[2] / args[0]))
        elif name in ("make_soup", "soup_states"):
            from robustsoup.run_config import resolve_config

            config = resolve_config({"model": {"width": 4}, "soups": {"lines": []}})
            config["finetune"] = {"l2": config["finetune"]["l2"]}  # base models: linf and linf-l2
            paths = {base: str(w / f"{n}.safetensors") for base, n in zip(("linf", "linf-l2"), args)}
            if name == "make_soup":
                from robustsoup.soups.stages import make_soup

                make_soup(config, "soup", {"linf": 0.5, "linf-l2": 0.5}, paths, None, w / "out.safetensors")
            else:
                from robustsoup.soups.stages import _load_states

                _load_states(config, paths)
        return 0
    except (ConfigError, CheckpointError) as error:
        print(f"robustsoup: error: {error}", file=sys.stderr)
        return 2


def _run(case: Case, w: Path) -> tuple[int, str, str]:
    text = case.argv.replace(W, str(w))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if text.startswith("call:"):
                name, *args = text.removeprefix("call:").split()
                code = _call(name, args, w)
            else:
                code = main(text.split())
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def test_the_corpus_is_large_and_distinct():
    assert len(CASES) >= 70
    assert len({c.id for c in CASES}) == len(CASES), "case ids repeat"
    assert len({c.argv for c in CASES}) == len(CASES), "two rows run the same command"
    problems = {n for c in CASES for n in range(1, 11) if f"-#{n}" in c.id}
    assert problems >= {1, 3, 4, 5, 6, 8, 9, 10} - {8}  # 8 (pipe, Ctrl-C) is test_pipe_and_interrupt.py's


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: Path, monkeypatch):
    monkeypatch.chdir(world)
    before = _files(world)
    code, out, err = _run(case, world)
    try:
        assert code == case.code, f"exit {code}, expected {case.code}"
        assert "Traceback" not in out + err
        low = err.lower()
        for what in ("names", "expected", "advice"):
            assert getattr(case, what).lower() in low, f"the message lacks {what} {getattr(case, what)!r}"
        after = _files(world)
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        assert changed == set(case.writes), f"files written or changed: {sorted(changed)}"
    finally:
        for name in case.writes:
            (world / name).unlink(missing_ok=True)
    if code != 0:
        assert err.count("robustsoup: error:") <= 1 or "usage:" in err
