import pytest
import torch

from robustsoup.soups.grid import simplex_grid
from robustsoup.soups.search import (
    LABEL_FREE_METHODS,
    SELECTION_METHODS,
    SoupScorer,
    best_index,
    ensemble_correct,
    greedy_soup,
    grid_search,
    learned_soup,
    successive_halving,
)
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import CleanInputs

from conftest import tiny_meta

NAMES = ["a", "b", "c"]
WIDTH = 8


@pytest.fixture(scope="module")
def parent(digits_splits):
    """The common parent of the three models: 2 epochs on every class."""
    torch.manual_seed(0)
    model = tiny_meta(width=WIDTH).build()
    train_model(
        model,
        digits_splits["train"],
        CleanInputs(),
        TrainSettings(epochs=2, lr=0.1, batch_size=64),
        torch.device("cpu"),
    )
    return model.state_dict()


@pytest.fixture(scope="module")
def three_models(parent, digits_splits):
    """Three small digits models from one parent: trained briefly on different class subsets."""
    from robustsoup.data import ImageSplit

    states = []
    for i in range(3):
        model = tiny_meta(width=WIDTH).build()
        model.load_state_dict(parent)
        split = digits_splits["train"]
        keep = (split.labels % 3) != i  # each child forgets a third of the classes
        subset = ImageSplit(split.images[keep], split.labels[keep], "digits", "train")
        train_model(
            model, subset, CleanInputs(), TrainSettings(epochs=2, lr=0.1, batch_size=64, seed=i), torch.device("cpu")
        )
        states.append(model.state_dict())
    return states


def _scorer(states, **kwargs):
    return SoupScorer(tiny_meta(width=WIDTH).build(), states, NAMES, **kwargs)


def _fresh_soup_accuracy(states, weights, split_path, in_memory=False) -> float:
    """The path the scorer replaces: a new model, the mixed state dict, the split read from its file
    (``in_memory``: ``split_path`` is the split itself)."""
    from robustsoup.data import load_split
    from robustsoup.weights import affine_combination

    model = tiny_meta(width=WIDTH).build().eval()
    model.load_state_dict(affine_combination(states, weights))
    split = split_path if in_memory else load_split(split_path)
    with torch.no_grad():
        return int((model(split.images.float() / 255.0).argmax(1) == split.labels).sum()) / len(split)


def test_scorer_matches_a_freshly_built_soup(three_models, digits_splits, tmp_path):
    from robustsoup.data import prepare_splits

    data = digits_splits["adapt"]
    split_path = prepare_splits("digits", tmp_path, n_adapt=100, n_test=200, seed=0)["adapt"]
    scorer = _scorer(three_models)
    inputs = scorer.prepare(data.images)
    for weights in ([1, 0, 0], [0.2, 0.5, 0.3], [1.3, -0.3, 0.0]):
        fast = scorer.accuracy(dict(zip(NAMES, weights)), inputs, data.labels)
        slow = _fresh_soup_accuracy(three_models, weights, split_path)
        assert fast == pytest.approx(slow, abs=1e-9)
    assert scorer.forward_passes == 3 * len(data)
    # the scorer never changes the base states
    assert torch.equal(scorer.stack.stacked["conv1.weight"][0], three_models[0]["net.conv1.weight"])


def test_grid_search_scores_each_soup_by_its_accuracy_and_returns_the_argmax(three_models, digits_splits):
    data = digits_splits["adapt"]
    scorer = _scorer(three_models)
    inputs = scorer.prepare(data.images)
    grid = [dict(zip(NAMES, w)) for w in simplex_grid(3, 0.5)]
    selection = grid_search(scorer, grid, inputs, data.labels)
    scores = selection.details["scores"]
    # each score is the soup's own accuracy at that grid point, measured afresh
    other = _scorer(three_models)
    assert scores == [other.accuracy(w, inputs, data.labels) for w in grid]
    assert len(set(scores)) > 1  # the grid's soups differ, so the argmax is a choice
    assert selection.adaptation_accuracy == max(scores)
    assert selection.weights == grid[best_index(scores)]
    assert selection.forward_passes == len(grid) * len(data)
    assert best_index([0.1, 0.7, 0.7]) == 1


