"""The explorer's data on small hand-made cases: the matrix encoding and packing, the paper's orders, the matched
SAE pairs."""

import numpy as np
import pytest
import torch

from monosem.analysis.metrics import frac_mono
from monosem.analysis.sae_metrics import mcc
from monosem.explorer import TOP_OUTPUTS, encode, model_page, pack, sae_page, unpack


def decode(m: dict) -> np.ndarray:
    return unpack(pack({"m": m}))["m"]


@pytest.mark.parametrize("bits", [8, 16])
def test_matrices_round_trip_within_half_a_step_of_their_scale(bits):
    t = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) * 3
    m = encode(t, bits)
    scale = t.abs().max().item() / (2 ** (bits - 1) - 1)
    assert m["$m"][:3] == [7, 5, bits] and m["$m"][3] == pytest.approx(scale)
    assert np.abs(decode(m) - t.numpy()).max() <= scale / 2 + 1e-12
    assert (decode(encode(torch.zeros(2, 3), bits)) == 0).all()
    assert (decode(encode(torch.tensor([[0, 3, 700]]))) == [[0, 3, 700]]).all()  # integers as they are


def test_a_packed_page_holds_its_json_and_every_matrix_at_its_offset():
    a, b = torch.arange(6.0).reshape(2, 3), -torch.arange(5.0).reshape(5, 1)  # 6 and 5 bytes at 8 bits: padded to 4
    page = {"x": [encode(a, 8), {"y": encode(b, 8)}], "z": 0.123456789, "s": "text", "n": None}
    got = unpack(pack(page))
    assert got["z"] == 0.12346 and got["s"] == "text" and got["n"] is None  # floats to 5 digits
    assert np.allclose(got["x"][0], a.numpy(), atol=5 / 254) and np.allclose(got["x"][1]["y"], b.numpy(), atol=4 / 254)


def test_model_page_orders_neurons_most_monosemantic_first():
    sfa = torch.tensor([[0.2, 0.3, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.1]])  # (k, N)
    page = model_page(sfa, {0.5: sfa / 2, 1.0: sfa}, torch.zeros(4), torch.ones(3, 4), [{"neuron": 0}], {}, {})
    assert page["neuron_order"] == [1, 3, 0, 2]  # frac_mono 1, 0.83, 0.6, 0 (dead)
    assert page["feature_order"] == [1, 0, 2]  # each feature by the rank of the neuron it drives most
    assert [a["amplitude"] for a in page["frac_mono_at"]] == [0.5, 1.0]
    assert page["frac_mono_at"][1]["values"] == pytest.approx(frac_mono(sfa).tolist())


def test_model_page_keeps_each_neurons_largest_output_weights():
    gen = torch.Generator().manual_seed(2)
    w_out = torch.randn(40, 3, generator=gen)  # 40 outputs, 3 neurons
    page = unpack(pack(model_page(torch.rand(3, 5, generator=gen), {1.0: torch.rand(3, 5)}, torch.zeros(3), w_out,
                                  [{"neuron": 0}], {}, {})))
    index, top = page["w_out_index"].astype(int), page["w_out_top"]
    assert index.shape == top.shape == (TOP_OUTPUTS, 3)
    for n in range(3):
        want = w_out[:, n].abs().argsort(descending=True)[:TOP_OUTPUTS]
        assert list(index[:, n]) == want.tolist()
        assert np.allclose(top[:, n], w_out[want, n].numpy(), atol=w_out.abs().max().item() / 65534)


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
    # 8 bits: within half a step of the largest |cos| (at most 1)
    assert cos.shape == (6, 4) and np.diag(cos[:4]) == pytest.approx([c for _, _, c in pairs], abs=1 / 254)
