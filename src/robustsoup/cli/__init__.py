"""``robustsoup``: the package's command line, for use outside the workflow.

    robustsoup info MODEL.safetensors            what a checkpoint is (its sidecar)
    robustsoup config [FILE]                     the resolved config, every default filled in
    robustsoup soup A.safetensors:0.8 B.safetensors:0.2 -o SOUP.safetensors
    robustsoup soup-for FOLDER A.safetensors B.safetensors … -o SOUP.safetensors   a soup for unlabelled images
    robustsoup data check --dataset NAME --root PATH   is the data where and how robustsoup reads it?

Every command calls the same functions as the workflow's rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import IMAGEFOLDER, ConfigError, config_yaml, load_config_file, threats_line
from ..data import DATASETS, DataLayoutError
from ..data.imagefolder import register_imagefolder
from ..paths import resolve_run_config
from ..weights import WeightMismatchError
from .args import parse_path_and_number
from .rws import add_rws_commands
from .soups import add_soup_for_command, check_soup_family, write_soup


def _parse_weighted(spec: str) -> tuple[Path, float]:
    return parse_path_and_number(spec, "weight", "PATH:WEIGHT (e.g. linf.safetensors:0.8)")


def cmd_info(args: argparse.Namespace) -> int:
    # load_checkpoint, not only the sidecar: a missing, truncated or swapped weights file is an error.
    meta = asdict(load_checkpoint(args.model)[1])
    if not args.history:
        meta.get("metrics", {}).pop("train_history", None)
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = load_config_file(args.file, resolve_run_config) if args.file else resolve_run_config({})
    print(config_yaml(config), end="")
    print(f"# {threats_line(config)}")
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    loaded = [load_checkpoint(path) for path, _ in args.models]
    check_soup_family(loaded)
    names = [meta.name for _, meta in loaded]
    weights = [w for _, w in args.models]
    total = sum(weights)
    if abs(total - 1.0) > 1e-6:
        print(
            f"robustsoup: warning: the weights sum to {total:g}, not 1: this is task arithmetic, not a soup "
            "(allowed; BatchNorm statistics are mixed with the same weights)",
            file=sys.stderr,
        )
    write_soup(loaded, weights, args.output, {"soup": dict(zip(names, weights))})
    print(f"wrote {args.output} = " + " + ".join(f"{w:g}·{n}" for n, w in zip(names, weights)))
    return 0


def _severities(text: str) -> list[int]:
    values = [s.strip() for s in text.split(",") if s.strip()]
    if not all(v.isdigit() and 1 <= int(v) <= 5 for v in values):
        raise ConfigError(
            f"--severities: expected comma-separated severities between 1 and 5 (e.g. 1,3,5), found {text!r}"
        )
    return [int(v) for v in values]


def cmd_data_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    corruptions = [c for c in args.corruptions.split(",") if c] if args.corruptions else None
    severities = _severities(args.severities) if args.severities else None
    dataset = args.dataset
    if dataset == IMAGEFOLDER:  # your own tree: its spec from the folder, at --resolution
        data = {"root": str(args.root) if args.root else None, "resolution": args.resolution}
        dataset = register_imagefolder({"dataset": IMAGEFOLDER, "data": data}).name
    report = check_dataset(dataset, args.root, quick=args.quick, corruptions=corruptions, severities=severities)
    print(report.text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustsoup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="print a checkpoint's sidecar")
    info.add_argument("model", type=Path)
    info.add_argument("--history", action="store_true", help="include the per-epoch training history")
    info.set_defaults(run=cmd_info)

    config = commands.add_parser("config", help="print a config with every default filled in")
    config.add_argument("file", type=Path, nargs="?")
    config.set_defaults(run=cmd_config)

    soup = commands.add_parser("soup", help="write Σ wᵢθᵢ of checkpoints of one architecture")
    soup.add_argument("models", nargs="+", type=_parse_weighted, metavar="PATH:WEIGHT")
    soup.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors (+ .json sidecar)")
    soup.set_defaults(run=cmd_soup)
    add_soup_for_command(commands)

    add_rws_commands(commands)

    data = commands.add_parser("data", help="data set tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser(
        "check", help="check that a data set is on disk in a layout robustsoup reads, and say what is there"
    )
    check.add_argument(
        "--dataset",
        required=True,
        choices=sorted({*DATASETS, IMAGEFOLDER}),
        help="registry name of the data set (imagefolder: your own tree)",
    )
    check.add_argument(
        "--resolution", type=int, default=32, help="imagefolder: the side images are brought to (data.resolution)"
    )
    check.add_argument("--root", type=Path, default=None, help="folder holding the data set (not needed for digits)")
    check.add_argument(
        "--quick",
        action="store_true",
        help="check the structure only (folders, one image per class, array shapes); no full count",
    )
    check.add_argument("--corruptions", default="", help="comma-separated corruptions that must be present (-C sets)")
    check.add_argument("--severities", default="", help="comma-separated severities to check (-C sets; default 1-5)")
    check.set_defaults(run=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CheckpointError, ConfigError, WeightMismatchError, DataLayoutError) as error:
        print(f"robustsoup: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
