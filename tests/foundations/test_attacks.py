import pytest
import torch
from torch.nn import functional as F

from robustsoup.attacks import attack_plan, lp_norm, pgd_attack, project, robust_correct

EPS = {"Linf": 0.1, "L2": 1.5, "L1": 12.0}


def robust_correct_apgd_ce(model, x, y, norm: str, eps: float, n_iter: int) -> torch.Tensor:
    """Per-point robust correctness under AutoAttack's APGD-CE alone (the evaluation's fast mode)."""
    return robust_correct(model, x, y, norm, eps, attack_plan("fast", norm, 0, n_iter))


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


@pytest.mark.parametrize(
    "norm, eps, n_iter",
    [
        ("Linf", 0.015, 25),
        pytest.param("Linf", 0.015, 100, marks=pytest.mark.ci),
        pytest.param("L2", 0.3, 100, marks=pytest.mark.ci),
        pytest.param("L1", 3.0, 100, marks=pytest.mark.ci),
    ],
)
def test_training_apgd_is_as_strong_as_autoattack_apgd_ce(norm, eps, n_iter, trained_model, digits_splits):
    """Done-when of the training issue: robust accuracy ≤ pyautoattack APGD-CE's + 0.5 points, at 100 iterations
    on every norm (~30 s a norm on 2 cores: CI, marked ``ci``). `make test` checks L∞ at 25 iterations
    (11.0 % against 11.0 %); at 25 the comparison does not hold for L2 (53.5 % against 52.5 %). Every
    iterate of the attack is compared with the reference's in tests/parity/test_rf_apgd.py."""
    from robustsoup.attacks import apgd_train

    x, y = digits_splits["test"].as_float(200)
    x_best, ours = apgd_train(trained_model, x, y, norm, eps, n_iter=n_iter, training=False)
    theirs = robust_correct_apgd_ce(trained_model, x, y, norm, eps, n_iter=n_iter)
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


def test_standard_plans_are_autoattacks_standard_version():
    """AutoAttack's set_version('standard'): L∞/L2 1 CE restart + 9 targets × 1; L1 5 + 5 × 1 at 3ε → 2ε → ε."""
    from robustsoup.attacks import AttackPlan, attack_plan

    for norm in ("Linf", "L2"):
        plan = attack_plan("standard", norm, 10)
        assert plan == AttackPlan("standard", 100, 1, 9, 1, ())
        assert plan.iter_schedule == (100,) and plan.runs == 10
        assert plan.name == "apgd-ce+apgd-t(100it, 1+9×1 runs)"  # as before: L∞/L2 rows keep their attack name
    l1 = attack_plan("standard", "L1", 10)
    assert (l1.n_iter, l1.restarts_ce, l1.n_target_classes, l1.restarts_t) == (100, 5, 5, 1)
    assert l1.eps_schedule == (3.0, 2.0, 1.0) and l1.iter_schedule == (30, 30, 40)
    assert l1.runs == 10 and l1.name == "apgd-ce+apgd-t(100it, 5+5×1 runs)"
    # Fewer classes than targets: every other class once (AutoAttack assumes ten or more).
    assert attack_plan("standard", "L1", 4).n_target_classes == 3
    assert attack_plan("standard", "Linf", 4).n_target_classes == 3


def test_strong_l1_plan_differs_from_standard_only_for_l1():
    from robustsoup.attacks import attack_plan

    strong = attack_plan("strong-l1", "L1", 10)
    assert (strong.restarts_ce, strong.n_target_classes, strong.restarts_t) == (5, 9, 5)
    assert strong.eps_schedule == (3.0, 2.0, 1.0) and strong.runs == 50
    assert strong.name == "apgd-ce+apgd-t(100it, 5+9×5 runs)"
    for norm in ("Linf", "L2"):
        standard, other = attack_plan("standard", norm, 10), attack_plan("strong-l1", norm, 10)
        assert (other.n_iter, other.restarts_ce, other.n_target_classes, other.restarts_t, other.eps_schedule) == (
            standard.n_iter,
            standard.restarts_ce,
            standard.n_target_classes,
            standard.restarts_t,
            standard.eps_schedule,
        )


def test_fast_plan_and_the_l1_schedule_split():
    from robustsoup.attacks import AttackPlan, attack_plan, largereps_iterations

    assert attack_plan("fast", "Linf", 10, n_iter=20, n_restarts=2) == AttackPlan("fast", 20, 2, 0, 0, ())
    fast_l1 = attack_plan("fast", "L1", 10, n_iter=20)
    assert fast_l1.eps_schedule == (3.0, 2.0, 1.0) and fast_l1.iter_schedule == (6, 6, 8)
    assert fast_l1.name == "apgd-ce(20it×1)"
    # pyautoattack: ⌈0.3·n⌉, ⌈0.3·n⌉, the rest.
    assert [largereps_iterations(n) for n in (100, 10, 7, 2)] == [(30, 30, 40), (3, 3, 4), (3, 3, 1), (1, 1, 0)]
    with pytest.raises(ValueError, match="n_iter ≥ 2"):
        largereps_iterations(1)
    with pytest.raises(ValueError, match="unknown evaluation mode 'strong'"):
        attack_plan("strong", "L1", 10)
    with pytest.raises(ValueError, match="ε schedule"):
        AttackPlan("fast", 20, 1, 0, 0, (2.0, 1.0))


