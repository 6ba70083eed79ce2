"""Writing golden files byte for byte reproducibly, and reading a reference checkout's identity.

Shared by the generator scripts of this folder (each adds this folder to ``sys.path`` when run as
``python tools/parity/gen_<reference>.py``). ``numpy.savez`` stamps the zip entries with the current
time, so two runs never give the same bytes; :func:`save_npz` writes the same ``.npy`` members with a
fixed timestamp and in sorted order instead. The parity tests read the files with ``numpy.load``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "parity" / "golden"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def checkout_arguments(description: str, repository: str) -> tuple[Path, str]:
    """A generator's command line: the path of a checkout of ``repository`` and its commit
    (``--commit``, default: what ``git rev-parse HEAD`` says there)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("checkout", type=Path, help=f"a checkout of github.com/{repository}")
    parser.add_argument("--commit", help="the commit the checkout holds (default: git rev-parse HEAD)")
    args = parser.parse_args()
    return args.checkout, checkout_commit(args.checkout, args.commit)


def checkout_commit(checkout: Path, commit: str | None) -> str:
    """The commit of ``checkout``: ``commit`` if given (an exported tree has no .git), else ``git rev-parse HEAD``."""
    if commit:
        return commit
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        sys.exit(f"{checkout} is not a git checkout ({exc}); pass --commit with the commit it was exported from")
    return out.stdout.strip()


def provenance(repository: str, commit: str, script: str) -> dict[str, str]:
    """What every golden file records: the reference repository, its commit, the script that wrote it."""
    return {"reference": repository, "commit": commit, "script": f"tools/parity/{Path(script).name}"}


def save_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` plus a ``meta`` JSON string (member ``meta``) as a reproducible ``.npz``."""
    members = dict(arrays)
    members["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            buffer = io.BytesIO()
            array = np.asarray(members[name])
            np.lib.format.write_array(buffer, np.ascontiguousarray(array) if array.ndim else array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def save_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as sorted, indented JSON with a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, sort_keys=True, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def add_checkout_to_path(checkout: Path, *parts: str) -> Path:
    """Put ``checkout/parts`` first on ``sys.path`` (the reference's modules import each other by name)."""
    folder = checkout.joinpath(*parts).resolve()
    if not folder.is_dir():
        sys.exit(f"expected the folder {folder} in the reference checkout; is {checkout} the right repository?")
    sys.path.insert(0, str(folder))
    return folder
