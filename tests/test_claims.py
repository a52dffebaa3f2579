"""The intervention claims' criteria on hand-made study results: each holds when its effect is built in,
fails when the effect is reversed, and is untested when its study is absent."""

import pytest

from monosem.claims import (inhibition_lowers_monosemanticity, lasso_raises_monosemanticity, noise_bias_tracks_sigma,
                            noise_moves_poly_more)


def study(rows):
    """metrics.json shape: instances by label, each with its sweep values, seed and metrics."""
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
