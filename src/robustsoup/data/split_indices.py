"""Which images each split holds: index splits by class (train / adapt / test), seeded.

How a data set is split depends on its spec's ``split_scheme``:

* ``stratified`` (the embedded digits, a single-folder ImageFolder): one pool, split 3-way by
  class with ``n_adapt`` and ``n_test`` images (:func:`stratified_split`).
* ``official`` (CIFAR, ImageNet, an ImageFolder with train/ and test/): train = the official
  training part; adapt = the first ``k`` images per class of the official test part under a fixed
  seed, test = the rest of it (:func:`adapt_test_split`), so the adaptation and test images are
  disjoint.
* ``shift`` (natural shifts, -C sets): no training images; each part (a corruption at a
  severity, or the whole set) gets adapt = first ``k`` per class, test = the rest.

With ``train_per_class`` (config ``data.train_per_class``) the training split keeps that many
images of each class, drawn from the training images alone (:func:`train_subset`), so adapt and
test are the same with or without it. With ``test_per_class`` (``data.test_per_class``; official
and shift sets only) the test split keeps the first that many images of each class that follow
the adaptation images in the same seeded order (:func:`adapt_test_split`), so adapt is unchanged
and a smaller test split lies inside a larger one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lazy_loader

from .sources import ImageSource

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

log = logging.getLogger(__name__)


def _interleave(groups: list[list[int]]) -> torch.Tensor:
    """Round-robin over classes, so that any prefix is close to class-balanced."""
    longest = max((len(g) for g in groups), default=0)
    order = [g[i] for i in range(longest) for g in groups if i < len(g)]
    return torch.as_tensor(order, dtype=torch.int64)


def _per_class_permutations(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique(sorted=True)
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    return [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]


def stratified_split(labels: torch.Tensor, n_adapt: int, n_test: int, seed: int) -> dict[str, torch.Tensor]:
    """Indices of train / adapt / test, each stratified by class.

    Every class contributes to adapt and test in proportion to its size
    (largest-remainder rounding); the rest is train. The test and adapt
    indices are interleaved by class, so that any prefix of them is close to
    balanced (evaluation subsets take prefixes).
    """
    n_total = int(labels.shape[0])
    if n_adapt + n_test >= n_total:
        raise ValueError(f"n_adapt + n_test = {n_adapt + n_test} leaves no training images out of {n_total}")
    per_class = _per_class_permutations(labels, seed)

    def quota(total: int) -> list[int]:
        exact = [total * len(idx) / n_total for idx in per_class]
        counts = [int(e) for e in exact]
        order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
        for i in order[: total - sum(counts)]:
            counts[i] += 1
        return counts

    test_counts, adapt_counts = quota(n_test), quota(n_adapt)
    parts: dict[str, list[list[int]]] = {"train": [], "adapt": [], "test": []}
    for idx, n_te, n_ad in zip(per_class, test_counts, adapt_counts):
        parts["test"].append(idx[:n_te].tolist())
        parts["adapt"].append(idx[n_te : n_te + n_ad].tolist())
        parts["train"].append(idx[n_te + n_ad :].tolist())
    return {name: _interleave(groups) for name, groups in parts.items()}


def adapt_test_split(
    labels: torch.Tensor,
    k: int,
    seed: int,
    test_per_class: int | None = None,
    *,
    class_names: Callable[[list[int]], Mapping[int, str]] | None = None,
    where: str = "the test images",
) -> dict[str, torch.Tensor]:
    """adapt = the first ``k`` images of each class in a seeded order, test = the rest; disjoint.

    A class with ``k`` or fewer images gives all but one to adapt, so that
    every class stays in the test split. ``test_per_class`` keeps only the
    next that many of each class for test (None: all), so adapt does not
    depend on it and a smaller test split is a subset of a larger one; a class
    with fewer raises :class:`TestSubsetError` naming the classes and counts
    (``class_names`` maps labels to names; ``where`` names the images split).
    Both are interleaved by class.
    """
    if k < 1:
        raise ValueError(f"k (adaptation images per class) must be at least 1, found {k}")
    if test_per_class is not None and test_per_class < 1:
        raise ValueError(f"data.test_per_class must be at least 1 (or null for every image), found {test_per_class}")
    classes = labels.unique(sorted=True).tolist()
    adapt, test, short, short_test = [], [], [], {}
    for label, idx in zip(classes, _per_class_permutations(labels, seed)):
        take = min(k, len(idx) - 1)
        if take < k:
            short.append(len(idx))
        rest = idx[take:]
        if test_per_class is not None and len(rest) < test_per_class:
            short_test[label] = len(rest)
        adapt.append(idx[:take].tolist())
        test.append(rest[:test_per_class].tolist())
    if short:
        log.warning(
            "%d class(es) have at most k=%d images (smallest: %d); each keeps one image for test",
            len(short),
            k,
            min(short),
        )
    if short_test:
        names = class_names(sorted(short_test)) if class_names is not None else {}
        shown = _class_counts(short_test, names)
        raise TestSubsetError(
            f"data.test_per_class = {test_per_class} asks for {test_per_class} test images of every class of "
            f"{where}, but {len(short_test)} of {len(classes)} classes have fewer left after the {k} adaptation "
            f"images per class (data.k_adapt_per_class) ({shown}). To fix it, lower data.test_per_class to at "
            f"most {min(short_test.values())} (the smallest class), or set data.test_per_class: null to test on "
            "every image left after adapt."
        )
    return {"adapt": _interleave(adapt), "test": _interleave(test)}


class TestSubsetError(ValueError):
    """``data.test_per_class`` asks for more test images of some class than its test images hold after adapt."""

    __test__ = False  # not a pytest test class


class TrainSubsetError(ValueError):
    """``data.train_per_class`` asks for more training images of some class than the data holds."""


def train_subset(
    labels: torch.Tensor,
    candidates: torch.Tensor,
    per_class: int,
    seed: int,
    *,
    classes: Sequence[int] | None = None,
    class_names: Callable[[list[int]], Mapping[int, str]] | None = None,
    hint: str = "",
) -> torch.Tensor:
    """``per_class`` of the ``candidates`` (indices into ``labels``: the training images) of each class.

    Each class takes the first ``per_class`` of its candidates in a per-class
    order seeded by ``seed``; the candidates are sorted first, so the subset
    depends on which images are candidates, not on the order they came in
    (file-system order never enters). A smaller ``per_class`` gives a subset
    of a larger one's under the same seed. The result is interleaved by
    class, like every split, so any prefix is close to balanced.

    ``classes`` are the labels that must be present (default: those among the
    candidates); if any has fewer than ``per_class`` candidates a
    :class:`TrainSubsetError` names them and their counts (``class_names``
    maps those labels to names; ``hint`` adds what decides the number of
    training images).
    """
    if per_class < 1:
        raise ValueError(f"data.train_per_class must be at least 1 (or null for every image), found {per_class}")
    pool = torch.as_tensor(candidates, dtype=torch.int64).sort().values
    pool_labels = labels[pool]
    wanted = sorted(int(c) for c in (pool_labels.unique() if classes is None else classes))
    counts = torch.bincount(pool_labels, minlength=max(wanted, default=-1) + 1).tolist()
    short = {c: counts[c] for c in wanted if counts[c] < per_class}
    if short:
        names = class_names(sorted(short)) if class_names is not None else {}
        raise TrainSubsetError(_short_classes_message(short, len(wanted), per_class, names, hint))
    return _interleave([pool[idx[:per_class]].tolist() for idx in _per_class_permutations(pool_labels, seed)])


def _class_counts(short: Mapping[int, int], names: Mapping[int, str]) -> str:
    """``class 3 (cat): 5; …`` for the first ten classes of ``short`` (label → images found)."""
    shown = [f"class {c}{f' ({names[c]})' if c in names else ''}: {n}" for c, n in sorted(short.items())[:10]]
    more = f", … and {len(short) - 10} more" if len(short) > 10 else ""
    return "; ".join(shown) + more


def _short_classes_message(
    short: Mapping[int, int], n_classes: int, per_class: int, names: Mapping[int, str], hint: str
) -> str:
    smallest = min(short.values())
    if smallest > 0:
        fix = f"lower data.train_per_class to at most {smallest} (the smallest class)"
    else:
        fix = "check that every class has training images under data.root"
    return (
        f"data.train_per_class = {per_class} asks for {per_class} training images of every class, but "
        f"{len(short)} of {n_classes} classes have fewer ({_class_counts(short, names)}). To fix it, {fix}, "
        f"or set data.train_per_class: null to train on every training image.{hint}"
    )


def _folder_names(*sources: ImageSource) -> Callable[[list[int]], dict[int, str]]:
    """Labels → class folder names (the parent folder of a class's first image in any of the file-backed
    ``sources``), for messages; in-memory sources name nothing."""

    def names(classes: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for source in (s for s in sources if s.paths is not None):
            for c in (c for c in classes if c not in found):
                hit = torch.nonzero(source.labels == c).flatten()
                if len(hit):
                    found[c] = Path(source.paths[int(hit[0])]).parent.name
        return found

    return names
