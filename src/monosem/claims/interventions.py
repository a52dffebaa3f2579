"""Beyond the paper: the interventions its discussion suggests (input noise, L1 on the output as well: lasso) and
the inhibition of monosemantic neurons (Wang et al. 2023, L2E form).

Studies by name: NOISE and NOISE_TRICK sweep train.noise_std, LASSO sweeps train.l1 × train.l1_out,
INHIBIT sweeps train.inhibit (params.yaml). A study that is absent leaves its claim untested. These claims keep
their tests' p-values: their verdict follows `holds`, `effect` is the number the criterion reads.
"""

from __future__ import annotations

import statistics

from scipy import stats

from monosem.claims.common import Studies, by_point, claim, fmt, instances, missing, num, sweep_value, swept


def _paired_wilcoxon(diff: list[float], alternative: str) -> float:
    if all(d == 0 for d in diff):
        return 1.0
    try:
        return float(stats.wilcoxon(diff, alternative=alternative).pvalue)
    except ValueError:  # every difference zero
        return 1.0


@claim("interventions")
def noise_bias_tracks_sigma(studies: Studies) -> dict:
    names = ["NOISE", "NOISE_TRICK"]
    result = {"id": "noise_bias_tracks_sigma", "studies": names,
              "claim": "The learned negative bias tracks the input noise level σ, as in sparse coding (discussion "
                       "of the paper).",
              "criterion": "in each noise study, over all instances: Spearman correlation between σ and the mean "
                           "bias of the live (not dead) neurons <= -0.5 with p < 0.05 (the bias falls as σ rises)"}
    present = [n for n in names if n in studies]
    if not present:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(names)}"}
    ok, parts, rhos = [], [], {}
    for name in present:
        rows = [r for r in swept(instances(studies[name]), "train.noise_std") if num(r["bias_mean_live"])]
        sigma = [sweep_value(r, "train.noise_std") for r in rows]
        bias = [r["bias_mean_live"] for r in rows]
        if len(set(sigma)) < 2:
            return result | {"holds": None, "evidence": f"{name}: fewer than two noise levels"}
        rho, p = stats.spearmanr(sigma, bias)
        slope = stats.linregress(sigma, bias).slope
        ok.append(bool(rho <= -0.5 and p < 0.05))
        rhos[f"{name}.rho"] = float(rho)
        per = by_point(studies[name], "bias_mean_live")
        parts.append(f"{name}: Spearman {rho:.2f} (p = {p:.2g}), slope d(bias)/dσ {slope:.2f}; live bias "
                     + "; ".join(f"{pt} {fmt(v)}" for pt, v in per.items()))
    return result | {"holds": all(ok), "evidence": ". ".join(parts), "effect": rhos}


@claim("interventions")
def noise_moves_poly_more(studies: Studies) -> dict:
    names = ["NOISE", "NOISE_TRICK"]
    result = {"id": "noise_moves_poly_not_mono", "studies": names,
              "claim": "Input noise changes the polysemantic neurons' activations more than the monosemantic "
                       "ones' (discussion of the paper).",
              "criterion": "over every model trained with σ > 0 that has both classes, noise at its own σ on the "
                           "eval set: relative activation change ‖Δh‖/‖h‖ of the polysemantic neurons above that of "
                           "the monosemantic ones (one-sided Wilcoxon signed-rank, p < 0.05)"}
    present = [n for n in names if n in studies]
    if not present:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(names)}"}
    rows = [r for n in present for r in swept(instances(studies[n]), "train.noise_std")
            if num(r["noise_change_mono"]) and num(r["noise_change_poly"])]
    if len(rows) < 2:
        return result | {"holds": None, "evidence": "fewer than 2 noisy models with both classes"}
    mono, poly = [r["noise_change_mono"] for r in rows], [r["noise_change_poly"] for r in rows]
    p = _paired_wilcoxon([b - a for a, b in zip(mono, poly)], "greater")
    more = sum(b > a for a, b in zip(mono, poly))
    return result | {"holds": bool(p < 0.05), "effect": statistics.fmean(b - a for a, b in zip(mono, poly)),
                     "evidence": f"{len(rows)} models; relative change mono {fmt(mono)}, poly {fmt(poly)}; poly "
                                 f"moved more in {more}/{len(rows)}, Wilcoxon p = {p:.3g}"}


