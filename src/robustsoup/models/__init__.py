"""Models: architectures by name, with input normalization inside the model, and the one factory
(:func:`create_model`) that builds them with their weights."""

from . import (
    multihead,  # noqa: F401  (registers multihead, the student of robust distillation)
    timm_models,  # noqa: F401  (registers resnet50, vit_base_patch16_224; timm is imported on use)
    vgg,  # noqa: F401  (registers vgg16_rws, the RWS reference's VGG-16)
)
from .factory import create_model
from .registry import (
    ARCHITECTURES,
    FIXED_INPUT_STATISTICS,
    ZOO_PREFIX,
    Normalized,
    input_statistics,
    register_architecture,
)
from .zoo import (
    ZooError,
    autoattack_alias,
    load_weights_file,
    load_zoo_model,
    network_forbidden,
    zoo_weights_path,
)

__all__ = [
    "ARCHITECTURES",
    "FIXED_INPUT_STATISTICS",
    "ZOO_PREFIX",
    "Normalized",
    "ZooError",
    "autoattack_alias",
    "create_model",
    "input_statistics",
    "load_weights_file",
    "load_zoo_model",
    "network_forbidden",
    "register_architecture",
    "zoo_weights_path",
]
