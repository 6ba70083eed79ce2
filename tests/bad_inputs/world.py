"""The files the bad-input corpus runs commands on, made once per session in a few seconds.

A small family of checkpoints with real lineage (an init, a parent fine-tuned from it, two children
of the parent), a stranger trained apart from the same random seed, checkpoints of another width and
data set, damaged files of every kind, a signature and a patch, folders of images and config files.
Every file is made by the package's own writers (save_checkpoint, save_signature, patch_checkpoint)
and then, for the damaged ones, damaged by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustsoup.checkpoint import CheckpointMeta, save_checkpoint
from robustsoup.lineage import descend, start_record
from robustsoup.rws.extract import extract_signature
from robustsoup.rws.layers import plan_layers
from robustsoup.rws.patching import patch_checkpoint
from robustsoup.rws.signature_file import save_signature

from conftest import finetuned_like as moved

WIDTH = 4


def meta(name: str, width: int = WIDTH, dataset: str = "digits") -> CheckpointMeta:
    return CheckpointMeta(
        name=name,
        architecture="preact_resnet_small",
        model_kwargs={"width": width, "activation": "relu"},
        dataset=dataset,
        num_classes=10,
        mean=[0.3052] * 3,
        std=[0.3236] * 3,
    )


def fresh(m: CheckpointMeta, seed: int) -> dict:
    """A random initialization from ``seed``, recorded as the root of ``m``'s lineage."""
    torch.manual_seed(seed)
    state = m.build().state_dict()
    m.lineage = [start_record(state, seed, None, f"{m.architecture} init")]
    return state


def child(parent_meta: CheckpointMeta, parent_state: dict, name: str, seed: int, folder: Path):
    m = meta(name, parent_meta.model_kwargs["width"], parent_meta.dataset)
    descend(m, parent_meta)
    state = moved(parent_state, seed)
    save_checkpoint(folder / f"{name}.safetensors", state, m)
    return m, state


