"""The explorer's data on small hand-made cases: the matrix encoding, the paper's orders, the matched SAE pairs."""

import base64

import numpy as np
import pytest
import torch

from monosem.analysis.metrics import frac_mono
from monosem.analysis.sae_metrics import mcc
from monosem.explorer import encode, model_page, sae_page


def decode(m: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(m["b64"]), dtype="<i2").reshape(m["shape"]) * m["scale"]


def test_matrices_round_trip_within_half_a_step_of_their_scale():
    t = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) * 3
    m = encode(t)
    assert m["shape"] == [7, 5] and m["scale"] == pytest.approx(t.abs().max().item() / 32767)
    assert np.abs(decode(m) - t.numpy()).max() <= m["scale"] / 2 + 1e-12
    assert (decode(encode(torch.zeros(2, 3))) == 0).all()


def test_model_page_orders_neurons_most_monosemantic_first():
    sfa = torch.tensor([[0.2, 0.3, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.1]])  # (k, N)
    page = model_page(sfa, {0.5: sfa / 2, 1.0: sfa}, torch.zeros(4), torch.ones(3, 4), [{"neuron": 0}], {}, {})
    assert page["neuron_order"] == [1, 3, 0, 2]  # frac_mono 1, 0.83, 0.6, 0 (dead)
    assert page["feature_order"] == [1, 0, 2]  # each feature by the rank of the neuron it drives most
    assert [a["amplitude"] for a in page["frac_mono_at"]] == [0.5, 1.0]
    assert page["frac_mono_at"][1]["values"] == pytest.approx(frac_mono(sfa).tolist())


def test_sae_page_puts_the_mccs_matched_pairs_first_best_first():
    gen = torch.Generator().manual_seed(1)
    G = torch.linalg.qr(torch.randn(6, 6, generator=gen))[0][:4]  # 4 orthonormal true directions in 6 dims
    W_dec = torch.cat([G[[2, 0, 3, 1]] + 0.05 * torch.randn(4, 6, generator=gen) * torch.tensor([[4], [1], [2], [3]]),
                       torch.randn(2, 6, generator=gen)])  # latents 0-3 recover features 2, 0, 3, 1, less and less well
    page = sae_page(W_dec, G)
    pairs = page["pairs"]
    assert [(la, fe) for la, fe, _ in pairs] == [(1, 0), (2, 3), (3, 1), (0, 2)]  # by |cos|, descending
    assert page["latent_order"][:4] == [1, 2, 3, 0] and sorted(page["latent_order"]) == list(range(6))
    assert page["feature_order"] == [0, 3, 1, 2]
    assert np.mean([abs(c) for _, _, c in pairs]) == pytest.approx(mcc(W_dec, G)[0], abs=1e-6)
    cos = decode(page["cos"])
    assert cos.shape == (6, 4) and np.diag(cos[:4]) == pytest.approx([c for _, _, c in pairs], abs=1e-4)
