"""Each SAE architecture's forward pass, loss and gradients, and every SAE metric, on hand-computed cases."""

import pytest
import torch

from monosem.analysis.sae_metrics import best_matches, ground_truth_metrics, mcc, reconstruction_metrics
from monosem.sae import (
    ARCHITECTURES,
    BatchTopKSAE,
    GatedSAE,
    JumpReluSAE,
    ReluSAE,
    ReluWeightedSAE,
    TopKSAE,
    build_sae,
    input_scale,
)
from monosem.sae.base import data_centre


def _set(sae, **tensors):
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(sae, name).copy_(torch.as_tensor(value, dtype=torch.float32))
    return sae


X = torch.tensor([[[1.0, 0.25]]])  # one instance, one sample, n = 2


def test_input_scale_makes_the_mean_squared_norm_one():
    x = torch.tensor([[3.0, 4.0], [0.0, 5.0]])
    assert input_scale(x) == pytest.approx(0.2)


def test_relu_sae_loss_by_hand_plain_and_decoder_norm_weighted():
    plain = _set(ReluSAE(1, 2, 2), W_enc=[[[1, 0], [0, 1]]], b_enc=[[0, -0.5]], W_dec=[[[1, 0], [0, 1]]])
    loss, parts = plain.loss(X, torch.tensor([0.1]))  # f = [1, 0], x̂ = [1, 0]
    assert parts["mse"].item() == pytest.approx(0.0625) and parts["sparsity"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(0.0625 + 0.1)
    weighted = _set(ReluWeightedSAE(1, 2, 2), W_enc=[[[1, 0], [0, 1]]], b_enc=[[0, -0.5]],
                    W_dec=[[[2, 0], [0, 1]]])
    loss, parts = weighted.loss(X, torch.tensor([0.1]))  # x̂ = [2, 0]; sparsity f·‖d‖ = 2
    assert parts["mse"].item() == pytest.approx(1 + 0.0625) and parts["sparsity"].item() == pytest.approx(2.0)
    assert plain.unit_norm and not weighted.unit_norm


def test_unit_norm_decoder_projection_and_renormalisation():
    sae = _set(ReluSAE(1, 2, 1), W_dec=[[[1.0, 0.0]]])
    sae.W_dec.grad = torch.tensor([[[3.0, 4.0]]])
    sae.project_grad()
    assert torch.allclose(sae.W_dec.grad, torch.tensor([[[0.0, 4.0]]]))
    _set(sae, W_dec=[[[3.0, 4.0]]]).constrain()
    assert torch.allclose(sae.W_dec, torch.tensor([[[0.6, 0.8]]]))


def test_gated_sae_by_hand_and_equal_to_a_jumprelu():
    sae = _set(GatedSAE(1, 2, 2), W_enc=[[[1, 0], [0, 1]]], b_enc=[[0, -0.5]], W_dec=[[[1, 0], [0, 1]]])
    loss, parts = sae.loss(X, torch.tensor([0.1]))  # gate [1, -0.25], mag [1, 0.25] -> f = [1, 0]; aux on [1, 0]
    assert parts["mse"].item() == pytest.approx(0.0625) and parts["aux"].item() == pytest.approx(0.0625)
    assert loss.item() == pytest.approx(0.0625 + 0.1 * 1 + 0.0625)
    # Weight sharing makes it a JumpReLU: f_i = ReLU(z_i)·H(z_i − θ_i), z = e^r·(W_gate x') + b_mag, θ = b_mag − e^r·b_gate.
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sae = _set(GatedSAE(1, 5, 7), W_enc=rnd(1, 7, 5), b_enc=rnd(1, 7), r_mag=rnd(1, 7), b_mag=rnd(1, 7), b_dec=rnd(1, 5))
    x = rnd(1, 50, 5)
    z = torch.einsum("ibn,imn->ibm", x - sae.b_dec[:, None], sae.W_enc) * sae.r_mag.exp()[:, None] + sae.b_mag[:, None]
    theta = sae.b_mag - sae.r_mag.exp() * sae.b_enc
    assert torch.allclose(sae.encode(x), torch.relu(z) * (z > theta[:, None]).float(), atol=1e-6)


@pytest.mark.parametrize("arch,detached", [("gated", True), ("gated_weighted", False)])
def test_gated_auxiliary_term_detaches_the_decoder_only_in_paper_mode(arch, detached):
    g = torch.Generator().manual_seed(1)
    sae = build_sae(arch, 1, 4, 6)
    sae.init_instance(0, seed=0)
    sae.fused = False  # autograd's loss: the CPU's hand-written one equals it (test_the_fused_cpu_losses_equal_…)
    x = torch.randn(1, 32, 4, generator=g)
    _, parts = sae.loss(x, torch.tensor([0.1]))
    grad = torch.autograd.grad(parts["aux"].sum(), sae.W_dec, allow_unused=True)[0]
    assert (grad is None or not grad.any()) == detached


def test_dead_latents_are_counted_once_on_the_sae():
    sae = build_sae("relu", 1, 2, 3)
    sae.dead_after = 2
    for fired in ([True, False, False], [False, True, False], [False, True, False]):
        sae.track(torch.tensor([fired]))
    assert sae.since_fired.tolist() == [[2, 0, 3]] and sae.dead().tolist() == [[True, False, True]]


def test_topk_keeps_the_k_largest_per_sample_with_k_per_instance():
    sae = TopKSAE(2, 3, 4)
    pre = torch.tensor([[[3.0, -1.0, 2.0, 0.5]], [[-1.0, -2.0, 0.5, -3.0]]])
    out = sae.select(pre, torch.tensor([2, 3]))
    assert torch.equal(out, torch.tensor([[[3.0, 0.0, 2.0, 0.0]], [[0.0, 0.0, 0.5, 0.0]]]))


def test_auxk_decodes_dead_latents_without_the_bias_normalised_by_the_residual_variance():
    sae = _set(TopKSAE(1, 2, 2, k_aux=1), W_enc=[[[1, 0], [0, 1]]], W_dec=[[[1, 0], [0, 1]]], b_dec=[[0.0, 0.0]])
    sae.dead_after = 1
    sae.since_fired.fill_(5)  # both dead
    x = torch.tensor([[[1.0, 0.5], [1.0, -0.5]]])
    x_hat = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # e = [0, ±0.5]; each sample's top-1 dead latent is 0 (1.0)
    aux = sae.aux_loss(x, x - x_hat)
    # ê = [1, 0] for both: E‖e − ê‖² = 1.25; ē = 0, E‖e − ē‖² = 0.25 (OpenAI's normalized_mse)
    assert aux.item() == pytest.approx((1 / 32) * 1.25 / 0.25)
    # e = [0, ±1.5], ê still [1, 0]: (1 + 2.25) / 2.25
    assert sae.aux_loss(x, 3 * (x - x_hat)).item() == pytest.approx((1 / 32) * 3.25 / 2.25)
    _set(sae, b_dec=[[5.0, 5.0]], b_enc=[[5.0, 5.0]])  # ê leaves b_dec out: the same pre-activations, the same term
    assert sae.aux_loss(x, x - x_hat).item() == pytest.approx(aux.item())
    assert sae.aux_loss(x[:, :1], (x - x_hat)[:, :1]).item() == 0  # a residual without variance: no term
    fresh = TopKSAE(1, 2, 2)
    assert fresh.aux_loss(x, x - x_hat).item() == 0  # no dead latent, no auxiliary term


def test_the_data_centre_is_zero_the_mean_or_the_geometric_median():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])  # collinear: the geometric median is the median
    assert data_centre(x, "zero").tolist() == [0.0, 0.0]
    assert data_centre(x, "mean").tolist() == pytest.approx([11 / 3, 0.0])
    assert data_centre(x, "geometric_median").tolist() == pytest.approx([1.0, 0.0], abs=1e-4)
    # an equilateral triangle's Fermat point is its centroid; batched over a leading axis
    tri = torch.tensor([[1.0, 0.0], [-0.5, 3 ** 0.5 / 2], [-0.5, -(3 ** 0.5) / 2]])
    both = data_centre(torch.stack([tri, tri + 2]), "geometric_median")
    assert torch.allclose(both, torch.tensor([[0.0, 0.0], [2.0, 2.0]]), atol=1e-4)


