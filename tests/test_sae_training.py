"""SAE training and evaluation: the batched Lightning module, the SAELens export, the spliced loss, matched-L0
interpolation, the Gated claims and the SAE params, on hand-computed or hand-constructed cases."""

import math

import pytest
import torch

from monosem.analysis.sae_eval import at_l0, matched_l0_markdown, matched_l0_table, measure_saes, splice_losses
from monosem.claims.gated import gated_claims
from monosem.config import SaeTrain, World
from monosem.errors import ParamsError
from monosem.params import parse_params
from monosem.plots.sae import style, sweep_panels
from monosem.sae import ARCHITECTURES, SAE, build_sae, saelens_export
from monosem.sae.base import data_centre
from monosem.toy.models import ToyModels
from monosem.training.loop import fit
from monosem.training.sae import B_DEC_SAMPLES, Activations, SAEStudyModule, eval_features
from monosem.worlds import generate_world, generator


@pytest.fixture(scope="module")
def world():
    return generate_world(World(n_features=8, d_embed=4, eps=0.25, n_eval=256, seed=0))


def _model(seed=0):
    model = ToyModels(1, 4, 16, 8)
    model.init_instance(0, seed, -0.1)
    return model.requires_grad_(False)


TRAIN = SaeTrain(steps=40, batch_size=32, lr=3e-3, lr_warmup_steps=5, sparsity_warmup_steps=10, dead_after=20,
                 log_points=4)


@pytest.mark.parametrize("layer", ["input", "hidden"])
def test_activations_scale_to_unit_mean_square_and_truth_is_the_single_feature_response(world, layer):
    model = _model()
    src = Activations(world, model, layer, eval_features(world, world.probs, 512))
    x = src(eval_features(world, world.probs, 512))
    assert x.pow(2).sum(-1).mean().item() == pytest.approx(1.0, rel=1e-5)  # the same held-out draw fixed the scale
    G, norms = src.truth()
    assert torch.allclose(G.norm(dim=-1), torch.ones(8), atol=1e-6)
    expected = world.P.T if layer == "input" else model.hidden(world.P.T[None])[0] - model.hidden(torch.zeros(1, 1, 4))[0]
    assert torch.allclose(G * norms[:, None], expected, atol=1e-6)


@pytest.mark.parametrize("arch", ["relu", "gated", "topk", "batchtopk", "jumprelu"])
def test_a_batched_sae_trains_exactly_as_it_would_alone(world, arch):
    src = Activations(world, None, "input", world.eval_f)
    knobs = [2, 3] if ARCHITECTURES[arch].knob == "k" else [0.01, 0.1]
    both = SAEStudyModule(src, world.probs, arch, knobs, [0, 1], 12, TRAIN)
    alone = SAEStudyModule(src, world.probs, arch, knobs[1:], [1], 12, TRAIN)  # the point (knobs[1], seed 1)
    fit(both, progress=False)
    fit(alone, progress=False)
    for name, p in alone.sae.named_parameters():
        assert torch.allclose(dict(both.sae.named_parameters())[name][3], p[0], atol=1e-5), name
    assert both.curves.steps == alone.curves.steps and len(both.curves.steps) >= 4
    assert torch.allclose(torch.stack(both.curves.values["l0"])[:, 3], torch.stack(alone.curves.values["l0"])[:, 0])


def test_sparsity_and_learning_rate_warm_up_linearly(world):
    module = SAEStudyModule(Activations(world, None, "input", world.eval_f), world.probs, "relu", [0.2], [0], 4, TRAIN)
    assert module.coefficient(0).item() == pytest.approx(0.02) and module.coefficient(4).item() == pytest.approx(0.1)
    assert module.coefficient(9).item() == pytest.approx(0.2) and module.coefficient(30).item() == pytest.approx(0.2)
    k = SAEStudyModule(Activations(world, None, "input", world.eval_f), world.probs, "topk", [3], [0], 4, TRAIN)
    assert k.coefficient(0).tolist() == [3.0] and k.sae.k.tolist() == [3]


@pytest.mark.parametrize("arch,beta1,b_dec", [("relu", 0.9, "geometric_median"), ("relu_weighted", 0.9, "zero"),
                                               ("gated", 0.0, "zero"), ("topk", 0.9, "geometric_median"),
                                               ("batchtopk", 0.9, "geometric_median"), ("jumprelu", 0.0, "zero")])