def _against_zero(rows: list[dict], key: str, match: tuple[str, ...] = ()) -> list[tuple[dict, dict]]:
    """(control, treated) pairs: each instance with sweep `key` > 0 against the one with `key` = 0 that has
    the same seed and the same values of the `match` sweep keys."""
    def tag(r: dict) -> tuple:
        return (r["seed"], *(sweep_value(r, k) for k in match))
    rows = [r for r in swept(rows, key) if all(f"sweep.{k}" in r for k in match)]
    control = {tag(r): r for r in rows if sweep_value(r, key) == 0}
    return [(control[tag(r)], r) for r in rows if sweep_value(r, key) > 0 and tag(r) in control]


def _paired_mono(result: dict, pairs: list[tuple[dict, dict]], alternative: str, names: tuple[str, str]) -> dict:
    """Verdict on #mono/#features of treated against control (one-sided Wilcoxon, p < 0.05), with the
    median loss ratio treated/control stated."""
    if len(pairs) < 2:
        return result | {"holds": None, "evidence": "fewer than 2 pairs of control and treated instances"}
    p = _paired_wilcoxon([t["mono_per_feature"] - c["mono_per_feature"] for c, t in pairs], alternative)
    ratio = statistics.median(t["loss"] / c["loss"] for c, t in pairs)
    gain = statistics.fmean(t["mono_per_feature"] - c["mono_per_feature"] for c, t in pairs)
    return result | {"holds": bool(p < 0.05), "effect": gain,
                     "evidence": f"{len(pairs)} pairs; mono/feat {names[0]} {fmt([c['mono_per_feature'] for c, _ in pairs])}"
                                 f", {names[1]} {fmt([t['mono_per_feature'] for _, t in pairs])}, Wilcoxon "
                                 f"p = {p:.3g}; median loss ratio {names[1]}/{names[0]} {ratio:.3f}"}


@claim("interventions")
def lasso_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "lasso_output_raises_mono", "studies": ["LASSO"],
              "claim": "L1 on the hidden and the output activations (lasso) gives more monosemantic models than L1 "
                       "on the hidden activations alone (discussion of the paper), at a stated loss cost.",
              "criterion": "instances paired by (hidden L1, seed), each l1_out > 0 against l1_out = 0: #mono/#features "
                           "higher with the output term (one-sided Wilcoxon signed-rank, p < 0.05); the loss cost is "
                           "stated as the median loss ratio, not judged"}
    if (miss := missing(result, studies, ["LASSO"])) is not None:
        return miss
    pairs = _against_zero(instances(studies["LASSO"]), "train.l1_out", ("train.l1",))
    return _paired_mono(result, pairs, "greater", ("hidden only", "hidden + output"))


@claim("interventions")
def inhibition_lowers_monosemanticity(studies: Studies) -> dict:
    result = {"id": "inhibition_lowers_mono", "studies": ["INHIBIT"],
              "claim": "Inhibiting monosemantic neurons (Wang et al. 2023, L2E form) lowers monosemanticity; its "
                       "effect on the loss is stated.",
              "criterion": "instances paired by seed, each inhibit > 0 against inhibit = 0: #mono/#features lower "
                           "(one-sided Wilcoxon signed-rank, p < 0.05); the loss change is stated as the median "
                           "loss ratio, not judged"}
    if (miss := missing(result, studies, ["INHIBIT"])) is not None:
        return miss
    out = _paired_mono(result, _against_zero(instances(studies["INHIBIT"]), "train.inhibit"), "less",
                       ("plain", "inhibited"))
    if out["holds"] is None:
        return out
    scale = by_point(studies["INHIBIT"], "mono_scale_mean")
    return out | {"evidence": out["evidence"] + "; mean monosemantic scale per point: "
                  + "; ".join(f"{pt} {fmt(v)}" for pt, v in scale.items())}

