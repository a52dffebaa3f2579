"""What DVC shows of a study: its headline (metrics.json) and a few seed statistics per sweep point, rounded
(points.json)."""

import math

from monosem.analysis.summary import best, compact, summarise


def rows():
    out = []
    for point, values in (("lr=0.01", [0.5, 0.7]), ("lr=0.1", [0.2, float("nan")]), ("lr=1", [0.9, 0.9])):
        for seed, v in enumerate(values):
            out.append({"point": point, "seed": seed, "mono": v, "loss": 1 / 3 + seed, "n_dead": seed,
                        "diverged_at": 100 if point == "lr=1" and seed else None})
    return out


def test_compact_keeps_the_chosen_numbers_with_four_significant_digits_and_names_the_best_point():
    points = summarise(rows(), ("mono", "loss", "n_dead"))
    assert points["lr=1"]["diverged"] == 1 and points["lr=1"]["seeds"] == 1
    out = compact(points, ("mono", "loss"), ("n_dead", "diverged"), "mono")
    assert out["lr=0.01"] == {"mono": 0.6, "mono_std": 0.1414, "loss": 0.8333, "loss_std": 0.7071,
                                        "n_dead": 0.5, "diverged": 0}
    assert out["lr=0.1"]["mono"] == 0.2 and math.isnan(out["lr=0.1"]["mono_std"])  # NaN seed left out
    assert math.isnan(out["lr=1"]["mono_std"])  # one seed left: no spread
    assert out["headline"] == {"metric": "mono", "best": 0.9, "at": "lr=1"}
    assert best(points, "mono") == {"best": {"mono": 0.9}}  # one number: one column in `dvc exp show`
    assert best(points, "loss") == {"best": {"loss": 0.8333}}  # lr=1's second seed diverged: left out


def test_a_study_with_no_measured_headline_has_none():
    points = summarise([{"point": "base", "mono": float("nan"), "diverged_at": None}], ("mono",))
    assert compact(points, ("mono",), (), "mono")["headline"]["at"] is None
    assert math.isnan(best(points, "mono")["best"]["mono"])