class _Linear(torch.nn.Module):
    """A linear classifier with wide margins: no tiny perturbation changes its decision."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3 * 4 * 4, 10)

    def forward(self, x):
        return 100 * self.layer(x.flatten(1))


def _record_runs(monkeypatch) -> list[tuple[str, float, int]]:
    """Patch pyautoattack's single APGD run to log (attack, radius, iterations) of every call."""
    from pyautoattack.autopgd_base import APGDAttack

    calls = []
    original = APGDAttack.attack_single_run

    def recorded(self, x, y, x_init=None):
        calls.append((type(self).__name__, round(float(self.eps), 9), int(self.n_iter)))
        return original(self, x, y, x_init=x_init)

    monkeypatch.setattr(APGDAttack, "attack_single_run", recorded)
    return calls


@pytest.mark.parametrize("norm, eps", [("L1", 1e-4), ("Linf", 1e-6), ("L2", 1e-6)])
def test_standard_evaluation_runs_autoattacks_plan(norm, eps, monkeypatch):
    """pyautoattack runs exactly the plan: restarts, targets and, for L1, 3ε → 2ε → ε over 30/30/40 iterations."""
    from robustsoup.attacks import attack_plan, robust_correct

    model = _Linear().eval()
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct clean, and robust at this tiny radius: every run happens
    calls = _record_runs(monkeypatch)
    plan = attack_plan("standard", norm, 10)
    robust = robust_correct(model, x, y, norm, eps, plan)
    assert robust.all()
    stages = [(eps * m, n) for m, n in zip(plan.eps_schedule or (1.0,), plan.iter_schedule)]
    ce = [(r, n) for a, r, n in calls if a == "APGDAttack"]
    targeted = [(r, n) for a, r, n in calls if a == "APGDAttack_targeted"]
    assert len(ce) == plan.restarts_ce * len(stages) and len(targeted) == plan.n_target_classes * len(stages)
    expected = [(round(r, 9), n) for r, n in stages]
    assert ce == expected * plan.restarts_ce
    assert targeted == expected * plan.n_target_classes * plan.restarts_t
    if norm == "L1":
        assert expected == [(round(3 * eps, 9), 30), (round(2 * eps, 9), 30), (round(eps, 9), 40)]


def test_standard_l1_evaluation_fools_a_nominal_model(trained_model, digits_splits):
    from robustsoup.attacks import attack_plan, robust_correct

    x, y = digits_splits["test"].as_float(32)
    with torch.no_grad():
        clean = trained_model(x).argmax(1) == y
    robust = robust_correct(trained_model, x, y, "L1", EPS["L1"], attack_plan("standard", "L1", 10))
    assert not (robust & ~clean).any()
    assert robust.float().mean() < clean.float().mean() - 0.3


@pytest.mark.parametrize("norm, eps", [("Linf", 0.01), ("L1", 4.0)])  # radii that leave 21 and 22 of 32 robust
def test_channels_last_attacks_give_the_same_points_and_leave_the_model_as_it_was(
    trained_model, digits_splits, norm, eps
):
    """evaluate.channels_last is a speed option: the same per-point results here, the caller's tensors untouched."""
    x, y = digits_splits["test"].as_float(32)
    plan = attack_plan("fast", norm, 10, n_iter=10)
    before = {name: (t.clone(), t.stride()) for name, t in trained_model.state_dict().items()}
    contiguous = robust_correct(trained_model, x, y, norm, eps, plan)
    last = robust_correct(trained_model, x, y, norm, eps, plan, channels_last=True)
    assert torch.equal(contiguous, last) and 0 < int(last.sum()) < len(y)
    for name, tensor in trained_model.state_dict().items():
        assert torch.equal(tensor, before[name][0]) and tensor.stride() == before[name][1], name


def test_the_l1_schedule_goes_with_l1_only(tiny_model, random_images):
    from robustsoup.attacks import attack_plan, robust_correct

    x, y = random_images
    with pytest.raises(ValueError, match="got the schedule .* for Linf"):
        robust_correct(tiny_model, x, y, "Linf", 0.1, attack_plan("standard", "L1", 10))
    with pytest.raises(ValueError, match="got the schedule none for L1"):
        robust_correct(tiny_model, x, y, "L1", 12.0, attack_plan("fast", "Linf", 10, n_iter=5))
