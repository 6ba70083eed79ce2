"""The multi-head student of robust distillation (Jain et al. 2023).

A base network whose classifier is replaced by three linear heads on the
same pooled features:

- ``clean``: kept close to the original student's predictions on clean data;
- ``robust``: distilled from a small robust teacher on shifted data;
- ``combined``: trained on both.

Each head sees its features through dropout (MC-dropout at test time,
:func:`robustsoup.distill.head_signals`). Only the last ``trainable_blocks``
residual blocks of the base, the normalisation after them, and the heads are
tuned; :meth:`MultiHeadNet.trainable_names` says which tensors those are.

The architecture is registered as ``multihead`` with the base's registry name
in ``base``, so a checkpoint rebuilds from its sidecar like any other
(``model_kwargs``: base, width, activation, dropout, trainable_blocks). Bases:
the pre-activation ResNets, the WideResNet, and timm's ResNets and ViTs.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from .preact_resnet import PreActResNet
from .registry import ARCHITECTURES, register_architecture
from .wide_resnet import WideResNet

HEADS: tuple[str, ...] = ("clean", "robust", "combined")


def split_base(net: nn.Module) -> tuple[str, list[str], list[str]]:
    """(classifier attribute, residual blocks in order, modules between the last block and the classifier).

    Names are module paths inside ``net``. Raises ValueError for a network
    whose layout is not known here.
    """
    if isinstance(net, PreActResNet):
        return "linear", net.block_names(), ["bn"]
    if isinstance(net, WideResNet):
        blocks = [
            f"{stage}.layer.{i}"
            for stage in ("block1", "block2", "block3")
            for i in range(len(getattr(net, stage).layer))
        ]
        return "fc", blocks, ["bn1"]
    if hasattr(net, "blocks") and hasattr(net, "head"):  # timm ViT
        post = [name for name in ("norm", "fc_norm") if isinstance(getattr(net, name, None), nn.Module)]
        return "head", [f"blocks.{i}" for i in range(len(net.blocks))], post
    if all(hasattr(net, f"layer{i}") for i in range(1, 5)) and hasattr(net, "fc"):  # timm / torchvision ResNet
        blocks = [f"layer{s}.{i}" for s in range(1, 5) for i in range(len(getattr(net, f"layer{s}")))]
        return "fc", blocks, []
    raise ValueError(
        f"multihead: no known block layout for {type(net).__name__}; supported bases are the pre-activation "
        "ResNets, the WideResNet and timm's ResNets and ViTs"
    )


class MultiHeadNet(nn.Module):
    """A base network without its classifier, plus the heads of :data:`HEADS`.

    ``forward`` returns the ``combined`` head's logits (dropout off in eval
    mode), so the model works wherever one set of logits is expected; the
    distillation and the head selection use :meth:`features` and
    :meth:`head` directly.
    """

    def __init__(self, base: nn.Module, num_classes: int, dropout: float = 0.25, trainable_blocks: int = 1) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"multihead: dropout must be in [0, 1), found {dropout}")
        classifier, blocks, post = split_base(base)
        if not 0 <= trainable_blocks <= len(blocks):
            raise ValueError(
                f"multihead: trainable_blocks must be between 0 and the base's {len(blocks)} blocks, "
                f"found {trainable_blocks}"
            )
        old = getattr(base, classifier)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"multihead: the base's classifier {classifier!r} is not a linear layer")
        setattr(base, classifier, nn.Identity())
        self.base = base
        self.heads = nn.ModuleDict({h: nn.Linear(old.in_features, num_classes) for h in HEADS})
        self.dropout = float(dropout)
        self.classifier_name = classifier
        tuned = blocks[len(blocks) - trainable_blocks :] + post
        self.trainable_modules = [f"base.{m}" for m in tuned] + ["heads"]

    def features(self, x):
        """Pooled features of the base (its classifier's input)."""
        return self.base(x)

    def head(self, name: str, features, mask=None, dropout: bool = False):
        """Logits of head ``name`` on ``features``.

        ``mask``: a dropout mask, already scaled by 1/(1−p) (an MC-dropout
        sample); ``dropout=True``: ordinary dropout from torch's generator
        (training). Neither: no dropout, whatever the module's mode.
        """
        if mask is not None:
            features = features * mask
        elif dropout and self.dropout > 0:
            features = F.dropout(features, self.dropout, training=True)
        return self.heads[name](features)

    def forward(self, x):
        return self.heads["combined"](self.features(x))

    def trainable_names(self) -> list[str]:
        """Parameter names that distillation tunes; everything else stays frozen."""
        prefixes = tuple(m + "." for m in self.trainable_modules)
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]


@register_architecture("multihead")
def multihead(
    num_classes: int,
    base: str = "preact_resnet_small",
    width: int = 32,
    activation: str = "relu",
    dropout: float = 0.25,
    trainable_blocks: int = 1,
) -> nn.Module:
    """Multi-head student on the registry architecture ``base`` (see :class:`MultiHeadNet`)."""
    if base == "multihead" or base not in ARCHITECTURES:
        raise KeyError(
            f"multihead: unknown base architecture {base!r}; expected one of "
            f"{sorted(a for a in ARCHITECTURES if a != 'multihead')}"
        )
    net = ARCHITECTURES[base](num_classes=num_classes, width=width, activation=activation)
    return MultiHeadNet(net, num_classes, dropout=dropout, trainable_blocks=trainable_blocks)
