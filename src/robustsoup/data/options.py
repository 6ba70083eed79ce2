"""How a job reads its images: the decoder of image files and the data loader's worker processes.

One process-wide :data:`OPTIONS`, set once per job from the config's ``data.decoder`` and
``data.loader_workers`` (:func:`configure`, called by ``robustsoup.snakemake_job``), the way the job's
torch threads are set: every split the job opens decodes and batches the same way, and no study has
to hand the keys down to the loader. Torch-free, so the workflow may import it while it parses.
"""

from __future__ import annotations

from dataclasses import dataclass

# Which library decodes and resizes image files (see robustsoup.data.sources.decode_image).
# torchvision is the default: 1.7-1.8x Pillow's images/s on the CPU for ImageNet-sized JPEGs, the same
# decoded pixels and a resize within one grey level (bench/data_loader.py measures both).
DECODERS = ("torchvision", "pil")
DEFAULT_DECODER = "torchvision"
# Fraction of the free GPU memory a decoded (uint8) split may take when it is moved there once.
DEVICE_BUDGET_FRACTION = 0.5


@dataclass
class LoadingOptions:
    """``decoder``: ``torchvision`` or ``pil``; ``loader_workers``: ``auto`` or a number of DataLoader
    worker processes for file-list splits (see :func:`robustsoup.data.loading.loader_workers`);
    ``device_budget``: the fraction of free GPU memory a decoded split may occupy on the GPU."""

    decoder: str = DEFAULT_DECODER
    loader_workers: int | str = "auto"
    device_budget: float = DEVICE_BUDGET_FRACTION

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(
                f"config key 'data.decoder': expected one of {', '.join(DECODERS)}, found {self.decoder!r}"
            )
        workers = self.loader_workers
        if workers != "auto" and not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0):
            raise ValueError(
                f"config key 'data.loader_workers': expected auto or a whole number of worker processes "
                f"(0: decode in the job's own process), found {workers!r}"
            )
        if not 0 <= self.device_budget <= 1:
            raise ValueError(f"device_budget is a fraction of free GPU memory in [0, 1], found {self.device_budget}")


OPTIONS = LoadingOptions()


def configure(data_config: dict) -> LoadingOptions:
    """Set :data:`OPTIONS` from a resolved config's ``data`` section; returns the previous options."""
    global OPTIONS
    previous = OPTIONS
    OPTIONS = LoadingOptions(
        decoder=data_config.get("decoder", DEFAULT_DECODER),
        loader_workers=data_config.get("loader_workers", "auto"),
    )
    return previous


def current() -> LoadingOptions:
    """The options in force."""
    return OPTIONS