def test_batchtopk_keeps_k_times_batch_over_the_batch_and_learns_its_threshold():
    sae = BatchTopKSAE(1, 2, 2)
    out = sae.select(torch.tensor([[[3.0, 1.0], [2.0, 0.5]]]), torch.tensor([1]))
    assert torch.equal(out, torch.tensor([[[3.0, 0.0], [2.0, 0.0]]]))  # 3 and 2: uneven per sample
    assert sae.theta.item() == 2.0
    sae.select(torch.tensor([[[4.0, 0.0], [1.0, 0.0]]]), torch.tensor([1]))
    assert sae.theta.item() == pytest.approx(2.0 + 0.01 * (1.0 - 2.0))
    sae.eval()
    _set(sae, W_enc=[[[1, 0], [0, 1]]])
    f = sae.encode(torch.tensor([[[2.5, 1.5]]]))
    assert torch.equal(f, torch.tensor([[[2.5, 0.0]]]))  # inference: a JumpReLU at θ ≈ 1.99


def test_jumprelu_straight_through_gradients_by_hand():
    sae = _set(JumpReluSAE(1, 1, 1), W_enc=[[[1.0]]], W_dec=[[[1.0]]])
    x = torch.tensor([[[0.0012]]])  # π = 0.0012, θ = 0.001, ε = 0.001: (π − θ)/ε = 0.2, inside the kernel
    f = sae.encode(x)
    assert f.item() == pytest.approx(0.0012)
    (d_theta,) = torch.autograd.grad(f.sum(), sae.theta)
    assert d_theta.item() == pytest.approx(-1.0)  # −θ/ε
    loss, parts = sae.loss(x, torch.tensor([1.0]))
    assert parts["sparsity"].item() == 1.0
    d_theta, d_w = torch.autograd.grad(parts["sparsity"].sum(), [sae.theta, sae.W_enc], allow_unused=True)
    assert d_theta.item() == pytest.approx(-1000.0) and d_w is None  # the L0 term moves θ only
    assert sae.theta.dtype == torch.float32 and sae.theta.item() == pytest.approx(1e-3)


