import pytest
import torch
from torch.nn import functional as F

from robustsoup.attacks import lp_norm, pgd_attack, project, robust_correct_apgd_ce

EPS = {"Linf": 0.1, "L2": 1.5, "L1": 12.0}


@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_projection_lands_in_ball_and_box_and_is_idempotent(norm):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(5, 3, 8, 8, generator=generator)
    delta = torch.randn(5, 3, 8, 8, generator=generator) * 2
    projected = project(delta, x, norm, EPS[norm])
    assert (lp_norm(projected, norm) <= EPS[norm] * (1 + 1e-5)).all()
    assert ((x + projected) >= 0).all() and ((x + projected) <= 1).all()
    assert torch.allclose(project(projected, x, norm, EPS[norm]), projected, atol=1e-5)


def test_l1_projection_is_the_closest_feasible_point():
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 6, 6, generator=generator)
    delta = torch.randn(3, 1, 6, 6, generator=generator)
    eps = 3.0
    projected = project(delta, x, "L1", eps)
    best = (projected - delta).flatten(1).norm(dim=1)
    for _ in range(200):  # no random feasible point is closer
        other = project(projected + 0.05 * torch.randn(projected.shape, generator=generator), x, "L1", eps)
        assert ((other - delta).flatten(1).norm(dim=1) >= best - 1e-4).all()
    # The L1 budget is spent exactly when the target lies outside the ball.
    assert torch.allclose(lp_norm(projected, "L1"), torch.full((3,), eps), atol=1e-3)


@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_pgd_stays_in_threat_model_and_raises_the_loss(norm, tiny_model, random_images):
    x, y = random_images
    x_adv = pgd_attack(tiny_model, x, y, norm, EPS[norm], steps=5, generator=torch.Generator().manual_seed(0))
    assert (lp_norm(x_adv - x, norm) <= EPS[norm] * (1 + 1e-5)).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    with torch.no_grad():
        assert F.cross_entropy(tiny_model(x_adv), y) > F.cross_entropy(tiny_model(x), y)


@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_apgd_fools_a_nominal_model_and_counts_per_point(norm, trained_model, digits_splits):
    x, y = digits_splits["test"].as_float(32)
    with torch.no_grad():
        clean = trained_model(x).argmax(1) == y
    assert clean.float().mean() > 0.8
    y_wrong = y.clone()
    y_wrong[0] = (y[0] + 1) % 10  # a point that is wrong clean can never count as robust
    robust = robust_correct_apgd_ce(trained_model, x, y_wrong, norm, EPS[norm], n_iter=10)
    assert robust.dtype == torch.bool and robust.shape == (32,)
    assert not robust[0]
    assert not (robust & ~clean).any()
    # A nominally trained model has little robustness at these radii.
    assert robust.float().mean() < clean.float().mean() - 0.3


@pytest.mark.parametrize("norm, eps", [("Linf", 0.015), ("L2", 0.3), ("L1", 3.0)])
def test_training_apgd_is_as_strong_as_autoattack_apgd_ce(norm, eps, trained_model, digits_splits):
    """Done-when of the training issue: robust accuracy ≤ pyautoattack APGD-CE's + 0.5 points."""
    from robustsoup.attacks import apgd_train

    x, y = digits_splits["test"].as_float(200)
    x_best, ours = apgd_train(trained_model, x, y, norm, eps, n_iter=100, training=False)
    theirs = robust_correct_apgd_ce(trained_model, x, y, norm, eps, n_iter=100)
    assert 0.02 < theirs.float().mean() < 0.9  # a regime where the comparison means something
    assert ours.float().mean() <= theirs.float().mean() + 0.005
    assert (lp_norm(x_best - x, norm) <= eps * (1 + 1e-5)).all()
    assert (x_best >= 0).all() and (x_best <= 1).all()


def test_training_apgd_refuses_a_model_in_train_mode(tiny_model, random_images):
    from robustsoup.attacks import apgd_train

    x, y = random_images
    with pytest.raises(ValueError, match="ε must be positive"):
        apgd_train(tiny_model, x, y, "Linf", 0.0)
    with pytest.raises(RuntimeError, match="eval mode"):
        apgd_train(tiny_model.train(), x, y, "Linf", 0.1)
