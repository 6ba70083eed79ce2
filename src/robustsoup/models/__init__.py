"""Model registry: architectures by name, with input normalization inside the model."""

from .registry import ARCHITECTURES, Normalized, build_model, register_architecture

__all__ = ["ARCHITECTURES", "Normalized", "build_model", "register_architecture"]
