"""frac_mono and friends on hand-computed cases (authors' model_helper.py)."""

import pytest
import torch

from monosem.analysis.interpret import feature_order, neuron_order, neuron_table
from monosem.analysis.metrics import count_mono, frac_mono, measure, neuron_classes, noise_activation_change
from monosem.toy.models import ToyModels, solu


def test_frac_mono_is_max_over_sum_with_the_papers_epsilon():
    sfa = torch.tensor([[0.5, 0.0, 0.0], [0.3, 0.1, 0.0], [0.0, 0.0, 0.0], [0.999, 0.001, 0.0]])
    torch.testing.assert_close(frac_mono(sfa), torch.tensor([0.5 / (1e-10 + 0.5), 0.75, 0.0, 0.999]))
    assert neuron_classes(sfa).tolist() == [1, 2, 0, 2]  # 0.999 itself is not above the threshold
    assert count_mono(sfa[None]).tolist() == [1]


def test_solu_is_x_exp_x():
    x = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(solu(x), x * torch.exp(x))


def hand_model():
    """2 features in 2 dims (P = I), 3 neurons: one per feature (bias -0.5) and one that reads both."""
    model = ToyModels(1, 2, 3, 2)
    with torch.no_grad():
        model.W1[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        model.b1[0] = torch.tensor([-0.5, -0.5, 0.2])
        model.W2[0] = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    return model


def test_measure_counts_mono_neurons_and_bias_stats():
    model = hand_model()
    probes = torch.eye(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    m = measure(model, probes, x, x)
    # sfa: neuron 0 -> [0.5, 0], neuron 1 -> [0, 0.5], neuron 2 -> [1.2, 1.2]
    assert m["n_mono"].item() == 2 and m["n_poly"].item() == 1 and m["n_dead"].item() == 0
    assert m["mono_per_feature"].item() == 1.0 and m["mono_per_neuron"].item() == pytest.approx(2 / 3)
    assert m["features_covered"].item() == 1.0
    assert m["bias_mean_mono"].item() == pytest.approx(-0.5) and m["bias_mean_poly"].item() == pytest.approx(0.2)
    assert m["n_bias_positive"].item() == 1
    assert m["bias_mean_live"].item() == pytest.approx((-0.5 - 0.5 + 0.2) / 3)
    # y for x = e1: h = [0.5, 0, 1.2], y = [1, 0]: exact. For x = 0: h = [0, 0, 0.2], y = 0. Loss 0.
    assert m["loss"].item() == pytest.approx(0.0)


def test_neuron_table_sorts_by_monosemanticity_and_names_top_features():
    model = hand_model()
    sfa = model.hidden(torch.eye(2)[None])[0].T.detach()
    rows = neuron_table(sfa, model.b1[0].detach(), model.W2[0].detach(), top=2)
    assert [r["class"] for r in rows] == ["mono", "mono", "poly"]
    assert rows[0]["feature_1"] == 0 and rows[0]["activation_1"] == pytest.approx(0.5)
    assert rows[2]["share_1"] == pytest.approx(0.5) and rows[2]["n_features_active"] == 2
    order = neuron_order(sfa)
    assert order[-1] == 2
    assert feature_order(sfa, order).tolist() == [0, 1]


def test_monosemantic_scale_is_phi_quantile_against_training_stats():
    from monosem.analysis.metrics import monosemantic_scale, spearman

    # Neuron 0 spikes rarely (mono-like), neuron 1 is dense; stats of the training stream given.
    h = torch.zeros(100, 2)
    h[:2, 0] = 1.0
    h[:, 1] = torch.linspace(0, 1, 100)
    mean, var = torch.tensor([0.02, 0.5]), torch.tensor([0.02 * 0.98, 1 / 12])
    ms = monosemantic_scale(h, mean, var, q=0.99)
    # 99th of 100 sorted φ values: neuron 0's second spike (1 − 0.02)²/0.0196 = 49; neuron 1's φ is largest
    # at both ends, z = 0 and z = 1, (0.5)²·12 = 3, so its second-largest value is 3 as well.
    assert ms[0].item() == pytest.approx(0.98**2 / 0.0196)
    assert ms[1].item() == pytest.approx(3.0, rel=1e-5)
    assert monosemantic_scale(h, mean, torch.tensor([0.0, 1 / 12]))[0] == 0  # no training variance
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 30, 20])) == pytest.approx(0.5)