def test_adam_beta1_and_b_dec_init_are_each_architectures_own_and_overridable(world, arch, beta1, b_dec):
    src = Activations(world, None, "input", world.eval_f)
    knobs = [2] if ARCHITECTURES[arch].knob == "k" else [0.1]

    def check(train, beta1, how):
        module = SAEStudyModule(src, world.probs, arch, knobs, [0, 1], 12, train)
        assert module.configure_optimizers().param_groups[0]["betas"] == (beta1, 0.999)
        sample = torch.stack([src(world.sample(B_DEC_SAMPLES, generator(world.cfg.seed, s, "sae-b-dec"), world.probs))
                              for s in (0, 1)])  # each seed's own draw
        assert torch.allclose(module.sae.b_dec, data_centre(sample, how), atol=1e-6)
        assert (how == "zero") == (not module.sae.b_dec.any())

    check(TRAIN, beta1, b_dec)
    check(TRAIN.model_copy(update={"beta1": 0.5, "b_dec_init": "mean"}), 0.5, "mean")


class _TestRelu(SAE):
    """A test-only architecture: a ReLU SAE with a plain L1 penalty and a free decoder."""

    name, saelens, style = "test_relu", "standard", ("tab:brown", "v")

    def encode(self, x):
        return torch.relu(self.pre(x))

    def loss(self, x, coeff):
        f, x_hat = self(x)
        mse, l1 = (x - x_hat).pow(2).sum(-1).mean(-1), f.sum(-1).mean(-1)
        return mse + coeff * l1, {"mse": mse, "sparsity": l1, "l0": (f != 0).sum(-1).float().mean(-1),
                                  "fired": (f != 0).any(1)}


def test_an_architecture_registered_in_a_test_trains_measures_exports_and_reports(world, monkeypatch, tmp_path):
    import copy
    monkeypatch.setitem(ARCHITECTURES, _TestRelu.name, _TestRelu)  # the one registration line
    params = copy.deepcopy(SAE_PARAMS)
    params["saes"]["A"]["architectures"] = {"test_relu": [0.01, 0.1]}
    parse_params(params)  # the params check knows it (and its knob: λ > 0)
    with pytest.raises(ParamsError, match="test_relu"):
        parse_params(params | {"saes": {"A": params["saes"]["A"] | {"architectures": {"test_relu": [-1.0]}}}})
    src = Activations(world, _model(), "input", world.eval_f)
    module = SAEStudyModule(src, world.probs, "test_relu", [0.01, 0.1], [0], 12, TRAIN)
    fit(module, progress=False)
    assert len(module.curves.values["dead_fraction"]) == len(module.curves.steps) >= 4
    rows = [{"sae": f"t{i}", "architecture": "test_relu", "knob": k, "seed": s} | m
            for i, ((k, s), m) in enumerate(zip(module.points, measure_saes(module.sae, src, world.eval_f)))]
    table = matched_l0_table(rows, [rows[0]["l0"]])
    assert table[0]["explained_variance"] == pytest.approx(rows[0]["explained_variance"])
    assert matched_l0_markdown(table)[2].startswith(f"| test_relu | {rows[0]['l0']:.2f} | ")
    tensors, cfg = saelens_export(module.sae, 1, src.scale, {})
    assert cfg["architecture"] == "standard" and set(tensors) == {"W_enc", "W_dec", "b_dec", "b_enc"}
    assert style("test_relu") == ("tab:brown", "v")
    sweep_panels(rows, [("mcc", "MCC", None)], "test", tmp_path / "p.png")
    assert (tmp_path / "p.png").exists()