def test_successive_halving_uses_fewer_passes_and_finds_a_top_soup(three_models, digits_splits):
    images = torch.cat([digits_splits["adapt"].images, digits_splits["test"].images])
    labels = torch.cat([digits_splits["adapt"].labels, digits_splits["test"].labels])
    scorer = _scorer(three_models)
    inputs = scorer.prepare(images)
    grid = [dict(zip(NAMES, w)) for w in simplex_grid(3, 0.1)]
    full = grid_search(scorer, grid, inputs, labels)
    halving = successive_halving(scorer, grid, inputs, labels, first_images=10, keep=1 / 3)
    assert halving.forward_passes < full.forward_passes / 3
    assert halving.adaptation_accuracy >= full.adaptation_accuracy - 0.03
    with pytest.raises(ValueError, match="keep must be in"):
        successive_halving(scorer, grid, inputs, labels, keep=1.0)


def test_greedy_soup_goes_by_held_out_score_and_adds_only_what_strictly_helps(parent, three_models, digits_splits):
    """Five ingredients where order and the strict rule matter. On the adaptation images the children score
    a < b < c (e.g. 0.46, 0.60, 0.64); "twin" is c again (adding it ties: a strict rule refuses it); "helper" is
    2·parent − c, useless alone, whose average with c is exactly the parent (the running variances too:
    a plain weighted sum)."""
    data = digits_splits["adapt"]
    # a, b, c: the three children from the worst to the best on the adaptation images (their exact scores
    # move with the arithmetic and the CPU; the case needs only their order)
    ranking = SoupScorer(tiny_meta(width=WIDTH).build(), three_models, ["0", "1", "2"])
    ranked = ranking.prepare(data.images)
    scores = [ranking.accuracy({str(i): 1.0}, ranked, data.labels) for i in range(3)]
    a, b, c = (three_models[i] for i in sorted(range(3), key=scores.__getitem__))
    helper = {k: 2 * parent[k] - c[k] if torch.is_floating_point(c[k]) else c[k] for k in c}
    names = ["a", "b", "c", "twin", "helper"]
    scorer = SoupScorer(tiny_meta(width=WIDTH).build(), [a, b, c, dict(c), helper], names)
    inputs = scorer.prepare(data.images)
    own = {n: scorer.accuracy({n: 1.0}, inputs, data.labels) for n in names}
    soup_of_c_and_helper = scorer.accuracy({"c": 0.5, "helper": 0.5}, inputs, data.labels)
    parent_alone = _fresh_soup_accuracy([parent], [1.0], digits_splits["adapt"], in_memory=True)
    # the case: c is the best ingredient, the twin ties with it, the helper is the worst alone but helps c
    assert own["c"] == own["twin"] > own["b"] > own["a"] > own["helper"]
    assert soup_of_c_and_helper == pytest.approx(parent_alone) and soup_of_c_and_helper > own["c"]
    before = scorer.forward_passes
    selection = greedy_soup(scorer, inputs, data.labels)
    assert selection.details["order"] == ["c", "twin", "b", "a", "helper"]  # by held-out score, ties stable
    assert selection.weights == {"c": 0.5, "helper": 0.5}
    assert selection.adaptation_accuracy == soup_of_c_and_helper
    assert selection.forward_passes == scorer.forward_passes - before == (5 + 4) * len(data)


