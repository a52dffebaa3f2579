"""Superposition geometry, the tied models, the bounds' reference curves and their claims, on hand-computed
cases (Elhage et al. 2022; Scherlis et al. 2022; Lecomte et al. 2023; Basu Roy Chowdhury & Weiner 2026)."""

import math

import pytest
import torch
from scipy import stats

from monosem.analysis.superposition import dims_per_feature, feature_geometry, measure_tied, neuron_geometry
from monosem.analysis.theory import crossovers, gain_references, loglog_slope
from monosem.claims.tms import (
    dims_per_feature_sticky,
    feature_dims_cluster,
    gain_slopes,
    gain_within_bounds,
    sparsity_more_superposition,
)
from monosem.config import DataCfg, Instance, ModelCfg, TrainCfg, World
from monosem.errors import ParamsError
from monosem.params import parse_params
from monosem.toy.models import TiedModels
from monosem.toy.optim import BatchedAdamW
from monosem.worlds import generate_world, generator, sample_features, task_loss, value_moment


def test_an_antipodal_pair_and_a_dedicated_feature():
    # m = 2, n = 3: features 0 and 1 share dimension 0 with opposite signs, feature 2 owns dimension 1.
    W = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    g = feature_geometry(W)
    assert torch.allclose(g["norm"], torch.ones(3))
    assert torch.allclose(g["superposition"], torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(g["dimensionality"], torch.tensor([0.5, 0.5, 1.0]))
    assert torch.allclose(g["capacity"], g["dimensionality"])
    assert dims_per_feature(W).item() == pytest.approx(2 / 3)


def test_a_pentagon_has_dimensionality_two_fifths_and_an_unlearned_feature_zero():
    angles = torch.arange(5) * 2 * math.pi / 5
    W = torch.cat([torch.stack([angles.cos(), angles.sin()]), torch.zeros(2, 1)], dim=1)  # 5 on a circle + 1 off
    g = feature_geometry(W)
    assert torch.allclose(g["dimensionality"][:5], torch.full((5,), 0.4), atol=1e-6)
    # Σ_{j≠i} cos²θ_ij over a pentagon: 5/2 − 1.
    assert torch.allclose(g["superposition"][:5], torch.full((5,), 1.5), atol=1e-5)
    assert g["norm"][5] == 0 and g["dimensionality"][5] == 0 and g["superposition"][5] == 0


def test_dimensionalities_sum_to_at_most_m_and_equal_scherlis_capacity():
    W = torch.randn(64, 7, 40, generator=torch.Generator().manual_seed(0))
    g = feature_geometry(W)
    assert (g["dimensionality"].sum(-1) <= 7 + 1e-4).all()
    assert torch.allclose(g["dimensionality"], g["capacity"], atol=1e-5)
    assert ((g["dimensionality"] >= 0) & (g["dimensionality"] <= 1 + 1e-6)).all()


def test_neuron_weight_share_and_the_lecomte_count():
    W = torch.tensor([[0.9, 1.1, 0.0],    # two features in [0.8, 1.2]: polysemantic
                      [1.0, 0.1, 0.0],    # one
                      [0.5, 0.5, 2.0]])   # none
    g = neuron_geometry(W)
    assert g["lecomte_poly"].item() == 1
    assert torch.allclose(g["weight_share"], torch.tensor([1.1 / 2.0, 1.0 / 1.1, 2.0 / 3.0]))


def test_value_moments():
    assert [value_moment("uniform", j) for j in (1, 2)] == [1 / 2, 1 / 3]
    assert [value_moment("signed_uniform", j) for j in (1, 2, 4)] == [0.0, 1 / 3, 1 / 5]
    assert [value_moment("gaussian", j) for j in (2, 3, 4, 6)] == [1.0, 0.0, 3.0, 15.0]


@pytest.mark.parametrize("values,cdf", [("signed_uniform", stats.uniform(-1, 2).cdf), ("gaussian", stats.norm.cdf)])
def test_symmetric_values_have_their_distribution_and_presence_rate(values, cdf):
    f = sample_features(torch.full((50,), 0.2), 4000, generator(0), values=values)
    present = f[f != 0]
    assert abs(len(present) / f.numel() - 0.2) < 0.005
    assert stats.kstest(present.double().numpy(), cdf).pvalue > 0.01
    assert torch.isfinite(f).all()


def test_gain_references_and_crossovers_by_hand():
    r = gain_references(0.01, 80, 4, 3, "gaussian")  # μ2 = 1, μ4 = 3, μ6 = 15
    assert r["total"] == pytest.approx(0.8) and r["linear"] == pytest.approx(0.04)
    assert r["unsuperposed"] == pytest.approx(0.01 * 4 * 9 / 15)
    assert r["order_lower"] == pytest.approx(0.64) and r["order_upper"] == pytest.approx(0.64)
    assert gain_references(0.5, 80, 4, 3, "gaussian")["order_lower"] == pytest.approx(4 * 0.5 ** (1 / 3))
    assert crossovers(4, 3) == (1 / 64, 1 / 16)
    p = [0.01, 0.1, 1.0]
    assert loglog_slope(p, [q ** 0.5 for q in p]) == pytest.approx(0.5)


def test_the_best_unsuperposed_power_model_reaches_its_reference_gain():
    """A diagonal WᵀW = a·I on d features with a^k = μ_{k+1}/μ_{2k}: measured gain ≈ p·d·μ_{k+1}²/μ_{2k}."""
    n, d, k, p = 12, 3, 3, 0.3
    a = (value_moment("gaussian", k + 1) / value_moment("gaussian", 2 * k)) ** (1 / k)
    model = TiedModels(1, n, d, "power", k)
    with torch.no_grad():
        model.W.zero_()
        model.W[0, torch.arange(d), torch.arange(d)] = math.sqrt(a)
    x = sample_features(torch.full((n,), p), 200_000, generator(1), values="gaussian")
    scalars, _ = measure_tied(model, x, None)
    assert scalars["gain"].item() == pytest.approx(gain_references(p, n, d, k, "gaussian")["unsuperposed"], rel=0.03)


def test_tied_models_forward_by_hand():
    W = torch.tensor([[[1.0, -1.0]]])  # one instance, m = 1, n = 2
    b = torch.tensor([[-0.5, 0.1]])
    x = torch.tensor([[[0.2, 1.0]]])  # Wx = -0.8, WᵀWx = [-0.8, 0.8]
    expected = {"tms_relu": [0.0, 0.9], "tms_hidden": [0.0, 0.1], "power": [-0.512, 0.512]}
    for kind, want in expected.items():
        model = TiedModels(1, 2, 1, kind, 3)
        with torch.no_grad():
            model.W.copy_(W)
            if kind != "power":
                model.b.copy_(b)
        assert torch.allclose(model(x)[1][0, 0], torch.tensor(want)), kind
    assert "b" not in dict(TiedModels(1, 2, 1, "power").named_parameters())


def test_each_instance_is_initialised_as_a_single_model_with_its_own_fans():
    alone, stacked = TiedModels(1, 400, 30, "tms_relu"), TiedModels(5, 400, 30, "tms_relu")
    alone.init_instance(0, seed=3)
    stacked.init_instance(2, seed=3)
    assert torch.equal(alone.W[0], stacked.W[2])
    assert alone.W.std().item() == pytest.approx(math.sqrt(2 / 430), rel=0.03)
    assert (alone.b == 0).all()


def test_importance_weights_the_squared_error_per_output():
    y, t = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[0.0, 0.0]]])
    assert task_loss(y, t, torch.tensor([1.0, 0.5])).item() == pytest.approx(1 + 0.5 * 4)
    world = generate_world(World(n_features=3, d_embed=3, eps=1.0, task="tms", importance_decay=0.7, n_eval=4))
    assert torch.allclose(world.importance, torch.tensor([1.0, 0.7, 0.49]))
    assert torch.equal(world.inputs(world.eval_f), world.eval_f) and torch.equal(world.P, torch.eye(3))