def _saelens_encode(arch: str, t: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """SAELens v6's inference formulas (sae_lens/saes/*.py), written out: x is raw, b_dec subtracted first."""
    xc = x - t["b_dec"]
    if arch == "gated":
        gate = xc @ t["W_enc"] + t["b_gate"]
        return (gate > 0).float() * torch.relu(xc @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"])
    pre = xc @ t["W_enc"] + t["b_enc"]
    if arch == "jumprelu":
        return torch.relu(pre) * (pre > t["threshold"]).float()
    if arch == "topk":
        top = pre.topk(cfg["k"], dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    return torch.relu(pre)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_saelens_export_folds_the_input_scale_and_encodes_raw_activations_the_same(arch):
    g = torch.Generator().manual_seed(1)
    sae = build_sae(arch, 2, 6, 10)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if arch == "jumprelu":
            sae.theta.abs_()
        sae.set_knobs(torch.tensor([2, 3]))
        if arch == "batchtopk":
            sae.theta.copy_(torch.tensor([0.2, 0.3]))
    sae.eval()
    scale, raw = 0.37, torch.randn(1, 50, 6, generator=g) * 3
    t, cfg = saelens_export(sae, 1, scale, {"hook_name": "h"})
    ours = sae.encode((raw * scale).expand(2, -1, -1))[1]
    theirs = _saelens_encode(cfg["architecture"], t, cfg, raw[0])
    assert cfg["d_in"] == 6 and cfg["d_sae"] == 10 and t["W_enc"].shape == (6, 10) and t["W_dec"].shape == (10, 6)
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"]
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(sae.decode(ours[None].expand(2, -1, -1))[1] / scale, theirs @ t["W_dec"] + t["b_dec"], atol=1e-5)


def test_spliced_loss_by_hand(world):
    model = ToyModels(1, 4, 2, 8)
    with torch.no_grad():
        model.W1.zero_()
        model.W1[0, 0, 0] = 1.0  # h = ReLU(x_0 − 0.5, −1): one live neuron
        model.b1.copy_(torch.tensor([[-0.5, -1.0]]))
        model.W2.zero_()
        model.W2[0, :, 0] = 1.0  # y_o = h_0 for every output
    f = world.eval_f[:64]
    x = world.inputs(f)
    h = torch.relu(x[:, :1] - 0.5)
    target = f
    l_orig = (h - target).pow(2).sum(-1).mean()
    l_zero = target.pow(2).sum(-1).mean()
    x_hat = torch.stack([x, torch.zeros_like(x)])  # a perfect SAE and one that outputs zero
    out = splice_losses(model, "input", world, f, x_hat)
    l_zero_in = (torch.zeros(1) - target).pow(2).sum(-1).mean()  # x = 0: h = 0 too
    assert out["loss_orig"][0].item() == pytest.approx(l_orig.item(), rel=1e-5)
    assert out["loss_spliced"].tolist() == pytest.approx([l_orig.item(), l_zero_in.item()], rel=1e-5)
    assert out["loss_recovered"].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)
    h_all = model.hidden(x[None])[0]
    out = splice_losses(model, "hidden", world, f, torch.stack([h_all, 0.5 * h_all]))
    l_half = (0.5 * h - target).pow(2).sum(-1).mean()
    assert out["loss_zero"][0].item() == pytest.approx(l_zero.item(), rel=1e-5)
    assert out["loss_recovered"][1].item() == pytest.approx(((l_zero - l_half) / (l_zero - l_orig)).item(), rel=1e-4)


def test_a_perfect_dictionary_measures_perfect(world):
    """An SAE whose decoder is the true embedder and whose encoder inverts it on 1-sparse inputs recovers all."""
    src = Activations(world, _model(), "input", world.eval_f)
    sae = build_sae("relu", 1, 4, 8)
    G, norms = src.truth()
    cos = (G @ G.T - torch.eye(8)).max().item()
    with torch.no_grad():
        sae.W_dec[0] = G
        sae.W_enc[0] = G
        sae.b_enc.fill_(-(1 + cos) / 2)  # only the feature itself clears the threshold
    one_hot = torch.diag(1 / (src.scale * norms))  # feature i alone, at unit length after scaling
    row = measure_saes(sae, src, one_hot)[0]
    assert row["mcc"] == pytest.approx(1.0, abs=1e-6) and row["recovered_at_0.99"] == 1.0 and row["l0"] == 1.0
    assert row["precision"] == 1.0 and row["recall"] == 1.0 and row["uniqueness"] == 1.0


def test_interpolation_at_matched_l0_is_linear_in_log_l0():
    pts = [(1.0, 0.5, 0, 0), (4.0, 0.9, 0, 0)]
    assert at_l0(pts, 2.0) == pytest.approx(0.7) and math.isnan(at_l0(pts, 8.0)) and math.isnan(at_l0(pts, 0.5))
    rows = [{"architecture": "a", "knob": k, "seed": s, "l0": l0 + s * 0.0, "ev": ev}
            for k, l0, ev in ((0.1, 1.0, 0.5), (0.01, 4.0, 0.9)) for s in (0, 1)]
    table = matched_l0_table(rows, [2.0], ("ev",))
    assert table == [{"architecture": "a", "l0": 2.0, "ev": pytest.approx(0.7)}]


def _rows(arch, l0s, evs, gammas):
    return [{"architecture": arch, "knob": i, "seed": 0, "l0": l0, "explained_variance": ev, "shrinkage_gamma": g}
            for i, (l0, ev, g) in enumerate(zip(l0s, evs, gammas))]


def test_gated_claims_hold_and_fail_on_constructed_sweeps():
    # Gated reaches each EV at half the L0 (its EV curve is relu's shifted left ×2), with γ 0.99 against 0.8.
    relu = _rows("relu", [1, 2, 4, 8, 16], [0.5, 0.6, 0.7, 0.8, 0.9], [0.8] * 5)
    good = _rows("gated", [0.5, 1, 2, 4, 8], [0.5, 0.6, 0.7, 0.8, 0.9], [0.99] * 5)
    verdict = {c["id"].split("@")[0]: c["holds"] for c in gated_claims("S", relu + good)}
    assert verdict == {"gated_less_shrinkage": True, "gated_half_l0": True, "gated_pareto": True}
    same = _rows("gated", [1, 2, 4, 8, 16], [0.5, 0.6, 0.7, 0.8, 0.9], [0.85] * 5)
    verdict = {c["id"].split("@")[0]: c["holds"] for c in gated_claims("S", relu + same)}
    assert verdict == {"gated_less_shrinkage": False, "gated_half_l0": False, "gated_pareto": False}
    assert all(c["holds"] is None for c in gated_claims("S", relu))


SAE_PARAMS = {"worlds": {"w": {"n_features": 8, "d_embed": 4, "eps": 0.25}},
              "studies": {"S": {"world": "w", "model": {"neurons": 16}, "train": {"steps": 8, "batch_size": 4, "lr": 0.01},
                                "sweep": {"train.lr": [0.01, 0.03]}, "seeds": [0]}},
              "saes": {"A": {"study": "S", "instance": "lr=0.01,seed=0", "world": "w", "layer": "hidden", "latents": 8,
                             "architectures": {"relu": [0.1], "topk": [2]}, "seeds": [0],
                             "train": {"steps": 8, "batch_size": 4}}}}


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["saes"]["A"].update(study="T"), "saes.A.study = 'T': no such study"),
    (lambda p: p["saes"]["A"].update(world="v"), "saes.A.world = 'v': study 'S' trains on world 'w'"),
    (lambda p: p["saes"]["A"].update(instance="lr=0.1,seed=0"), "saes.A.instance = 'lr=0.1,seed=0': no such model"),
    (lambda p: p["saes"]["A"]["architectures"].update(vanilla=[0.1]), "saes.A.architectures.vanilla"),
    (lambda p: p["saes"]["A"]["architectures"].update(topk=[2.5]), "saes.A.architectures.topk[0] = 2.5: k must be an integer in [1, latents = 8]"),
    (lambda p: p["saes"]["A"]["architectures"].update(topk=[9]), "topk[0] = 9: k must be an integer"),
    (lambda p: p["saes"]["A"]["architectures"].update(relu=[0.0]), "saes.A.architectures.relu[0] = 0: λ must be > 0"),
    (lambda p: p["saes"]["A"]["architectures"].update(relu=[]), "saes.A.architectures.relu = []: a sweep needs at least one value"),
    (lambda p: p["saes"]["A"].update(layer="output"), "saes.A.layer = 'output'"),
    (lambda p: p["saes"]["A"].update(seeds=[1, 1]), "saes.A.seeds = [1, 1]: seeds must be distinct"),
    (lambda p: p["studies"].update(saes=p["studies"]["S"]), "the name 'saes' is reserved"),
])
def test_bad_sae_params_are_one_line_naming_the_key(edit, message):
    import copy
    params = copy.deepcopy(SAE_PARAMS)
    parse_params(params)  # the base is valid
    edit(params)
    with pytest.raises(ParamsError) as err:
        parse_params(params)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
