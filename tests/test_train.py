import pytest
import torch

from robustsoup.data import ImageSplit
from robustsoup.train import TrainSettings, learning_rate, make_input_policy, train_model

from conftest import tiny_meta


def test_piecewise_ft_divides_by_ten_each_third():
    rates = [learning_rate("piecewise-ft", 0.3, i, 9) for i in range(9)]
    assert rates == pytest.approx([0.3] * 3 + [0.03] * 3 + [0.003] * 3)
    assert learning_rate("cosine", 1.0, 0, 10) == 1.0 and learning_rate("cosine", 1.0, 5, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate("step", 1.0, 0, 1)


def _data():
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(48, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (48,), generator=generator)
    return ImageSplit(images, labels, "synthetic", "train")


@pytest.mark.parametrize("norm", ["none", "Linf", "L1"])
def test_training_is_deterministic_under_a_seed(norm):
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_meta().build()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        policy = make_input_policy(norm, {"none": None, "Linf": 0.1, "L1": 8.0}[norm], 2, seed=0)
        history = train_model(model, _data(), policy, TrainSettings(epochs=2, lr=0.1, batch_size=16),
                              torch.device("cpu"))
        assert len(history) == 2 and history[-1]["lr"] > 0
        assert not torch.equal(model.state_dict()["net.conv1.weight"], before["net.conv1.weight"])
        results.append(model.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