def test_batched_adamw_equals_torch_adamw_on_each_instance():
    w = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    lrs, wds = torch.tensor([1e-3, 1e-2, 3e-2]), torch.tensor([0.01, 0.0, 0.1])
    refs = [torch.nn.Parameter(w[i].clone()) for i in range(3)]
    opts = [torch.optim.AdamW([refs[i]], lr=float(lrs[i]), weight_decay=float(wds[i])) for i in range(3)]
    p = torch.nn.Parameter(w.clone())
    opt = BatchedAdamW([p], lrs, wds)
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        g = torch.randn(3, 4, 5, generator=gen)
        p.grad = g.clone()
        opt.step()
        for i in range(3):
            refs[i].grad = g[i].clone()
            opts[i].step()
    for i in range(3):
        assert torch.allclose(p[i], refs[i], atol=1e-6)


def _params(world: dict, model: dict, train: dict | None = None) -> dict:
    return {"worlds": {"w": {"n_features": 6, "d_embed": 6, "eps": 1.0, **world}},
            "studies": {"S": {"world": "w", "model": {"neurons": 2, **model}, "seeds": [0],
                              "train": {"steps": 4, "batch_size": 8, "lr": 0.01, **(train or {})}}}}


@pytest.mark.parametrize("world,model,train,needle", [
    ({"task": "tms", "d_embed": 3}, {"kind": "tms_relu"}, None, "d_embed must equal n_features"),
    ({"values": "gaussian"}, {}, None, "apply to the tms task only"),
    ({}, {"kind": "tms_relu"}, None, "train on tms worlds"),
    ({"task": "tms"}, {}, None, "train on tms worlds"),
    ({"task": "tms"}, {"kind": "power", "power": 2}, None, "odd power"),
    ({"task": "tms"}, {"kind": "tms_relu", "activation": "gelu"}, None, "activation applies to kind jermyn"),
    ({"task": "tms"}, {"kind": "tms_relu"}, {"weight_decay": 0.01}, "weight_decay applies to adamw"),
    ({"task": "tms"}, {"kind": "tms_relu"}, {"optimizer": "adamw", "bias_offset": -1.0}, "apply to kind jermyn"),
])
def test_model_kinds_and_worlds_that_do_not_fit_are_refused_with_one_line(world, model, train, needle):
    with pytest.raises(ParamsError, match=needle):
        parse_params(_params(world, model, train))