def write_images(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def build_world(w: Path) -> Path:
    """Write every file of the corpus under ``w``; return ``w``."""
    init_meta = meta("init")
    init = fresh(init_meta, 0)
    save_checkpoint(w / "init.safetensors", init, init_meta)
    parent_meta, parent = child(init_meta, init, "parent", 1, w)
    a_meta, a = child(parent_meta, parent, "a", 2, w)
    child(parent_meta, parent, "b", 3, w)
    # a stranger: same architecture, same random seed, trained apart (its own lineage from a fresh init)
    stranger_meta = meta("stranger")
    stranger = moved(fresh(stranger_meta, 0), 9, scale=0.5)
    save_checkpoint(w / "stranger.safetensors", stranger, stranger_meta)
    wide_meta = meta("wide", width=5)
    descend(wide_meta, parent_meta)
    save_checkpoint(w / "wide.safetensors", fresh(meta("x", 5), 0), wide_meta)
    cifar_meta = meta("cifar", dataset="cifar10")
    descend(cifar_meta, parent_meta)
    save_checkpoint(w / "cifar.safetensors", moved(parent, 4), cifar_meta)

    # damaged copies of a
    for name in ("nohash", "truncated", "replaced", "notjson", "notutf8", "wrongformat", "nofield", "nosidecar"):
        shutil.copy(w / "a.safetensors", w / f"{name}.safetensors")
        shutil.copy(w / "a.json", w / f"{name}.json")
    side = json.loads((w / "a.json").read_text())
    (w / "nohash.json").write_text(json.dumps({**side, "weights_sha256": ""}))
    data = (w / "a.safetensors").read_bytes()
    (w / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    shutil.copy(w / "b.safetensors", w / "replaced.safetensors")
    (w / "notjson.json").write_text("{ this is not json")
    (w / "notutf8.json").write_bytes(b"\xff\xfe{}")
    (w / "wrongformat.json").write_text(json.dumps({**side, "format": "something-else/9"}))
    (w / "nofield.json").write_text(json.dumps({k: v for k, v in side.items() if k != "architecture"}))
    (w / "nosidecar.json").unlink()

    # a signature extracted against a (standard), from parent (init) with an expert fine-tuned from parent
    expert = moved(parent, 5)
    sources = {
        "init": {"name": "parent", "weights_sha256": parent_meta_sha(w, "parent"), "lineage": parent_meta.lineage},
        "standard": {"name": "a", "weights_sha256": parent_meta_sha(w, "a"), "lineage": a_meta.lineage},
    }
    identity = {"architecture": "preact_resnet_small", "model_kwargs": {"width": WIDTH, "activation": "relu"}}
    signature = extract_signature(
        parent,
        a,
        expert,
        plan_layers(a, 3, True, "all"),
        name="rws-fog",
        corruption="fog",
        identity={**identity, "dataset": "digits", "num_classes": 10},
        sources=sources,
    )
    save_signature(w / "fog.safetensors", signature)
    patch_checkpoint(w / "a.safetensors", [(w / "fog.safetensors", 1.0)], w / "patched.safetensors")
    patch_checkpoint(w / "b.safetensors", [(w / "fog.safetensors", 0.5)], w / "patched-b.safetensors", warn=print)
    shutil.copy(w / "patched.safetensors", w / "lonely.safetensors")
    shutil.copy(w / "patched.json", w / "lonely.json")
    shutil.copy(w / "patched-b.unpatch.safetensors", w / "mixed.unpatch.safetensors")
    shutil.copy(w / "patched.safetensors", w / "mixed.safetensors")
    shutil.copy(w / "patched.json", w / "mixed.json")

    # images: digits-like (grey, 32 px), colour photographs (crops of scikit-learn's two samples), large ones
    from sklearn.datasets import load_digits, load_sample_images

    digits = load_digits().images[:24] / 16.0
    grey = np.stack([np.kron(d, np.ones((4, 4))) for d in digits])
    grey = (np.repeat(grey[..., None], 3, axis=-1) * 255).astype(np.uint8)
    write_images(w / "images", grey)
    photos = []
    rng = np.random.default_rng(0)
    for photo in load_sample_images().images:
        for _ in range(12):
            y, x = rng.integers(0, photo.shape[0] - 64), rng.integers(0, photo.shape[1] - 64)
            photos.append(photo[y : y + 64 : 2, x : x + 64 : 2])
    write_images(w / "photos", np.stack(photos))
    write_images(w / "large", np.stack([np.array(Image.fromarray(g).resize((256, 256))) for g in grey[:6]]))
    (w / "empty").mkdir()
    (w / "notes").mkdir()
    (w / "notes" / "readme.txt").write_text("no images here\n")

    # config files
    configs = {
        "empty.yaml": "",
        "comments.yaml": "# only a comment\n",
        "invalid.yaml": "dataset: [digits\n",
        "list.yaml": "- dataset\n- digits\n",
        "unknown.yaml": "datset: digits\n",
        "seed.yaml": "seed: -1\n",
        "dataset.yaml": "dataset: mnist\n",
        "device.yaml": "device: gpu\n",
        "epochs.yaml": "pretrain: {epochs: many}\n",
        "norm.yaml": "pretrain: {norm: Linfinity}\n",
        "line.yaml": "soups: {lines: [[linf, linf-l3]]}\n",
        "threat.yaml": "threats: {L3: 1.0}\n",
        "linf8.yaml": "threats: {Linf: 8}\n",
        "linf15.yaml": "threats: {Linf: 1.5}\n",
        "l2big.yaml": "threats: {L2: 100}\n",
        "l1zero.yaml": "threats: {L1: 0}\n",
        "ownradii.yaml": "dataset: imagefolder\ndata: {root: nowhere, name: mine, resolution: 32}\n",
        "tab.yaml": "dataset:\tdigits\n",
        "notutf8.yaml": None,
    }
    for name, text in configs.items():
        if text is None:
            (w / name).write_bytes(b"dataset: \xff\xfe\n")
        else:
            (w / name).write_text(text)
    (w / "file.txt").write_text("a file, not a folder\n")
    return w


def parent_meta_sha(w: Path, name: str) -> str:
    return json.loads((w / f"{name}.json").read_text())["weights_sha256"]
