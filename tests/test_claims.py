"""The intervention claims' criteria on hand-made study results: each holds when its effect is built in,
fails when the effect is reversed, and is untested when its study is absent."""

import pytest

from monosem.claims import (bias_scales_as_sqrt_density, density_lowers_monosemanticity, effects_hold_on_other_tasks,
                            inhibition_lowers_monosemanticity, l1_raises_monosemanticity, lasso_raises_monosemanticity,
                            noise_bias_tracks_sigma, noise_moves_poly_more, same_loss_different_monosemanticity,
                            width_raises_monosemanticity)


def study(rows):
    """measured.json shape: instances by label, each with its sweep values, seed and metrics."""
    out = {}
    for r in rows:
        point = ",".join(f"{k.split('.')[-1]}={v:g}" for k, v in r.items() if k.startswith("sweep."))
        row = {"point": point, "diverged_at": None, "loss": 1.0} | r
        out[f"{point},seed={r['seed']}"] = row
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


def sweep_study(key, values, mono, **extra):
    """A study sweeping `key` over `values`, 3 seeds, #mono/#features mono(value) + 0.01·seed."""
    return study([{f"sweep.{key}": v, "seed": seed, "mono_per_feature": mono(v) + 0.01 * seed,
                   **{k: f(v) for k, f in extra.items()}} for v in values for seed in range(3)]) | {"n_features": 64}


def test_width_claim_needs_a_rising_trend_and_near_one_per_feature_at_the_widest_k1():
    widths = [16, 32, 64, 128, 256]
    rising = sweep_study("model.neurons", widths, lambda k: k / 256)  # 0.99..1.01 at k = 256
    assert width_raises_monosemanticity({"K0": rising, "K1": rising})["holds"] is True
    low_top = sweep_study("model.neurons", widths, lambda k: k / 1024)  # rises, but only 0.25 at k = 4N
    assert width_raises_monosemanticity({"K0": rising, "K1": low_top})["holds"] is False
    assert width_raises_monosemanticity({"K0": sweep_study("model.neurons", widths, lambda k: 1 / k)})["holds"] is False


def test_density_claim_needs_monosemanticity_to_fall_with_eps():
    eps = [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32]
    falling = sweep_study("data.eps", eps, lambda e: 1 - e)
    assert density_lowers_monosemanticity({"E1": falling, "E3": falling})["holds"] is True
    assert density_lowers_monosemanticity({"E1": falling, "E3": sweep_study("data.eps", eps, lambda e: e)})["holds"] is False


@pytest.mark.parametrize("power, holds", [(0.5, True), (1.0, False), (0.0, False)])
def test_sqrt_eps_claim_fits_the_power_of_the_learned_bias(power, holds):
    eps = [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32]
    e1 = sweep_study("data.eps", eps, lambda e: 0.0, bias_mean_live=lambda e: -0.3 * e ** power)
    out = bias_scales_as_sqrt_density({"E1": e1})
    assert out["holds"] is holds and f"slope {power:.3f}" in out["evidence"]


def test_l1_claim_corrects_for_the_number_of_strengths_tested():
    l1 = [0.0, 1e-4, 1e-3, 1e-2]
    clear = sweep_study("train.l1", l1, lambda v: 0.2 + (v == 1e-3) * 0.3)
    assert l1_raises_monosemanticity({"RG1": clear})["holds"] is True
    assert "needs < 0.0167" in l1_raises_monosemanticity({"RG1": clear})["evidence"]
    flat = sweep_study("train.l1", l1, lambda v: 0.2)
    assert l1_raises_monosemanticity({"RG1": flat})["holds"] is False


def test_other_tasks_claim_uses_lr_for_rp1_and_lr5_and_decay_for_d1():
    up_lr = sweep_study("train.lr", [0.001, 0.01, 0.03], lambda v: v)
    up_decay = sweep_study("train.bias_decay", [0.0, 0.03, 0.3], lambda v: v)
    assert effects_hold_on_other_tasks({"RP1": up_lr, "LR5": up_lr, "D1": up_decay})["holds"] is True
    down = sweep_study("train.bias_decay", [0.0, 0.03, 0.3], lambda v: -v)
    assert effects_hold_on_other_tasks({"RP1": up_lr, "D1": down})["holds"] is False


def test_lr_claim_is_judged_in_each_lr_study_that_ran():
    same_loss = sweep_study("train.lr", [0.001, 0.01, 0.03], lambda v: v * 10)  # loss 1.0 everywhere
    assert same_loss_different_monosemanticity({"LR1": same_loss, "LR2": same_loss})["holds"] is True
    costly = study([{"sweep.train.lr": v, "seed": s, "mono_per_feature": v * 10, "loss": 1 + v * 10}
                    for v in (0.001, 0.01, 0.03) for s in range(3)])  # 30% loss spread
    out = same_loss_different_monosemanticity({"LR1": same_loss, "LR2": costly})
    assert out["holds"] is False and out["evidence"].startswith("LR1: loss spread 0.0%")
    assert same_loss_different_monosemanticity({})["holds"] is None


def test_a_study_that_does_not_sweep_the_claims_variable_leaves_it_untested():
    unswept = study([{"seed": s, "mono_per_feature": 0.1, "bias_mean_live": -0.2} for s in range(3)])
    for claim, name in ((effects_hold_on_other_tasks, "LR5"), (width_raises_monosemanticity, "K1"),
                        (density_lowers_monosemanticity, "E1"), (bias_scales_as_sqrt_density, "E1"),
                        (l1_raises_monosemanticity, "RG1"), (lasso_raises_monosemanticity, "LASSO"),
                        (inhibition_lowers_monosemanticity, "INHIBIT"), (noise_moves_poly_more, "NOISE")):
        assert claim({name: unswept})["holds"] is None, claim.__name__
