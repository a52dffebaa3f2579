"""The intervention claims' criteria on hand-made study results: each holds when its effect is built in,
fails when the effect is reversed, and is untested when its study is absent."""

import math

import pytest

from monosem.analysis.stats import FAILS, HOLDS, NOT_RUN, UNSURE
from monosem.claims import FAMILIES, REGISTRY, evaluate, without
from monosem.claims import claim as register
from monosem.claims.interventions import (
    inhibition_lowers_monosemanticity,
    lasso_raises_monosemanticity,
    noise_bias_tracks_sigma,
    noise_moves_poly_more,
)
from monosem.claims.paper import (
    bias_scales_as_sqrt_density,
    bias_trick_more_monosemantic,
    density_lowers_monosemanticity,
    effects_hold_on_other_tasks,
    l1_raises_monosemanticity,
    mono_neurons_negative_bias,
    same_loss_different_monosemanticity,
    width_raises_monosemanticity,
)


def study(rows):
    """measured.json shape: instances by label, each with its sweep values, seed and metrics."""
    out = {}
    for r in rows:
        point = ",".join(f"{k.split('.')[-1]}={v:g}" for k, v in r.items() if k.startswith("sweep."))
        label = f"{point},seed={r['seed']}"
        out[label] = {"point": point, "label": label, "diverged_at": None, "loss": 1.0} | r
    return {"instances": out}


def noise_study(bias_slope, mono_change=0.1, poly_change=0.3):
    return study([{"sweep.train.noise_std": s, "seed": seed, "bias_mean_live": bias_slope * s + 0.01 * seed,
                   "noise_change_mono": mono_change * (s > 0) if s else float("nan"),
                   "noise_change_poly": poly_change + 0.01 * seed if s else float("nan")}
                  for s in (0.0, 0.05, 0.1, 0.2) for seed in range(3)])


def test_noise_bias_claim_follows_the_sign_of_the_bias_trend():
    assert noise_bias_tracks_sigma({"NOISE": noise_study(-1.0), "NOISE_TRICK": noise_study(-2.0)})["holds"] is True
    assert noise_bias_tracks_sigma({"NOISE": noise_study(-1.0), "NOISE_TRICK": noise_study(+1.0)})["holds"] is False
    assert noise_bias_tracks_sigma({})["holds"] is None


def test_noise_poly_claim_compares_the_classes_model_by_model():
    assert noise_moves_poly_more({"NOISE": noise_study(-1.0, 0.1, 0.3)})["holds"] is True
    assert noise_moves_poly_more({"NOISE": noise_study(-1.0, 0.5, 0.3)})["holds"] is False
    assert "9 models" in noise_moves_poly_more({"NOISE": noise_study(-1.0)})["evidence"]  # σ = 0 models left out


def lasso_study(gain):
    return study([{"sweep.train.l1": l1, "sweep.train.l1_out": lo, "seed": seed,
                   "mono_per_feature": 0.2 + gain * lo * 100 + 0.01 * seed, "loss": 1.0 + lo}
                  for l1 in (0.001, 0.01) for lo in (0.0, 0.001, 0.01) for seed in range(3)])


def test_lasso_claim_pairs_output_l1_with_hidden_only_at_the_same_l1_and_seed():
    good = lasso_raises_monosemanticity({"LASSO": lasso_study(+1)})
    assert good["holds"] is True and good["evidence"].startswith("12 pairs")
    # loss ratios 1.001 (six pairs) and 1.01 (six pairs): median 1.0055
    assert "median loss ratio hidden + output/hidden only 1.006" in good["evidence"]
    assert lasso_raises_monosemanticity({"LASSO": lasso_study(-1)})["holds"] is False
    assert lasso_raises_monosemanticity({})["holds"] is None


@pytest.mark.parametrize("effect, holds", [(-1, True), (+1, False), (0, False)])
def test_inhibition_claim_needs_lower_monosemanticity_than_the_same_seed_uninhibited(effect, holds):
    rows = [{"sweep.train.inhibit": c, "seed": seed, "mono_per_feature": 0.3 + effect * c * 10 + 0.01 * seed,
             "mono_scale_mean": 1.0} for c in (0.0, 0.001, 0.01) for seed in range(3)]
    assert inhibition_lowers_monosemanticity({"INHIBIT": study(rows)})["holds"] is holds


