"""The papers' data sets in the registry: CIFAR, ImageNet, Tiny-ImageNet and their shifts.

Each entry says how many classes, at which resolution, with which
normalization, where its parts are on disk (the expected layout is shown in
every error) and how its splits are made. The data root is given at run time
(config ``data.root`` / ``data.shifts``, or ``robustsoup data check --root``).
"""

from __future__ import annotations

from .imagenet import subset_label_map, wnid_to_index
from .readers import (
    cifar_reader,
    hendrycks_npy_reader,
    imagenet_c_reader,
    imagenet_folder_reader,
    label_set_reader,
    tiny_imagenet_reader,
)
from .registry import DatasetSpec, register_dataset
from .scoring import read_categories

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_RESOLUTION, IMAGENET_RESIZE = 224, 256


def _cifar_layout(folder: str, files: str, example_class: str) -> str:
    return (
        f"  ROOT/{folder}/{files}   (torchvision's download, unpacked)\n"
        "or an ImageFolder tree (any image extension, 32×32):\n"
        f"  ROOT/train/<class>/<image>   e.g. ROOT/train/{example_class}/0001.png\n"
        f"  ROOT/test/<class>/<image>"
    )


CIFAR10_LAYOUT = _cifar_layout("cifar-10-batches-py", "{data_batch_1 … data_batch_5, test_batch}", "airplane")
CIFAR100_LAYOUT = _cifar_layout("cifar-100-python", "{train, test}", "apple")

IMAGENET_LAYOUT = (
    "  ROOT/train/<wnid>/<image>   e.g. ROOT/train/n01440764/n01440764_10026.JPEG (1,000 wnid folders)\n"
    "  ROOT/val/<wnid>/<image>     the 50,000 validation images sorted into the same wnid folders"
)


def _hendrycks_npy_layout(n: int, res: int) -> str:
    return (
        f"  ROOT/<corruption>.npy   uint8 ({5 * n}, {res}, {res}, 3), e.g. ROOT/gaussian_noise.npy;\n"
        f"                          severity s in rows (s−1)·{n} … s·{n}−1\n"
        f"  ROOT/labels.npy         ({5 * n},) the test labels repeated once per severity"
    )


IMAGENET_C_LAYOUT = (
    "  ROOT/<corruption>/<severity 1-5>/<wnid>/<image>\n"
    "      e.g. ROOT/gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG (224×224)\n"
    "  (Hendrycks' archives unpacked by category, ROOT/noise/gaussian_noise/3/…, work too)"
)


def _wnid_layout(n: int, example: str, archive: str) -> str:
    return (
        f"  ROOT/<wnid>/<image>   {n} wnid folders, e.g. ROOT/{example}/…jpg\n"
        f"  (the archive's own top folder, ROOT/{archive}/<wnid>/…, works too)"
    )


IMAGENET_V2_LAYOUT = (
    "  ROOT/<class index>/<image>   1,000 folders named 0 … 999 (ImageNet class indices, not wnids),\n"
    "      e.g. ROOT/0/7e1f2b5d….jpeg\n"
    "  (the archive's own top folder, ROOT/imagenetv2-matched-frequency-format-val/…, works too)"
)


def _v2_labels() -> dict[str, int]:
    return {str(i): i for i in range(1000)}


register_dataset(
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        resolution=32,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        description="CIFAR-10 (50,000 train / 10,000 test, 32×32)",
        reader=cifar_reader("cifar10", 10, CIFAR10_LAYOUT),
        split_scheme="official",
        nominal_sizes={"train": 50_000, "test": 10_000},
        layout=CIFAR10_LAYOUT,
    )
)

register_dataset(
    DatasetSpec(
        name="cifar100",
        num_classes=100,
        resolution=32,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        description="CIFAR-100 (50,000 train / 10,000 test, 32×32, 100 fine labels)",
        reader=cifar_reader("cifar100", 100, CIFAR100_LAYOUT),
        split_scheme="official",
        nominal_sizes={"train": 50_000, "test": 10_000},
        layout=CIFAR100_LAYOUT,
    )
)

register_dataset(
    DatasetSpec(
        name="imagenet",
        num_classes=1000,
        resolution=IMAGENET_RESOLUTION,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="ImageNet-1k (1,281,167 train / 50,000 val; resize 256, centre crop 224)",
        reader=imagenet_folder_reader(
            "imagenet",
            {"train": "train", "val": "val"},
            wnid_to_index,
            IMAGENET_RESOLUTION,
            IMAGENET_RESIZE,
            IMAGENET_LAYOUT,
        ),
        split_scheme="official",
        train_part="train",
        test_part="val",
        nominal_sizes={"train": 1_281_167, "val": 50_000},
        lazy=True,
        resize=IMAGENET_RESIZE,
        layout=IMAGENET_LAYOUT,
    )
)