def test_a_tms_study_validates_and_groups_by_kind_and_optimizer():
    params = parse_params(_params({"task": "tms", "importance_decay": 0.7}, {"kind": "tms_hidden"},
                                  {"optimizer": "adamw", "weight_decay": 0.01}))
    inst = params.studies["S"].instances()[0]
    assert inst.model.kind == "tms_hidden" and inst.train.optimizer == "adamw"
    other = Instance(point={}, seed=0, data=DataCfg(), model=ModelCfg(neurons=2), train=TrainCfg(steps=4, batch_size=8, lr=0.01))
    assert inst.group_key != other.group_key


# --- claims on hand-made metrics -----------------------------------------------------------------------------

def _tms_study(dstar: dict[float, float], learned=None) -> dict:
    rows = {f"eps={p:g},seed=0": {"label": f"eps={p:g},seed=0", "point": f"eps={p:g}", "diverged_at": None,
                                  "density": p, "neurons": 5, "loss": 0.1, "dims_per_feature": v,
                                  "features_learned": 5 / v, "mean_superposition": (learned or {}).get(p, 1 - v)}
            for p, v in dstar.items()}
    return {"instances": rows}


def test_sticky_dims_per_feature_needs_plateaus_at_one_and_a_half():
    sticky = {1.0: 1.0, 0.4: 0.98, 0.2: 0.7, 0.1: 0.51, 0.05: 0.5, 0.02: 0.3}
    smooth = {1.0: 1.0, 0.7: 0.9, 0.4: 0.75, 0.2: 0.6, 0.1: 0.5, 0.05: 0.4, 0.02: 0.3}
    assert dims_per_feature_sticky({"TMS1": _tms_study(sticky)})["holds"] is True
    assert dims_per_feature_sticky({"TMS1": _tms_study(smooth)})["holds"] is False
    assert dims_per_feature_sticky({})["holds"] is None


