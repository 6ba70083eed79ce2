"""``robustsoup``: the package's command line, for use outside the workflow.

    robustsoup info MODEL.safetensors            what a checkpoint is (its sidecar)
    robustsoup config [FILE]                     the resolved config, every default filled in
    robustsoup soup A.safetensors:0.8 B.safetensors:0.2 -o SOUP.safetensors
    robustsoup soup-for FOLDER A.safetensors B.safetensors … -o SOUP.safetensors   a soup for unlabelled images
    robustsoup data check --dataset NAME --root PATH   is the data where and how robustsoup reads it?
    robustsoup findings RESULTS_DIR              the papers' claims F1–F5 as verdicts, from a run's folder

Every command calls the same functions as the workflow's rules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import IMAGEFOLDER, ConfigError, config_yaml
from ..data import DATASETS, DataLayoutError
from ..data.check import check_dataset
from ..data.corruptions import CORRUPTIONS
from ..data.imagefolder import IMAGEFOLDER_C, register_imagefolder, register_imagefolder_c_at
from ..lineage import CLI_ADVICE, check_related
from ..run_config import load_config_file, resolve_config
from ..soups.grid import mixture_text
from ..soups.mixing import check_soup_family, write_soup
from ..weights import WeightMismatchError
from .args import UsageError, check_output, parse_path_and_number, warn
from .findings import add_findings_command
from .rws import add_rws_commands
from .soups import add_soup_for_command


def _parse_weighted(spec: str) -> tuple[Path, float]:
    return parse_path_and_number(spec, "weight", "PATH:WEIGHT (e.g. linf.safetensors:0.8)")


def cmd_info(args: argparse.Namespace) -> int:
    # load_checkpoint, not only the sidecar: a missing, truncated or swapped weights file is an error.
    meta = asdict(load_checkpoint(args.model, trust_unverified=args.trust_unverified, warn=warn)[1])
    if not args.history:
        meta.get("metrics", {}).pop("train_history", None)
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = load_config_file(args.file) if args.file else resolve_config({})
    print(config_yaml(config), end="")  # the radii in words close it
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    inputs = [path for path, _ in args.models]
    check_output("-o", args.output, inputs)
    loaded = [load_checkpoint(path, trust_unverified=args.trust_unverified, warn=warn) for path in inputs]
    check_soup_family(loaded)
    check_related([meta for _, meta in loaded], "soup", args.allow_unrelated, CLI_ADVICE, warn)
    names = [meta.name for _, meta in loaded]
    weights = [w for _, w in args.models]
    total = sum(weights)
    if abs(total - 1.0) > 1e-6:
        warn(
            f"the weights sum to {total:g}, not 1: this is task arithmetic, not a soup "
            "(allowed; BatchNorm statistics are mixed with the same weights)"
        )
    write_soup(loaded, weights, args.output, {"soup": dict(zip(names, weights))})
    print(f"wrote {args.output} = {mixture_text(zip(weights, names))}")
    return 0


def _severities(text: str) -> list[int]:
    values = [s.strip() for s in text.split(",") if s.strip()]
    if not all(v.isdigit() and 1 <= int(v) <= 5 for v in values):
        raise ConfigError(
            f"--severities: expected comma-separated severities between 1 and 5 (e.g. 1,3,5), found {text!r}"
        )
    return [int(v) for v in values]


def cmd_data_check(args: argparse.Namespace) -> int:
    corruptions = [c.strip() for c in args.corruptions.split(",") if c.strip()] if args.corruptions else None
    severities = _severities(args.severities) if args.severities else None
    if corruptions:  # names first: nothing is read for a typo
        unknown = [c for c in corruptions if c not in CORRUPTIONS]
        if unknown:
            raise UsageError(
                f"--corruptions: unknown corruption(s) {', '.join(unknown)}; expected names from "
                f"{', '.join(CORRUPTIONS)} (comma-separated, e.g. --corruptions fog,contrast)"
            )
    dataset = args.dataset
    if dataset == IMAGEFOLDER:  # your own tree: its spec from the folder, at --resolution
        data = {"root": str(args.root) if args.root else None, "resolution": args.resolution}
        dataset = register_imagefolder({"dataset": IMAGEFOLDER, "data": data}).name
    elif dataset == IMAGEFOLDER_C:  # corrupted copies of your own tree: its classes are its class folders
        register_imagefolder_c_at(args.root, args.resolution)
    report = check_dataset(dataset, args.root, quick=args.quick, corruptions=corruptions, severities=severities)
    print(report.text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustsoup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="print a checkpoint's sidecar")
    info.add_argument("model", type=Path)
    info.add_argument("--history", action="store_true", help="include the per-epoch training history")
    add_trust_flag(info)
    info.set_defaults(run=cmd_info)

    config = commands.add_parser("config", help="print a config with every default filled in")
    config.add_argument("file", type=Path, nargs="?")
    config.set_defaults(run=cmd_config)

    soup = commands.add_parser("soup", help="write Σ wᵢθᵢ of checkpoints of one architecture")
    soup.add_argument("models", nargs="+", type=_parse_weighted, metavar="PATH:WEIGHT")
    soup.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors (+ .json sidecar)")
    add_lineage_flags(soup)
    soup.set_defaults(run=cmd_soup)
    add_soup_for_command(commands, add_lineage_flags)

    add_rws_commands(commands)
    add_findings_command(commands)

    data = commands.add_parser("data", help="data set tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser(
        "check", help="check that a data set is on disk in a layout robustsoup reads, and say what is there"
    )
    check.add_argument(
        "--dataset",
        required=True,
        choices=sorted({*DATASETS, IMAGEFOLDER, IMAGEFOLDER_C}),
        help="registry name of the data set (imagefolder: your own tree; imagefolder-c: its corrupted copies)",
    )
    check.add_argument(
        "--resolution",
        type=int,
        default=32,
        help="imagefolder, imagefolder-c: the side images are brought to (data.resolution)",
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


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-unverified",
        action="store_true",
        help="read checkpoints whose sidecar has no weights_sha256 (refused otherwise; a warning is printed)",
    )


def add_lineage_flags(parser: argparse.ArgumentParser) -> None:
    """``--allow-unrelated`` and ``--trust-unverified``: the flags of every command that mixes checkpoints."""
    parser.add_argument(
        "--allow-unrelated",
        action="store_true",
        help="mix models that share no trained ancestor (refused otherwise; a warning names their lineages)",
    )
    add_trust_flag(parser)


ERRORS = (CheckpointError, ConfigError, WeightMismatchError, DataLayoutError, UsageError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends in one ``robustsoup: error:`` message and exit status 2 (an
    unexpected one in 1, its traceback only with ROBUSTSOUP_TRACEBACK=1), Ctrl-C in one line and 130, a
    closed stdout (``robustsoup info … | head``) quietly."""
    try:
        args = build_parser().parse_args(argv)
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler, not at interpreter exit
        return status
    except ERRORS as error:
        print(f"robustsoup: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustsoup: interrupted (Ctrl-C); nothing was written (outputs are written atomically)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as error:
        if os.environ.get("ROBUSTSOUP_TRACEBACK"):
            raise
        print(
            f"robustsoup: error: unexpected {type(error).__name__}: {error}. This is a robustsoup bug: please "
            "report it with the command line (ROBUSTSOUP_TRACEBACK=1 shows where it happened)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
