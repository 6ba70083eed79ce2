"""RWS on Tiny-ImageNet normalizes its inputs inside the model (VITA-Group/Robust_Weight_Signatures
tools.py:149-151 for Tiny-ImageNet, :155-157 for Tiny-ImageNet-C)."""

import torch

from robustsoup.data import get_dataset_spec
from robustsoup.models import create_model

REFERENCE = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))


def test_tiny_imagenet_and_its_corruptions_carry_the_reference_statistics_into_the_model():
    for name in ("tiny-imagenet", "tiny-imagenet-c"):
        spec = get_dataset_spec(name)
        assert (tuple(spec.mean), tuple(spec.std)) == REFERENCE, name
    spec = get_dataset_spec("tiny-imagenet")
    model = create_model("preact_resnet_small", spec.num_classes, spec.mean, spec.std, width=4)
    x = torch.rand(2, 3, 64, 64)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in REFERENCE)
    assert torch.equal(model(x), model.net((x - mean) / std))