def test_spearman_uses_average_ranks_for_ties_as_scipy():
    from scipy.stats import spearmanr

    from monosem.analysis.metrics import average_ranks, spearman

    a, b = torch.tensor([1.0, 2, 2, 3]), torch.tensor([1.0, 3, 2, 4])
    assert average_ranks(a).tolist() == [1, 2.5, 2.5, 4]
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): covariance 4.5 over sqrt(4.5 · 5)
    assert spearman(a, b) == pytest.approx(0.9 ** 0.5)
    x, y = torch.randint(0, 5, (200,)).float(), torch.randint(0, 7, (200,)).float()
    assert spearman(x, y) == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)


def test_welford_tracking_matches_mean_and_variance_of_all_training_activations():
    from monosem.config import Instance, ModelCfg, TrainCfg, World
    from monosem.training.toy import ToyStudyModule
    from monosem.worlds import generate_world

    world = generate_world(World(n_features=6, d_embed=3, eps=0.3, n_eval=8))
    inst = Instance(point={}, seed=0, model=ModelCfg(neurons=4), train=TrainCfg(steps=4, batch_size=5, lr=0.01))
    module = ToyStudyModule(world, [inst])
    batches = [torch.rand(1, 5, 4) for _ in range(3)]
    for h in batches:
        module._track_activations(h)
    allh = torch.cat(batches, 1)[0].double()
    torch.testing.assert_close(module.act_mean[0], allh.mean(0))
    torch.testing.assert_close(module.act_m2[0] / (module.act_count - 1), allh.var(0))


def test_noise_activation_change_is_relative_frobenius_change_per_class():
    """Mono neuron 0 = ReLU(x0 - 0.5) stays on (x0 = 1, σ = 0.01), poly neuron 2 = ReLU(x0 + x1 + 0.2) is
    always on: both move linearly with the noise, so the changes are σ‖z0‖/(0.5√n) and σ‖z0 + z1‖/(1.2√n)."""
    model, n, sigma = hand_model(), 1000, 0.01
    x = torch.tensor([[1.0, 0.0]]).repeat(n, 1)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    z = torch.randn(x.shape, generator=gen())
    out = noise_activation_change(model, torch.eye(2), x, torch.tensor([sigma]), gen())
    # neuron 1 (mono, ReLU(x1 - 0.5)) is off throughout: it adds nothing to either norm
    assert out["noise_change_mono"].item() == pytest.approx(sigma * z[:, 0].norm().item() / (0.5 * n ** 0.5), rel=1e-4)
    assert out["noise_change_poly"].item() == pytest.approx(sigma * z.sum(1).norm().item() / (1.2 * n ** 0.5), rel=1e-4)
    zero = noise_activation_change(model, torch.eye(2), x, torch.tensor([0.0]), gen())
    assert torch.isnan(zero["noise_change_mono"]).all() and torch.isnan(zero["noise_change_poly"]).all()


def test_neuron_table_leaves_frac_mono_undefined_where_negative_activations_cancel_the_response():
    # neuron 0: one response 0.3 and GeLU-like negative tails summing below zero (Σ = −0.05): the paper's ratio
    # would read 0.3 / −0.05 = −6; neuron 1: an ordinary polysemantic neuron (0.5 / 1.0)
    sfa = torch.tensor([[0.3, -0.15, -0.1, -0.1], [0.5, 0.5, 0.0, 0.0]])
    rows = {r["neuron"]: r for r in neuron_table(sfa, torch.zeros(2), torch.ones(3, 2))}
    assert rows[0]["frac_mono"] is None and rows[0]["class"] != "monosemantic"
    assert rows[1]["frac_mono"] == pytest.approx(0.5)
