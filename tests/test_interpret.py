"""The mechanistic analysis on hand-built models whose answers are known."""

import pytest
import torch
import torch.nn.functional as F

from monosem.analysis.interpret import (
    abs_pairs,
    analyse,
    decomposition,
    linear_fit,
    multi_feature,
    reduced_rank_r2,
    sensitivity,
)


def test_reduced_rank_r2_recovers_the_rank_of_a_linear_map():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 6, generator=gen)
    W = torch.randn(6, 2, generator=gen) @ torch.randn(2, 10, generator=gen)  # rank 2
    Y = X @ W + 3.0  # plus a constant
    r2 = reduced_rank_r2(Y, X, 6)
    assert r2[0] == 0 and r2[1] < 0.99 and r2[2] == pytest.approx(1.0, abs=1e-9)
    B, c = linear_fit(Y, X)
    torch.testing.assert_close(c, torch.full((10,), 3.0, dtype=torch.float64))


def test_sensitivity_counts_move_with_threshold_and_amplitude():
    # Neuron 0 reads feature 0 only; neuron 1 reads feature 0 and a little of feature 1 (leak 0.005 above
    # threshold at amplitude 1, below it at amplitude 0.5 where b dominates).
    A = torch.tensor([[1.0, 0.0], [1.0, 0.3]])
    b = torch.tensor([-0.2, -0.295])
    s = sensitivity(A, b, F.relu)
    # frac_mono of neuron 1 at amplitude 1: 0.705 / 0.710 = 0.993
    assert s["n_mono_at_0.99"] == 2 and s["n_mono_at_0.999"] == 1 and s["n_mono_at_0.9999"] == 1
    assert s["n_mono_amp_0.5"] == 2 and s["n_mono_amp_1.0"] == 1


def test_multi_feature_adds_one_more_feature_to_the_top_one():
    A = torch.tensor([[1.0, 0.5, -2.0]])
    out = multi_feature(A, torch.tensor([-0.5]), F.relu, torch.tensor([0]))
    assert out[0, 0].isnan() and out[0, 1] == 1.0 and out[0, 2] == 0.0


def test_decomposition_of_a_model_of_identity_neurons():
    # Two features, P = I, one mono neuron per feature with bias -0.25 and output weight 1: y_i = relu(a - 0.25).
    A, b, W2 = torch.eye(2), torch.tensor([-0.25, -0.25]), torch.eye(2)
    amps = torch.tensor([0.0, 0.5, 1.0])
    masks = {"full": torch.tensor([True, True]), "none": torch.tensor([False, False])}
    out = decomposition(A, b, W2, torch.eye(2), F.relu, masks, amps)
    torch.testing.assert_close(out["full"], torch.tensor([[0.0, 0.0], [0.25, 0.25], [0.75, 0.75]]))
    assert out["none"].abs().max() == 0


def test_abs_pairs_finds_relu_plus_and_minus_neurons():
    # 3 features: feature 0 has a +/- pair, feature 1 only a + neuron, feature 2 only a neuron reading all.
    A = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0.3, 0.3, 0.3]])
    b = torch.tensor([-0.1, -0.1, -0.1, 0.5])
    assert abs_pairs(A, b, F.relu) == {"abs_features_pair": 1, "abs_features_one": 1, "abs_features_poly_only": 1}


def test_analyse_separates_linear_polysemantic_block_from_thresholded_mono_neurons():
    gen = torch.Generator().manual_seed(1)
    n, m = 8, 4
    P = torch.linalg.qr(torch.randn(n, m, generator=gen))[0].T  # (m, N)
    P = P / P.norm(dim=0)
    # Mono neurons: one per feature, reading p_i with a bias that cuts all other features.
    W1_mono, b_mono = P.T * 2.0, torch.full((n,), -1.9)
    # Poly neurons: random directions with a large positive bias, so they are always on (linear).
    W1_poly, b_poly = torch.randn(4, m, generator=gen) * 0.1, torch.full((4,), 5.0)
    W1, b = torch.cat([W1_mono, W1_poly]), torch.cat([b_mono, b_poly])
    W2 = torch.randn(n, n + 4, generator=gen)
    f = torch.rand(500, n, generator=gen) * (torch.rand(500, n, generator=gen) < 0.2)
    res = analyse(W1, b, W2, P, F.relu, "decoder", f @ P.T)
    s = res["summary"]
    assert s["n_mono"] == n and s["n_poly"] == 4 and s["n_dead"] == 0
    assert s["poly_linear_regime_mean"] == 1.0 and s["poly_r2_rank_m"] == pytest.approx(1.0, abs=1e-9)
    assert s["poly_rank_90"] <= m and 0 < s["mono_threshold_mean"] < 1
    assert len(res["rows"]) == n + 4 and {"linear_regime", "mfa_mean", "out_top"} <= set(res["rows"][0])
    assert set(res["decomposition"]) == {"full", "mono", "poly", "bias>0", "bias<=0"}
