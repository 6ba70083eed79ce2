"""``robustsoup patch`` / ``robustsoup unpatch``: Robust Weight Signatures outside the workflow.

    robustsoup patch MODEL.safetensors --rws fog.safetensors:0.8 --rws contrast-8bit.safetensors:1.0 -o OUT.safetensors
    robustsoup unpatch OUT.safetensors -o MODEL-again.safetensors

``patch`` writes OUT.safetensors (+ .json) and OUT.unpatch.safetensors, the exact original
tensors it replaced; ``unpatch`` restores the model bit for bit from them. Wired into
:mod:`robustsoup.cli` by :func:`add_rws_commands`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import CheckpointError
from ..lineage import CLI_ADVICE
from ..rws.patching import patch_checkpoint, unpatch_checkpoint, unpatch_companion
from ..rws.signatures import SignatureError
from .args import check_output, parse_path_and_number, warn


def _parse_signature(spec: str) -> tuple[Path, float]:
    return parse_path_and_number(spec, "λ", "SIGNATURE:LAMBDA (e.g. fog.safetensors:0.8)")


def cmd_patch(args: argparse.Namespace) -> int:
    inputs = [args.model, *(path for path, _ in args.rws)]
    check_output("-o", args.output, inputs, extra=[unpatch_companion(args.output)])
    try:
        out = patch_checkpoint(
            args.model,
            args.rws,
            args.output,
            allow_unrelated=args.allow_unrelated,
            warn=warn,
            trust_unverified=args.trust_unverified,
            advice=CLI_ADVICE.replace("mix them", "apply it"),
        )
    except (SignatureError, CheckpointError) as error:
        print(f"robustsoup: error: {error}", file=sys.stderr)
        return 2
    terms = " + ".join(f"{c:g}·{p.name}" for p, c in args.rws)
    print(f"wrote {out} = {args.model.name} + {terms} (originals in {unpatch_companion(out).name})")
    return 0


def cmd_unpatch(args: argparse.Namespace) -> int:
    check_output("-o", args.output, [args.model, unpatch_companion(args.model)])
    try:
        out = unpatch_checkpoint(args.model, args.output, trust_unverified=args.trust_unverified, warn=warn)
    except (SignatureError, CheckpointError) as error:
        print(f"robustsoup: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}: the unpatched model, bit for bit")
    return 0


def add_rws_commands(commands) -> None:
    """Add ``patch`` and ``unpatch`` to the ``robustsoup`` sub-command parsers."""
    patch = commands.add_parser("patch", help="add robust weight signatures to a checkpoint: θ + Σ λᵢ RWSᵢ")
    patch.add_argument("model", type=Path, help="checkpoint (.safetensors with its .json sidecar)")
    patch.add_argument(
        "--rws",
        action="append",
        required=True,
        type=_parse_signature,
        metavar="SIGNATURE:LAMBDA",
        help="a signature file and its coefficient λ (repeat to compose)",
    )
    patch.add_argument("-o", "--output", type=Path, required=True, help="patched checkpoint (.safetensors)")
    patch.add_argument(
        "--allow-unrelated",
        "--allow-other-base",  # its name before lineage was recorded
        dest="allow_unrelated",
        action="store_true",
        help="apply signatures extracted against a model that shares no trained ancestor with MODEL (refused "
        "otherwise; a warning names both lineages). A relative (fine-tuned from the same checkpoint) only warns",
    )
    patch.add_argument("--trust-unverified", action="store_true", help="read a sidecar without weights_sha256")
    patch.set_defaults(run=cmd_patch)
    unpatch = commands.add_parser("unpatch", help="restore a patched checkpoint's original model, bit for bit")
    unpatch.add_argument("model", type=Path, help="checkpoint written by `robustsoup patch`")
    unpatch.add_argument("-o", "--output", type=Path, required=True, help="restored checkpoint (.safetensors)")
    unpatch.add_argument("--trust-unverified", action="store_true", help="read a sidecar without weights_sha256")
    unpatch.set_defaults(run=cmd_unpatch)