def test_every_architecture_trains_a_step_and_initialises_like_a_single_model():
    x = torch.randn(3, 64, 8, generator=torch.Generator().manual_seed(2))
    for arch in ARCHITECTURES:
        sae = build_sae(arch, 3, 8, 16)
        alone = build_sae(arch, 1, 8, 16)
        for i in range(3):
            sae.init_instance(i, seed=i)
        alone.init_instance(0, seed=2)
        assert torch.equal(sae.W_dec[2], alone.W_dec[0]) and torch.equal(sae.W_enc[2], sae.W_dec[2])
        coeff = torch.tensor([4, 4, 4]) if sae.knob == "k" else torch.tensor([0.1, 0.1, 0.1])
        loss, _ = sae.loss(x, coeff)
        loss.sum().backward()
        assert torch.isfinite(loss).all() and sae.W_enc.grad.abs().sum() > 0, arch


def test_reconstruction_metrics_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x_hat = 0.5 * x
    f = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]])
    m = reconstruction_metrics(x, x_hat, f)
    assert m["mse"] == pytest.approx(0.25)
    assert m["explained_variance"] == pytest.approx(1 - 0.25 / 0.5) and m["nmse"] == pytest.approx(0.5)
    assert m["shrinkage_gamma"] == pytest.approx(0.5) and m["l2_ratio"] == pytest.approx(0.5)
    assert m["l0"] == pytest.approx(1.5) and m["dead_fraction"] == 0
    empty = reconstruction_metrics(torch.cat([x, torch.zeros(2, 2)]), torch.cat([x_hat, torch.full((2, 2), 0.1)]),
                                   torch.cat([f, torch.zeros(2, 3)]))
    assert empty["l2_ratio"] == pytest.approx(0.5)  # the empty samples (x = 0) have no ratio: skipped


def test_ground_truth_metrics_on_a_duplicate_and_a_missing_feature():
    G = torch.eye(2)
    D = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # both latents on feature 0; feature 1 missed
    m = ground_truth_metrics(D, G)
    assert m["mmcs"] == pytest.approx(0.5) and m["mmcs_reverse"] == pytest.approx(1.0)
    assert m["recovered_at_0.9"] == 0.5 and m["uniqueness"] == 0.5
    assert m["mcc"] == pytest.approx(0.5)  # one-to-one: one latent gets feature 1 at |cos| 0
    perfect = ground_truth_metrics(G[[1, 0]] * 3, G)
    assert perfect["mmcs"] == perfect["mcc"] == perfect["uniqueness"] == perfect["recovered_at_0.99"] == 1.0