def test_learned_weights_beat_the_uniform_soup(three_models, digits_splits):
    data = digits_splits["adapt"]
    scorer = _scorer(three_models)
    inputs = scorer.prepare(data.images)
    # Adapt to a shift where only classes ≡ 0 mod 3 matter: model "a" forgot them.
    keep = data.labels % 3 == 0
    uniform = scorer.accuracy(dict.fromkeys(NAMES, 1 / 3), inputs[keep], data.labels[keep])
    learned = learned_soup(scorer, inputs[keep], data.labels[keep], steps=60, lr=0.1, batch_size=1000, init="uniform")
    assert learned.adaptation_accuracy > uniform
    assert sum(learned.weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert learned.weights["a"] < 1 / 3
    # From the best base model, the result is never worse than that model on the adaptation images.
    from_best = learned_soup(scorer, inputs[keep], data.labels[keep], steps=20, lr=0.5, check_every=5)
    best_base = max(scorer.accuracy({n: 1.0}, inputs[keep], data.labels[keep]) for n in NAMES)
    assert from_best.adaptation_accuracy >= best_base
    with pytest.raises(ValueError, match="expected one of"):
        learned_soup(scorer, inputs[keep], data.labels[keep], init="middle")
    assert set(SELECTION_METHODS) == {"grid", "halving", "greedy", "learned"} | set(LABEL_FREE_METHODS)


def test_ensemble_averages_probabilities(three_models, digits_splits):
    data = digits_splits["test"]
    models = []
    for state in three_models:
        model = tiny_meta(width=WIDTH).build().eval()
        model.load_state_dict(state)
        models.append(model)
    single = ensemble_correct(models[:1], data.images, data.labels)
    x = data.images.float() / 255
    with torch.no_grad():
        logits_a, logits_c = models[0](x), models[2](x)
    assert torch.equal(single, logits_a.argmax(1) == data.labels)
    # two different models: the argmax of the mean of their softmax probabilities, by hand
    by_hand = ((logits_a.softmax(1) + logits_c.softmax(1)) / 2).argmax(1) == data.labels
    pair = ensemble_correct([models[0], models[2]], data.images, data.labels, batch_size=64)
    assert torch.equal(pair, by_hand)
    # …which is neither the mean of the logits nor a vote on these images
    logit_mean = ((logits_a + logits_c) / 2).argmax(1) == data.labels
    assert (by_hand != logit_mean).any() and not torch.equal(pair, single)


@pytest.mark.parametrize("weights", [[0.2, 0.5, 0.3], [1.3, -0.3, 0.0], [-0.4, 0.7, 0.7], [1.5, 0.0, -0.5]])
def test_one_mixer_the_learned_soup_the_scorer_and_the_checkpoint_compute_the_same_soup(
    three_models, digits_splits, weights
):
    """make_soup (affine_combination), the scorer and learned soups mix through one WeightStack:
    the same weights give the same logits, extrapolations (floored running variances) included."""
    from torch.func import functional_call

    from robustsoup.weights import affine_combination

    scorer = _scorer(three_models)
    x = scorer.prepare(digits_splits["adapt"].images[:64])
    scorer.load(dict(zip(NAMES, weights)))
    via_scorer = scorer.logits(x)
    via_learned = functional_call(scorer.net, scorer.stack.mix(torch.tensor(weights)), (x,))
    checkpoint = tiny_meta(width=WIDTH).build().eval()
    checkpoint.load_state_dict(affine_combination(three_models, weights))
    with torch.no_grad():
        via_checkpoint = checkpoint.net(x)
    assert torch.allclose(via_scorer, via_learned, atol=1e-5)
    assert torch.allclose(via_scorer, via_checkpoint, atol=1e-4)
    # running variances: the plain weighted sum where positive, else the smallest of the ingredients
    # with non-zero weight (an ingredient with weight 0 sets no floor)
    var = {k: v for k, v in affine_combination(three_models, weights).items() if k.endswith("running_var")}
    used = [s for s, w in zip(three_models, weights) if w != 0]
    for key, value in var.items():
        plain = sum(w * s[key].double() for s, w in zip(three_models, weights))
        floor = torch.stack([s[key] for s in used]).amin(0).double()
        assert (value > 0).all()
        assert torch.allclose(value.double(), torch.where(plain > 0, plain, floor), atol=1e-6)