for _name, _n, _res, _mean, _std, _classes, _base, _what in (
    ("cifar10-c", 10_000, 32, CIFAR10_MEAN, CIFAR10_STD, 10, "cifar10", "CIFAR-10-C"),
    ("cifar100-c", 10_000, 32, CIFAR100_MEAN, CIFAR100_STD, 100, "cifar100", "CIFAR-100-C"),
):
    _layout = _hendrycks_npy_layout(_n, _res)
    register_dataset(
        DatasetSpec(
            name=_name,
            num_classes=_classes,
            resolution=_res,
            mean=_mean,
            std=_std,
            description=f"{_what} (Hendrycks & Dietterich 2019): corruptions × 5 severities of the test set, .npy arrays",
            reader=hendrycks_npy_reader(_name, _res, _classes, _layout),
            split_scheme="shift",
            nominal_sizes={"*": _n},
            base=_base,
            layout=_layout,
        )
    )

register_dataset(
    DatasetSpec(
        name="imagenet-c",
        num_classes=1000,
        resolution=IMAGENET_RESOLUTION,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="ImageNet-C (Hendrycks & Dietterich 2019): corruptions × 5 severities of the val set, 224×224 JPEG",
        reader=imagenet_c_reader("imagenet-c", wnid_to_index, IMAGENET_RESOLUTION, IMAGENET_C_LAYOUT),
        split_scheme="shift",
        nominal_sizes={"*": 50_000},
        lazy=True,
        resize=None,
        base="imagenet",
        layout=IMAGENET_C_LAYOUT,
    )
)

for _name, _n, _archive, _what in (
    ("imagenet-r", 30_000, "imagenet-r", "ImageNet-R (renditions, Hendrycks et al. 2021)"),
    ("imagenet-a", 7_500, "imagenet-a", "ImageNet-A (natural adversarial examples, Hendrycks et al. 2021)"),
):
    _layout = _wnid_layout(200, "n01443537" if _name == "imagenet-r" else "n01498041", _archive)
    register_dataset(
        DatasetSpec(
            name=_name,
            num_classes=200,
            resolution=IMAGENET_RESOLUTION,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            description=f"{_what}: {_n:,} images of 200 ImageNet classes; logits restricted to those classes",
            reader=imagenet_folder_reader(
                _name, {"all": ""}, (lambda n=_name: subset_label_map(n)), IMAGENET_RESOLUTION, IMAGENET_RESIZE, _layout
            ),
            split_scheme="shift",
            test_part="all",
            nominal_sizes={"all": _n},
            lazy=True,
            resize=IMAGENET_RESIZE,
            class_subset=_name,
            base="imagenet",
            layout=_layout,
        )
    )

_SKETCH_LAYOUT = _wnid_layout(1000, "n01440764", "sketch")
register_dataset(
    DatasetSpec(
        name="imagenet-sketch",
        num_classes=1000,
        resolution=IMAGENET_RESOLUTION,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="ImageNet-Sketch (Wang et al. 2019): 50,889 sketches of the 1,000 classes",
        reader=imagenet_folder_reader(
            "imagenet-sketch", {"all": ""}, wnid_to_index, IMAGENET_RESOLUTION, IMAGENET_RESIZE, _SKETCH_LAYOUT
        ),
        split_scheme="shift",
        test_part="all",
        nominal_sizes={"all": 50_889},
        lazy=True,
        resize=IMAGENET_RESIZE,
        base="imagenet",
        layout=_SKETCH_LAYOUT,
    )
)

register_dataset(
    DatasetSpec(
        name="imagenet-v2",
        num_classes=1000,
        resolution=IMAGENET_RESOLUTION,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description="ImageNetV2 matched-frequency (Recht et al. 2019): 10,000 images, folders by class index",
        reader=imagenet_folder_reader(
            "imagenet-v2", {"all": ""}, _v2_labels, IMAGENET_RESOLUTION, IMAGENET_RESIZE, IMAGENET_V2_LAYOUT
        ),
        split_scheme="shift",
        test_part="all",
        nominal_sizes={"all": 10_000},
        lazy=True,
        resize=IMAGENET_RESIZE,
        base="imagenet",
        layout=IMAGENET_V2_LAYOUT,
    )
)

IMAGENET_REAL_LAYOUT = (
    "  ROOT/real.json              ImageNet-ReaL's labels (Beyer et al. 2020): a list with one list of\n"
    "                              class indices per validation image, in ILSVRC2012_val_00000001… order\n"
    "  ROOT/val/<wnid>/<image>     the 50,000 ImageNet validation images in their wnid folders, named\n"
    "                              ILSVRC2012_val_<8 digits>.JPEG (the ImageNet root with real.json beside val/)"
)
register_dataset(
    DatasetSpec(
        name="imagenet-real",
        num_classes=1000,
        resolution=IMAGENET_RESOLUTION,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description=(
            "ImageNet-ReaL (Beyer et al. 2020): the validation images with reassessed label sets; right if "
            "the prediction is in the set; the images with an empty set (about 3,500) are left out"
        ),
        reader=label_set_reader(
            "imagenet-real", wnid_to_index, IMAGENET_RESOLUTION, IMAGENET_RESIZE, IMAGENET_REAL_LAYOUT
        ),
        split_scheme="shift",
        test_part="all",
        nominal_sizes={"all": 46_500},  # about 3,500 of the 50,000 have an empty set (TFDS imagenet2012_real)
        lazy=True,
        resize=IMAGENET_RESIZE,
        base="imagenet",
        layout=IMAGENET_REAL_LAYOUT,
        scoring="label-sets",
    )
)


