"""Worlds follow the paper's sampling code, including its quirks."""

import pytest
import torch

from monosem.config import World
from monosem.worlds import feature_probs, generate_world, random_embedder, sample_features


def test_embedder_has_unit_feature_columns_from_thin_svd():
    P = random_embedder(64, 16, torch.Generator().manual_seed(0))
    assert P.shape == (16, 64)
    torch.testing.assert_close(P.norm(dim=0), torch.ones(64))
    # Rows of U before normalisation are orthonormal columns: P P^T is close to (N/m) I up to row rescaling.
    gram = P @ P.T
    assert torch.allclose(gram, gram.T) and gram.diag().min() > 2


def test_power_law_matches_the_paper_numbers_and_clips_feature_one():
    p = feature_probs(512, 1 / 64, "power_law").double()
    assert p[0] == 1.0  # 1.53 before the clip: feature 1 is in every sample
    assert p[1].item() == pytest.approx(0.714, abs=5e-4)
    assert p[9].item() == pytest.approx(0.122, abs=5e-4)
    assert p[99].item() == pytest.approx(0.0097, abs=5e-5)
    assert p[511].item() == pytest.approx(0.0016, abs=5e-5)
    assert p.sum().item() == pytest.approx(7.47, abs=0.01)  # not 8: the clip removes mass


def test_uniform_density_and_values_in_unit_interval():
    f = sample_features(torch.full((100,), 0.05), 20000, torch.Generator().manual_seed(1))
    assert (f >= 0).all() and (f < 1).all()
    assert (f > 0).float().mean().item() == pytest.approx(0.05, rel=0.03)


def test_active_values_are_uniform_at_every_density_including_the_clipped_and_empty_ones():
    from scipy.stats import kstest

    probs = torch.tensor([0.0, 0.05, 0.5, 1.0])  # 0: never present; 1: the power law's clipped feature 1
    f = sample_features(probs, 40000, torch.Generator().manual_seed(3))
    assert torch.isfinite(f).all() and (f[:, 0] == 0).all() and (f[:, 3] > 0).all()
    for i in (1, 2, 3):
        active = f[:, i][f[:, i] > 0].double().numpy()
        p = probs[i].item()
        assert abs(active.size - 40000 * p) <= 4 * (40000 * p * (1 - p)) ** 0.5 + 1  # binomial, 4 sd
        assert kstest(active, "uniform").pvalue > 1e-3, i


def test_abs_task_draws_signed_features_at_half_density_each():
    f = sample_features(torch.full((100,), 0.1), 20000, torch.Generator().manual_seed(2), signed=True)
    assert (f < 0).float().mean().item() == pytest.approx(0.05, rel=0.05)
    assert (f > 0).float().mean().item() == pytest.approx(0.05, rel=0.05)


def test_world_targets_per_task():
    for task, d_out in (("decoder", 12), ("reprojector", 4), ("abs", 12)):
        w = generate_world(World(n_features=12, d_embed=4, eps=0.2, task=task, n_eval=10))
        f = w.eval_f
        assert w.targets(f).shape == (10, d_out) and w.d_out == d_out
        assert torch.allclose(w.inputs(f), f @ w.P.T)
    w = generate_world(World(n_features=12, d_embed=4, eps=0.2, task="abs", n_eval=50))
    assert torch.equal(w.targets(w.eval_f), w.eval_f.abs())
    assert torch.equal(w.probes, w.P.T)


def test_world_is_a_function_of_its_seed():
    a = generate_world(World(n_features=12, d_embed=4, eps=0.2, n_eval=10, seed=1))
    b = generate_world(World(n_features=12, d_embed=4, eps=0.2, n_eval=10, seed=1))
    c = generate_world(World(n_features=12, d_embed=4, eps=0.2, n_eval=10, seed=2))
    assert torch.equal(a.P, b.P) and torch.equal(a.eval_f, b.eval_f)
    assert not torch.equal(a.P, c.P)


def test_world_at_another_density_keeps_its_embedders_and_redraws_its_eval_set():
    world = generate_world(World(n_features=64, d_embed=8, eps=1 / 16, n_eval=4096, seed=3))
    assert world.with_eps(None) is world and world.with_eps(1 / 16) is world
    dense = world.with_eps(1 / 4)
    assert torch.equal(dense.P, world.P) and dense.cfg.eps == 1 / 4 and dense.cfg.seed == 3
    assert torch.allclose(dense.probs, torch.full((64,), 0.25))
    assert (dense.eval_f != 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert torch.equal(world.with_eps(1 / 4).eval_f, dense.eval_f)  # drawn from the world's seed and ε
