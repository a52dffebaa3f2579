"""frac_mono and friends on hand-computed cases (authors' model_helper.py)."""

import pytest
import torch

from monosem.interpret import feature_order, neuron_order, neuron_table
from monosem.metrics import count_mono, frac_mono, measure, neuron_classes
from monosem.models import ToyModels, solu


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
