"""How a prediction is scored on a data set: its label space and what counts as right.

Most sets score ``argmax(logits) == label``. Some evaluation sets of an
ImageNet classifier do not (each is registered with its kind, see
:data:`SCORINGS` and :func:`scoring_for`):

* ``subset`` (ImageNet-R, ImageNet-A): labels index a 200-class subset;
  the 1,000 logits are restricted to those classes before the argmax
  (:func:`robustsoup.data.imagenet.restrict_logits`), as the data sets'
  authors evaluate.
* ``label-sets`` (ImageNet-ReaL, Beyer et al. 2020): each image has a
  *set* of right ImageNet classes (its ``targets`` row, padded with
  :data:`NO_TARGET`); a prediction is right if it is in the set. Images
  whose set is empty are left out of the data set by its reader, as the
  ReaL paper does, so every row here has at least one target.
* ``categories`` (Geirhos et al. 2019 cue-conflict stimuli): labels are
  16 entry-level categories; a category's score is the mean softmax
  probability of its ImageNet classes (model-vs-human's
  ``ImageNetProbabilitiesTo16ClassesMapping``, the class sets shipped in
  ``wnids/cue-conflict.tsv``), and the prediction is the best category.

Every evaluation path (clean accuracy in :mod:`robustsoup.evaluate.clean`, the
soups' shift scores) asks :func:`split_scoring` for the split it scores,
so no study special-cases a data set. Torch is loaded lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import lazy_loader

from .imagenet import restrict_logits
from .registry import DATASETS, SCORINGS, get_dataset_spec

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

# Padding of a ``targets`` row (ImageNet-ReaL's label sets have different sizes).
NO_TARGET = -1
IMAGENET_CLASSES = 1000


@cache
def read_categories(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``((category, ImageNet class indices), …)`` in label order, from ``wnids/<name>.tsv``."""
    try:
        text = resources.files(__package__).joinpath("wnids", f"{name}.tsv").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyError(f"no category table {name!r} in robustsoup/data/wnids/") from None
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        category, _, indices = line.partition("\t")
        rows.append((category, tuple(int(i) for i in indices.split())))
    return tuple(rows)


@dataclass(frozen=True)
class Scoring:
    """What counts as a right prediction on one data set (``kind`` one of :data:`SCORINGS`).

    ``table`` names the class list of a ``subset`` (``imagenet-r``) or the
    category table of ``categories`` (``cue-conflict``).
    """

    kind: str = "argmax"
    table: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, found {self.kind!r}")
        if self.kind in ("subset", "categories") and not self.table:
            raise ValueError(f"scoring {self.kind!r} needs the name of its class table")

    @property
    def needs_targets(self) -> bool:
        """Whether :meth:`correct` reads each image's target set rather than its label."""
        return self.kind == "label-sets"

    def _check_width(self, logits: torch.Tensor) -> None:
        if self.kind != "argmax" and logits.shape[-1] != IMAGENET_CLASSES:
            raise ValueError(
                f"{self.kind} scoring ({self.table or 'ImageNet-ReaL'}) reads the {IMAGENET_CLASSES:,} ImageNet "
                f"logits of an ImageNet classifier; the model gives {logits.shape[-1]}"
            )

    def category_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 1000) logits → (B, categories): each category's mean softmax probability over its classes."""
        self._check_width(logits)
        probabilities = logits.float().softmax(-1)
        columns = []
        for _, indices in read_categories(self.table):
            index = torch.as_tensor(indices, dtype=torch.int64, device=logits.device)
            columns.append(probabilities.index_select(-1, index).mean(-1))
        return torch.stack(columns, -1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Predicted labels in the data set's label space (ImageNet classes for ``label-sets``)."""
        self._check_width(logits)
        if self.kind == "subset":
            return restrict_logits(logits, self.table).argmax(-1)
        if self.kind == "categories":
            return self.category_scores(logits).argmax(-1)
        return logits.argmax(-1)

    def correct(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image correctness, bool (B,): the prediction equals the label, or (``label-sets``) is
        one of the image's ``targets`` (B, L), padded with :data:`NO_TARGET`."""
        predicted = self.predict(logits)
        if not self.needs_targets:
            return predicted == labels.to(predicted.device)
        if targets is None:
            raise ValueError(
                "label-set scoring (ImageNet-ReaL) needs each image's set of right classes (the split's "
                "'targets'); this split has none. Prepare the shift's splits again with this version."
            )
        targets = targets.to(predicted.device)
        if targets.ndim != 2 or targets.shape[0] != predicted.shape[0]:
            raise ValueError(f"targets must be ({predicted.shape[0]}, L), found {tuple(targets.shape)}")
        if bool((targets == NO_TARGET).all(1).any()):
            raise ValueError("an image has an empty target set; ReaL leaves such images out (see the reader)")
        return (targets == predicted.unsqueeze(1)).any(1)


ARGMAX = Scoring()


def scoring_for(dataset: str) -> Scoring:
    """The registered scoring of ``dataset`` (see :class:`~robustsoup.data.registry.DatasetSpec`)."""
    spec = get_dataset_spec(dataset)
    table = spec.class_subset if spec.scoring == "subset" else spec.name
    return Scoring(spec.scoring, table if spec.scoring in ("subset", "categories") else None)


def split_scoring(split) -> Scoring:
    """The scoring of the data set a split was cut from (its ``dataset``); plain argmax for splits of
    no registered data set (built in memory, e.g. in tests), whose labels index the model's classes."""
    name = getattr(split, "dataset", "")
    return scoring_for(name) if name in DATASETS else ARGMAX