def sweep_study(key, values, mono, noise=0.01, **extra):
    """A study sweeping `key` over `values`, 3 seeds, #mono/#features mono(value) + noise·seed."""
    return study([{f"sweep.{key}": v, "seed": seed, "mono_per_feature": mono(v) + noise * seed,
                   **{k: f(v) for k, f in extra.items()}} for v in values for seed in range(3)]) | {"n_features": 64}


# Table 1: each claim's interval above, below and straddling its criterion gives holds / does not hold /
# inconclusive; flat data with seed noise straddles (ρ = 0 or a gain of 0 ± noise).
WIDTHS, EPS, LRS = [16, 32, 64, 128, 256], [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32], [0.001, 0.01, 0.03]


def flat(key, values):
    return sweep_study(key, values, lambda v: 0.2, noise=0.1)


@pytest.mark.parametrize("k0, noise, k1, verdict", [
    (lambda k: k / 256, 0.01, lambda k: k / 256, HOLDS),  # 0.99..1.01 at k = 256
    (lambda k: k / 256, 0.01, lambda k: k / 1024, FAILS),  # K1 rises, but only 0.25 at k = 4N
    (lambda k: 1 / k, 0.01, None, FAILS),
    (lambda k: 0.0, 0.0, None, FAILS),  # no monosemantic neuron at any width: ρ = 0, no trend
    (lambda k: 0.2, 0.1, None, UNSURE)])  # seed noise, no trend
def test_width_claim(k0, noise, k1, verdict):
    studies = {"K0": sweep_study("model.neurons", WIDTHS, k0, noise=noise)}
    if k1:
        studies["K1"] = sweep_study("model.neurons", WIDTHS, k1)
    out = width_raises_monosemanticity(studies)
    assert out["verdict"] == verdict and out["holds"] is {HOLDS: True, FAILS: False, UNSURE: None}[verdict]
    assert set(out["effect"]) == set(out["ci95"]) == ({"K0.rho", "K1.rho", "K1.top"} if k1 else {"K0.rho"})


@pytest.mark.parametrize("e3, verdict", [(lambda e: 1 - e, HOLDS), (lambda e: e, FAILS), (None, UNSURE)])
def test_density_claim(e3, verdict):
    falling = sweep_study("data.eps", EPS, lambda e: 1 - e)
    out = density_lowers_monosemanticity({"E1": falling, "E3": sweep_study("data.eps", EPS, e3) if e3 else
                                          flat("data.eps", EPS)})
    assert out["verdict"] == verdict and out["effect"]["E1.rho"] < -0.95


@pytest.mark.parametrize("d1, verdict", [(lambda v: v, HOLDS), (lambda v: -v, FAILS), (None, UNSURE)])
def test_other_tasks_claim_uses_lr_for_rp1_and_lr5_and_decay_for_d1(d1, verdict):
    decays = [0.0, 0.03, 0.3]
    up_lr = sweep_study("train.lr", LRS, lambda v: v)
    out = effects_hold_on_other_tasks({"RP1": up_lr, "LR5": up_lr, "D1": sweep_study("train.bias_decay", decays, d1)
                                       if d1 else flat("train.bias_decay", decays)})
    assert out["verdict"] == verdict and "Spearman with bias_decay" in out["evidence"]


@pytest.mark.parametrize("power, log_noise, verdict", [(0.5, 0, HOLDS), (1.0, 0, FAILS), (0.0, 0, FAILS),
                                                       (0.5, 1.0, UNSURE)])
def test_sqrt_eps_claim_fits_the_power_of_the_learned_bias(power, log_noise, verdict):
    e1 = study([{"sweep.data.eps": e, "seed": s, "mono_per_feature": 0.0,
                 "bias_mean_live": -0.3 * e ** power * math.exp(log_noise * (s - 1))} for e in EPS for s in range(3)])
    out = bias_scales_as_sqrt_density({"E1": e1})
    assert out["verdict"] == verdict and out["effect"] == pytest.approx(power)
    if not log_noise:  # every resample has the same slope
        assert out["ci95"] == pytest.approx([power, power]) and f"slope {power:.3f}" in out["evidence"]