def test_sparser_inputs_more_superposition_needs_both_trends():
    up = {1.0: 1.0, 0.5: 0.8, 0.3: 0.7, 0.2: 0.6, 0.1: 0.5, 0.05: 0.4, 0.02: 0.3, 0.01: 0.2}
    assert sparsity_more_superposition({"TMS1": _tms_study(up)})["holds"] is True
    flat_sup = {p: 0.5 for p in up}  # features learned grow, superposition does not
    assert sparsity_more_superposition({"TMS1": _tms_study(up, flat_sup)})["holds"] is False


def _cluster_study(dims: list[float]) -> dict:
    study = _tms_study({0.1: 0.4})
    row = study["instances"]["eps=0.1,seed=0"]
    row["features_learned"], row["neurons"] = 20.0, 5
    study["features"] = {row["label"]: {"dimensionality": dims, "norm": [1.0] * len(dims)}}
    return study


def test_feature_dimensionalities_cluster_only_when_they_sit_on_the_fractions():
    on = [0.5] * 30 + [0.4] * 20 + [0.375] * 10 + [0.3, 0.9]
    spread = torch.linspace(0.3, 1.0, 60).tolist()
    assert feature_dims_cluster({"TMS2": _cluster_study(on)})["holds"] is True
    assert feature_dims_cluster({"TMS2": _cluster_study(spread)})["holds"] is False
    # every D_i between the fractions' windows (as 16 training steps leave them): nothing at a fraction, no
    # null to compare with (the paper-smoke profile's report divided by it)
    between = feature_dims_cluster({"TMS2": _cluster_study(torch.linspace(0.11, 0.3, 40).tolist())})
    assert between["holds"] is False and between["effect"] is None and between["evidence"].startswith("0/40 ")


def _bounds_study(gain) -> dict:
    rows = {}
    for d in (3, 4):
        for j in range(10):
            p = 2.0 ** (j - 10)
            refs = gain_references(p, 80, d, 3, "gaussian")
            rows[f"{d},{p}"] = {"diverged_at": None, "density": p, "neurons": d, "power": 3, "gain": gain(p, d),
                                **{f"gain_{k}": v for k, v in refs.items()}}
    return {"instances": rows}


def test_gain_claims_hold_for_a_gain_on_the_lower_order_curve_and_fail_for_a_straight_line():
    on_curve = _bounds_study(lambda p, d: 0.2 * min(p * d ** 3, d * p ** (1 / 3)))
    straight = _bounds_study(lambda p, d: 0.2 * p * d ** 3)
    assert gain_slopes({"BOUNDS": on_curve})["holds"] is True
    assert gain_slopes({"BOUNDS": straight})["holds"] is False
    assert gain_within_bounds({"BOUNDS": on_curve})["holds"] is True
    assert gain_within_bounds({"BOUNDS": straight})["holds"] is False  # far above C·min(pd^k, d)
    assert gain_slopes({})["holds"] is None


def test_a_tied_model_with_adamw_resumes_from_a_checkpoint_bit_identical(tmp_path):
    from monosem.config import Study
    from monosem.store.artifacts import load_tensors, save_tensors
    from monosem.training.loop import fit
    from monosem.training.toy import ToyStudyModule

    world = generate_world(World(n_features=6, d_embed=6, eps=1.0, task="tms", n_eval=64))
    study = Study(world="w", model={"kind": "tms_relu", "neurons": 2}, seeds=[0], sweep={"data.eps": [1.0, 0.2]},
                  train={"steps": 64, "batch_size": 32, "lr": 0.01, "optimizer": "adamw", "weight_decay": 0.01,
                         "log_points": 4})
    full = ToyStudyModule(world, study.instances())
    fit(full, progress=False)
    half = ToyStudyModule(world, study.instances())
    half.steps = 32  # stop halfway, as an interrupted run's last checkpoint
    fit(half, progress=False)
    tensors, meta = half.checkpoint()
    save_tensors(tmp_path / "ck.safetensors", tensors)  # AdamW's step count is a 0-d tensor
    resumed = ToyStudyModule(world, study.instances())
    resumed.restore(load_tensors(tmp_path / "ck.safetensors"), meta)
    fit(resumed, progress=False)
    assert torch.equal(resumed.model.W, full.model.W) and torch.equal(resumed.model.b, full.model.b)