def test_precision_recall_f1_and_the_magnitude_ratio():
    G, D = torch.eye(2), torch.eye(2) * 2  # decoder atoms of norm 2: contributions are f·2
    c = torch.tensor([[1.0, 0.0], [0.5, 1.0], [0.0, 0.0], [1.0, 0.0]])
    f = torch.tensor([[0.4, 0.0], [0.2, 0.0], [0.0, 0.4], [0.0, 0.0]])
    m = ground_truth_metrics(D, G, f, c)
    # latent 0: fires in 2 samples, feature 0 present in 3, both in 2 -> P 1, R 2/3; latent 1: fires once, wrongly.
    assert m["precision"] == pytest.approx((1 + 0) / 2) and m["recall"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["f1"] == pytest.approx((0.8 + 0) / 2)
    assert m["magnitude_ratio"] == pytest.approx(0.8)  # 0.4·2/1 and 0.2·2/0.5, median over the one pair


def test_the_cosine_matrix_is_chunked_without_changing_the_answer():
    g = torch.Generator().manual_seed(3)
    D, G = torch.randn(300, 16, generator=g), torch.randn(40, 16, generator=g)
    full, chunked = best_matches(D, G, chunk=10_000), best_matches(D, G, chunk=7)
    for k in full:
        assert torch.allclose(full[k].float(), chunked[k].float())
    value, rows, cols = mcc(D, G)
    assert len(set(rows)) == len(rows) == 40 and 0 < value <= 1


@pytest.mark.parametrize("noise", [0.3, None])
def test_the_sparse_candidate_matching_equals_the_dense_hungarian_one(noise, monkeypatch):
    import monosem.analysis.sae_metrics as sm

    g = torch.Generator().manual_seed(4)
    G = torch.randn(128, 32, generator=g)
    D = torch.randn(384, 32, generator=g)
    if noise is not None:  # a near-recovered dictionary: the true features, shuffled and noised, plus extra latents
        D[:128] = G[torch.randperm(128, generator=g)] + noise * torch.randn(128, 32, generator=g)
    dense, _, _ = sm.mcc(D, G)  # 384 × 128 pairs: solved densely
    monkeypatch.setattr(sm, "DENSE_MATCHING", 0)
    sparse, rows, cols = sm.mcc(D, G, candidates=8, chunk=50)
    assert sparse == pytest.approx(dense, abs=1e-6)
    assert len(set(rows.tolist())) == len(set(cols.tolist())) == 128


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 22])  # one instance per chunk, and all at once
@pytest.mark.parametrize("arch", ["relu", "relu_weighted", "gated", "gated_weighted", "topk"])
def test_the_fused_cpu_losses_equal_autograd_of_the_plain_ones(arch, chunk_bytes, monkeypatch):
    import monosem.sae.fused
    monkeypatch.setattr(monosem.sae.fused, "CHUNK_BYTES", chunk_bytes)
    g = torch.Generator().manual_seed(3)
    plain, fused = build_sae(arch, 3, 8, 24), build_sae(arch, 3, 8, 24)
    for i in range(3):
        plain.init_instance(i, seed=i)
    with torch.no_grad():
        plain.b_enc.normal_(0, 0.2, generator=g)
        plain.b_dec.normal_(0, 0.2, generator=g)
        plain.W_dec.mul_(torch.rand(3, 24, 1, generator=g) + 0.5)  # unequal norms matter to relu_weighted
        if arch.startswith("gated"):  # magnitudes apart from the gates, so both paths' masks matter
            plain.r_mag.normal_(0, 0.3, generator=g)
            plain.b_mag.normal_(0, 0.2, generator=g)
    coeff = torch.tensor([2, 3, 7]) if arch == "topk" else torch.tensor([0.01, 0.1, 0.3])
    if arch == "topk":
        plain.k.copy_(coeff)
        plain.since_fired[:, ::4] = plain.dead_after  # dead latents: the AuxK term too (tracked by the trainer)
    fused.load_state_dict(plain.state_dict())
    plain.fused = False
    x = torch.randn(3, 40, 8, generator=g)
    (l_p, p_p), (l_f, p_f) = plain.loss(x, coeff), fused.loss(x, coeff)
    l_p.sum().backward()
    l_f.sum().backward()
    assert torch.allclose(l_p, l_f, rtol=1e-5, atol=1e-6)
    assert p_p.keys() == p_f.keys() and torch.equal(p_p["fired"], p_f["fired"]) and torch.equal(p_p["l0"], p_f["l0"])
    for k in p_p.keys() - {"fired", "l0"}:
        assert torch.allclose(p_p[k], p_f[k], rtol=1e-5, atol=1e-6), k
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
    if arch == "topk":
        assert p_f["aux"].gt(0).all()


def test_the_fused_topk_selection_keeps_the_k_largest_and_splits_ties_by_index():
    import numpy as np

    from monosem.sae.kernels import _select
    rng = np.random.default_rng(0)
    for k in (1, 3, 8, 31, 61, 64):
        x = rng.standard_normal(64).astype(np.float32)
        vals, idx = np.zeros(k + 1, np.float32), np.zeros(k + 1, np.int32)
        _select(x, k, vals, idx)
        assert sorted(idx[:k]) == sorted(np.argsort(-x)[:k]) and np.array_equal(vals[:k], x[idx[:k]])
    x = np.array([0.5, 2.0, 1.0, 1.0, 1.0, -3.0], np.float32)  # the 2nd to 4th largest are tied
    vals, idx = np.zeros(4, np.float32), np.zeros(4, np.int32)
    _select(x, 3, vals, idx)
    assert list(idx[:3]) == [1, 2, 3] and list(vals[:3]) == [2.0, 1.0, 1.0]
    _select(np.ones(5, np.float32), 2, vals, idx)  # a constant row
    assert list(idx[:2]) == [0, 1]
    for bad in (np.nan, np.inf):  # a diverged row still keeps k valid indices
        idx[:] = -1
        _select(np.array([0.5, bad, 1.0, -2.0, 0.0], np.float32), 3, vals, idx)
        assert len(set(idx[:3])) == 3 and all(0 <= i < 5 for i in idx[:3])