@pytest.mark.parametrize("gain, best, verdict", [(0.3, 1e-3, HOLDS), (-0.1, 1e-4, FAILS), (0.0, 1e-4, UNSURE)])
def test_l1_claim_takes_the_best_strength_with_intervals_that_hold_together(gain, best, verdict):
    l1 = [0.0, 1e-4, 1e-3, 1e-2]
    mono = (lambda v: 0.2 + gain * (v == best)) if gain > 0 else (lambda v: 0.2 + gain * (v > 0))
    out = l1_raises_monosemanticity({"RG1": sweep_study("train.l1", l1, mono)})
    assert out["verdict"] == verdict and out["effect"] == pytest.approx(gain)
    assert f"best gain (L1 {best:g})" in out["evidence"] and "interval at 98.3%" in out["evidence"]


@pytest.mark.parametrize("mono, loss, noise, verdict", [
    (lambda v: v * 10, lambda v: 1.0, 0.01, HOLDS),
    (lambda v: v * 10, lambda v: 1 + v * 10, 0.01, FAILS),  # 30% loss spread
    (lambda v: -v * 10, lambda v: 1.0, 0.01, FAILS),  # monosemanticity falls with lr
    (lambda v: 0.2, lambda v: 1.0, 0.1, UNSURE),  # no change beyond seed noise
    (lambda v: v * 10, lambda v: 1 + (v > 0.02) * 0.1, 0.05, UNSURE)])  # 10% spread ± seed noise
def test_lr_claim(mono, loss, noise, verdict):
    lr2 = study([{"sweep.train.lr": v, "seed": s, "mono_per_feature": mono(v) + noise * s,
                  "loss": loss(v) * (1 + noise * (s - 1))} for v in LRS for s in range(3)])
    same_loss = sweep_study("train.lr", LRS, lambda v: v * 10)  # loss 1.0 everywhere
    out = same_loss_different_monosemanticity({"LR1": same_loss, "LR2": lr2})
    assert out["verdict"] == verdict and out["evidence"].startswith("LR1: loss spread 0.0% [0.0%, 0.0%] (holds)")
    assert set(out["effect"]) == {"LR1.loss_spread", "LR1.mono_change", "LR2.loss_spread", "LR2.mono_change"}
    assert same_loss_different_monosemanticity({})["verdict"] == NOT_RUN


@pytest.mark.parametrize("gain, ratio, verdict", [(0.2, 1.0, HOLDS), (-0.2, 1.0, FAILS), (0.2, 1.2, FAILS),
                                                  (0.0, 1.0, UNSURE)])
def test_bias_trick_claim_pairs_instances_by_lr_and_seed(gain, ratio, verdict):
    def lr_study(mono, loss):
        return study([{"sweep.train.lr": v, "seed": s, "mono_per_feature": mono(s), "loss": loss}
                      for v in LRS for s in range(3)])
    plain = lr_study(lambda s: 0.1, 1.0)
    trick = lr_study(lambda s: 0.1 + gain + 0.05 * (s - 1), ratio)  # paired differences gain ± 0.05
    out = bias_trick_more_monosemantic({"LR1": plain, "LR3": trick})
    assert out["verdict"] == verdict and out["evidence"].startswith("LR3: mono gain")
    assert out["effect"] == pytest.approx({"LR3.mono_gain": gain, "LR3.loss_ratio": ratio})


@pytest.mark.parametrize("poly, verdict", [(0.1, HOLDS), (-0.3, FAILS), (0.0, UNSURE)])
def test_mono_bias_claim(poly, verdict):
    lr3 = study([{"seed": s, "n_mono": 5, "n_poly": 10, "bias_mean_mono": -0.5 + 0.05 * s,
                  "bias_mean_poly": poly + 0.05 * (s - 1)} for s in range(3)])
    out = mono_neurons_negative_bias({"LR3": lr3})
    assert out["verdict"] == verdict
    assert out["effect"] == pytest.approx({"LR3.mono_bias": -0.45, "LR3.mono_minus_poly": -0.45 - poly,
                                           "LR3.poly_bias": poly})


def test_table1_verdicts_are_the_same_on_every_run():
    noisy = flat("data.eps", EPS)
    first = density_lowers_monosemanticity({"E1": noisy})
    assert first == density_lowers_monosemanticity({"E1": flat("data.eps", EPS)})
    lo, hi = first["ci95"]["E1.rho"]
    assert lo < 0 < hi and first["evidence"].startswith(f"E1: Spearman 0.000 [{lo:.3f}, {hi:.3f}] (inconclusive)")