def _category_labels() -> dict[str, int]:
    return {category: i for i, (category, _) in enumerate(read_categories("cue-conflict"))}


CUE_CONFLICT_LAYOUT = (
    "  ROOT/<category>/<image>.png   16 folders named by the shape's category (airplane, bear, …, truck),\n"
    "      e.g. ROOT/cat/cat7-elephant1.png (1,280 images; texture-vs-shape's\n"
    "      stimuli/style-transfer-preprocessed-512, or model-vs-human's cue-conflict)"
)
register_dataset(
    DatasetSpec(
        name="cue-conflict",
        num_classes=16,
        resolution=IMAGENET_RESOLUTION,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description=(
            "Cue-conflict stimuli (Geirhos et al. 2019): 1,280 images with the shape of one of 16 categories "
            "and the texture of another; ImageNet outputs mapped to the categories, right if the shape's"
        ),
        reader=imagenet_folder_reader(
            "cue-conflict", {"all": ""}, _category_labels, IMAGENET_RESOLUTION, IMAGENET_RESIZE, CUE_CONFLICT_LAYOUT
        ),
        split_scheme="shift",
        test_part="all",
        nominal_sizes={"all": 1_280},
        lazy=True,
        resize=IMAGENET_RESIZE,
        base="imagenet",
        layout=CUE_CONFLICT_LAYOUT,
        scoring="categories",
    )
)

TINY_IMAGENET_RESOLUTION = 64
# The RWS code normalizes Tiny-ImageNet inside the model (VITA-Group/Robust_Weight_Signatures
# tools.py:149-151 sets model.normalize with these statistics, for Tiny-ImageNet and Tiny-ImageNet-C);
# the data loaders give ToTensor()'s [0,1] images, so the model is where the statistics live, as here.
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
TINY_IMAGENET_LAYOUT = (
    "  ROOT/wnids.txt                      the 200 class wnids\n"
    "  ROOT/train/<wnid>/images/<image>    500 training images per class, e.g.\n"
    "                                      ROOT/train/n01443537/images/n01443537_0.JPEG (64×64)\n"
    "  ROOT/val/images/<image>             the 10,000 validation images, e.g. ROOT/val/images/val_0.JPEG\n"
    "  ROOT/val/val_annotations.txt        '<file>\\t<wnid>\\t<bounding box>' per validation image\n"
    "  (tiny-imagenet-200.zip unpacked; its own top folder, ROOT/tiny-imagenet-200/…, works too;\n"
    "  so does val/ sorted into ROOT/val/<wnid>/<image> folders, as the RWS code reads it)"
)


def _tiny_labels() -> dict[str, int]:
    return subset_label_map("tiny-imagenet")


register_dataset(
    DatasetSpec(
        name="tiny-imagenet",
        num_classes=200,
        resolution=TINY_IMAGENET_RESOLUTION,
        mean=TINY_IMAGENET_MEAN,
        std=TINY_IMAGENET_STD,
        description="Tiny-ImageNet (200 classes; 100,000 train / 10,000 val, 64×64): the RWS paper's ResNet-50 setting",
        reader=tiny_imagenet_reader("tiny-imagenet", _tiny_labels, TINY_IMAGENET_RESOLUTION, TINY_IMAGENET_LAYOUT),
        split_scheme="official",
        train_part="train",
        test_part="val",
        nominal_sizes={"train": 100_000, "val": 10_000},
        lazy=True,
        layout=TINY_IMAGENET_LAYOUT,
    )
)

TINY_IMAGENET_C_LAYOUT = (
    "  ROOT/<corruption>/<severity 1-5>/<wnid>/<image>\n"
    "      e.g. ROOT/gaussian_noise/3/n01443537/val_68.JPEG (64×64; Hendrycks' Tiny-ImageNet-C archive)\n"
    "  (the RWS code's ROOT/train/… + ROOT/val/<corruption>/… works too: val/ is read)"
)
register_dataset(
    DatasetSpec(
        name="tiny-imagenet-c",
        num_classes=200,
        resolution=TINY_IMAGENET_RESOLUTION,
        mean=TINY_IMAGENET_MEAN,
        std=TINY_IMAGENET_STD,
        description="Tiny-ImageNet-C (Hendrycks & Dietterich 2019): corruptions × 5 severities of the val set, 64×64 JPEG",
        reader=imagenet_c_reader("tiny-imagenet-c", _tiny_labels, TINY_IMAGENET_RESOLUTION, TINY_IMAGENET_C_LAYOUT),
        split_scheme="shift",
        nominal_sizes={"*": 10_000},
        lazy=True,
        base="tiny-imagenet",
        layout=TINY_IMAGENET_C_LAYOUT,
    )
)