def test_a_study_that_does_not_sweep_the_claims_variable_leaves_it_untested():
    unswept = study([{"seed": s, "mono_per_feature": 0.1, "bias_mean_live": -0.2} for s in range(3)])
    for claim, name in ((effects_hold_on_other_tasks, "LR5"), (width_raises_monosemanticity, "K1"),
                        (density_lowers_monosemanticity, "E1"), (bias_scales_as_sqrt_density, "E1"),
                        (l1_raises_monosemanticity, "RG1"), (lasso_raises_monosemanticity, "LASSO"),
                        (inhibition_lowers_monosemanticity, "INHIBIT"), (noise_moves_poly_more, "NOISE")):
        assert claim({name: unswept})["holds"] is None, claim.__name__


def test_every_claim_carries_a_three_way_verdict_that_holds_agrees_with():
    out = evaluate({"E1": flat("data.eps", EPS), "RG1": sweep_study("train.l1", [0.0, 0.01], lambda v: 0.2 + 10 * v)})
    assert all(set(c) >= {"id", "claim", "criterion", "holds", "verdict", "effect", "ci95", "evidence"} for c in out)
    verdicts = {c["id"]: c["verdict"] for c in out}
    assert (verdicts["density_lowers_mono"], verdicts["l1_raises_mono"], verdicts["width_raises_mono"]) == (
        UNSURE, HOLDS, NOT_RUN)
    assert all(c["holds"] is {HOLDS: True, FAILS: False}.get(c["verdict"]) for c in out)



def test_one_registry_lists_its_claims_family_by_family_and_refuses_an_unknown_family():
    saes = {"S": {"saes": {}}}  # an SAE study without SAEs: its Gated claims, not run
    family = {}
    for c in REGISTRY:
        judged = c.judge(saes if FAMILIES[c.family] == "saes" else {})
        family |= {j["id"]: c.family for j in (judged if isinstance(judged, list) else [judged])}
    ids = [c["id"] for c in evaluate({}, None, saes)]
    assert sorted(ids) == sorted(family) and set(family.values()) == set(FAMILIES)
    assert [family[i] for i in ids] == sorted((family[i] for i in ids), key=list(FAMILIES).index)
    assert [i for i in ids if family[i] == "gated"] == ["gated_less_shrinkage@S", "gated_half_l0@S", "gated_pareto@S"]
    with pytest.raises(ValueError, match="unknown claim family"):
        register("sae")


def test_stability_judges_each_claim_again_with_each_seed_left_out():
    """A clear effect on every seed is stable; a verdict that one seed decides is fragile, and the leave-one-out
    verdicts say which seed it hinges on."""
    def l1_study(gains):  # RG1: mono_per_feature at L1 0 and 0.01, one gain per seed
        return study([{"sweep.train.l1": v, "seed": s, "mono_per_feature": 0.2 + (gains[s] if v else 0) + 0.01 * s}
                      for v in (0.0, 0.01) for s in range(len(gains))])

    clear = {c["id"]: c for c in evaluate({"RG1": l1_study([0.3, 0.31, 0.29, 0.3])})}["l1_raises_mono"]
    assert clear["verdict"] == HOLDS and clear["stability"] == "stable"
    assert clear["leave_one_out"] == {"0": HOLDS, "1": HOLDS, "2": HOLDS, "3": HOLDS}

    one_seed = {c["id"]: c for c in evaluate({"RG1": l1_study([0.1, 0.1, 0.1, -0.3])})}["l1_raises_mono"]
    assert (one_seed["verdict"], one_seed["stability"]) == (UNSURE, "fragile")  # seed 3 reverses the gain
    assert one_seed["leave_one_out"] == {"0": UNSURE, "1": UNSURE, "2": UNSURE, "3": HOLDS}


def test_leaving_a_seed_out_drops_it_from_every_input():
    studies = {"A": study([{"seed": s, "mono_per_feature": 0.1} for s in range(3)])}
    label = next(iter(studies["A"]["instances"]))
    interp = {"A": {lb: {"n_poly": 1} for lb in studies["A"]["instances"]}}
    saes = {"S": {"saes": {f"x,seed={s}": {"seed": s} for s in range(3)}}}
    kept_studies, kept_interp, kept_saes = without(0, studies, interp, saes)
    assert [r["seed"] for r in kept_studies["A"]["instances"].values()] == [1, 2]
    assert label.endswith("seed=0") and label not in kept_interp["A"] and len(kept_interp["A"]) == 2
    assert sorted(r["seed"] for r in kept_saes["S"]["saes"].values()) == [1, 2]
    assert len(studies["A"]["instances"]) == 3  # the inputs themselves are untouched
