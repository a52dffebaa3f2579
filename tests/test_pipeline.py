"""End to end: real `dvc repro` on tiny params in a temp git repo, real MLflow store, real Lightning."""

import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import plots_page
import pytest
import yaml
from e2e import all_runs, client, make_repo, ran, sh, tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("e2e"), tiny())
    first = sh("dvc repro", repo)
    return repo, first.stdout + first.stderr  # not a terminal: progress as lines


def test_repro_produces_every_output(repo):
    repo, out = repo
    assert ran(out) == {"generate@tiny", "generate@tiny_abs", "sae@SAE1", "report"} | {
        f"{stage}@{study}" for stage in ("train", "measure") for study in ("LR1", "LR3", "LR5", "NOISE", "K1")}
    assert (repo / "data/worlds/tiny/world.safetensors").exists()
    for study in ("LR1", "LR3"):
        metrics = json.loads((repo / f"results/{study}/measured.json").read_text())
        assert set(metrics["points"]) == {"lr=0.003", "lr=0.03"}
        assert len(metrics["instances"]) == 4
        assert all(-1 <= r["mono_scale_vs_frac_mono_spearman"] <= 1 for r in metrics["instances"].values()
                   if r["mono_scale_vs_frac_mono_spearman"] is not None)
        for fig in ("training.png", "sfa.png", "bias.png", "mono_sweep.png"):
            assert (repo / f"results/{study}/interp/{fig}").stat().st_size > 10_000
        assert len(list((repo / f"results/{study}/interp/neurons").glob("*.csv"))) == 4
    for kind in ("decomposition", "spectrum", "instances"):
        drawn = [p.name for p in (repo / f"results/LR3/interp/{kind}").glob("*.png")]
        assert drawn == ["lr=0.03,seed=0.png"]  # the first seed of the last point
    summary = json.loads((repo / "results/LR5/interp/summary.json").read_text())
    assert len(summary) == 2 and all("abs_features_pair" in s and "poly_r2_rank_m" in s for s in summary.values())
    claims = json.loads((repo / "reports/claims.json").read_text())
    assert {c["id"] for c in claims} >= {"lr_same_loss_different_mono", "bias_trick_more_mono_no_loss_cost",
                                         "poly_linear_low_rank_plus_offset", "mono_thresholded_per_feature"}
    assert all(set(c) >= {"claim", "holds", "evidence"} and c["holds"] in (True, False, None) for c in claims)
    assert all(c["stability"] in ("stable", "fragile") and set(c["leave_one_out"]) == {"0", "1"} for c in claims)
    table = (repo / "reports/claims.md").read_text().splitlines()
    assert table[0].endswith("fragile.") and len(table) == 4 + len(claims)  # a line, a blank, a header, a rule
    report = (repo / "reports/report.md").read_text()
    assert "## LR1" in report and "figures/LR1-training.png" in report and (repo / "reports/figures/LR1-sfa.png").exists()
    assert "## The residual polysemantic neurons" in report and "ReLU(v)/ReLU(−v) pair" in report
    assert (repo / "reports/figures/LR5-decomposition.png").exists()
    noise = json.loads((repo / "results/NOISE/measured.json").read_text())["instances"]
    assert all((r["noise_change_poly"] is None) == (r["sweep.train.noise_std"] == 0) for r in noise.values()
               if r["n_poly"] > 0)
    assert (repo / "results/NOISE/interp/noise.png").stat().st_size > 10_000
    assert next(c for c in claims if c["id"] == "noise_bias_tracks_sigma")["holds"] in (True, False)
    assert "## Beyond the paper" in report and "figures/NOISE-noise.png" in report
    widths = json.loads((repo / "results/K1/measured.json").read_text())
    assert list(widths["points"]) == ["neurons=8,batch_size=64,eps=0.125", "neurons=8,batch_size=64,eps=0.25",
                                      "neurons=16,batch_size=32,eps=0.125", "neurons=16,batch_size=32,eps=0.25"]
    weights = (repo / "models/K1/weights.safetensors")
    from safetensors import safe_open
    with safe_open(weights, "pt") as fh:
        assert fh.get_slice("neurons=8,batch_size=64,eps=0.125,seed=0/W1").get_shape() == [8, 4]
    assert (repo / "results/K1/interp/mono_sweep.png").exists()
    assert next(c for c in claims if c["id"] == "width_raises_mono")["evidence"].startswith("K1: Spearman")
    assert "| K1 | decoder | relu | uniform | Var | Var |" in report  # the study table names what is swept
    assert "peak #mono/#features in training |" in report and " @ 2^" in report
    shown = sh("dvc metrics show --json", repo).stdout
    assert "mono_per_feature" in shown


def test_every_stage_records_its_seconds_and_peak_memory_and_the_benchmark_sums_them_per_kind(repo):
    repo, out = repo
    lines = [json.loads(line) for line in (repo / ".monosem/stages.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in lines} == ran(out)  # DVC's names; one line each
    assert all(0 < e["seconds"] < 600 and 1e8 < e["peak_rss"] < 8e9 and e["peak_device"] is None for e in lines)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stage_costs import costs, markdown, table

    from monosem.params import load_params
    rows = table(load_params(repo / "params.yaml"), costs(repo), 100e9)
    assert [r["kind"] for r in rows] == ["generate", "train", "measure", "sae", "report"]
    assert sum(r["stages"] for r in rows) == len(lines) and all(r["stages"] == r["of"] for r in rows)
    assert all(0.2 < r["ratio"][0] <= r["ratio"][1] < 5 for r in rows if r["kind"] != "report")
    assert markdown(rows).splitlines()[-1].startswith(f"| all | {len(lines)} |")
    assert costs(repo, since="9999") == {}


def test_each_seed_has_its_own_embedder_and_measure_and_interpret_use_it(repo):
    import csv

    import torch
    from safetensors.torch import load_file

    from monosem.analysis.metrics import count_mono, measure, single_feature_activations
    from monosem.store.artifacts import load_world
    from monosem.toy.models import ToyModels

    repo, _ = repo
    weights = load_file(repo / "models/LR1/weights.safetensors")
    world = load_world(repo / "data/worlds/tiny")
    P0, P1 = weights["lr=0.003,seed=0/P"], weights["lr=0.003,seed=1/P"]
    assert not torch.equal(P0, P1) and torch.equal(P0, weights["lr=0.03,seed=0/P"])  # per seed, not per point
    assert torch.equal(P1, world.for_seed(1).P)
    label = "lr=0.003,seed=1"
    model = ToyModels.from_states([{k: weights[f"{label}/{k}"] for k in ("W1", "b1", "W2")}], "relu")
    own = world.for_seed(1)
    loss = measure(model, own.probes, own.inputs(own.eval_f), own.targets(own.eval_f))["loss"].item()
    shared = measure(model, world.probes, world.inputs(world.eval_f), world.targets(world.eval_f))["loss"].item()
    rows = {r["label"]: r for r in csv.DictReader(open(repo / "results/LR1/instances.csv"))}
    assert float(rows[label]["loss"]) == pytest.approx(loss, rel=1e-5) and abs(shared - loss) > 1e-3 * loss
    summary = json.loads((repo / f"results/LR1/interp/summaries/{label}.json").read_text())
    assert summary["n_mono_at_0.999"] == int(count_mono(single_feature_activations(model, own.probes)))


def test_dvc_metrics_hold_each_studys_headline_and_points_json_a_few_seed_statistics_per_point(repo):
    repo, _ = repo
    lr3, per_point, measured = (json.loads((repo / f"results/LR3/{f}.json").read_text())
                                for f in ("metrics", "points", "measured"))
    points = {k: v for k, v in per_point.items() if k != "headline"}
    assert list(points) == list(measured["points"])
    for point, stats in points.items():
        assert set(stats) == {"mono_per_feature", "mono_per_feature_std", "mono_per_neuron", "mono_per_neuron_std",
                              "loss", "loss_std", "n_dead", "diverged"}
        for key in stats:
            assert stats[key] == pytest.approx(measured["points"][point][key], rel=1e-3)  # 4 significant digits
    at = max(points, key=lambda p: points[p]["mono_per_feature"])
    assert per_point["headline"] == {"metric": "mono_per_feature", "best": points[at]["mono_per_feature"], "at": at}
    assert lr3 == {"best": {"mono_per_feature": points[at]["mono_per_feature"]}}
    sae, sae_points = (json.loads((repo / f"results/saes/SAE1/{f}.json").read_text()) for f in ("metrics", "points"))
    assert list(sae_points) == ["headline", "relu-lambda0.01", "relu-lambda0.1", "gated-lambda0.01", "gated-lambda0.1",
                                "topk-k1", "topk-k2", "mcc_at_true_l0"]
    assert set(sae_points["topk-k2"]) == {"l0", "l0_std", "explained_variance", "explained_variance_std", "mcc",
                                          "mcc_std", "dead_fraction"}
    assert set(sae_points["mcc_at_true_l0"]) <= {"relu", "gated", "topk"}
    assert sae == {"best": {"mcc": sae_points["headline"]["best"]}}
    # instances.csv keeps every number of every instance (the explorer and pandas read it)
    header = (repo / "results/LR3/instances.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["label", "point", "seed", "sweep.train.lr", "diverged_at"] and "mono_scale_mean" in header
    # DVC's tables: one column per study and SAE study; points.json on request
    shown = next(iter(json.loads(sh("dvc metrics show --json", repo).stdout).values()))["data"]  # the workspace
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert sorted(f for f, d in shown.items() for _ in _leaves(d["data"])) == sorted(
        [f"results/{s}/metrics.json" for s in params["studies"]] + [f"results/saes/{s}/metrics.json" for s in params["saes"]])
    on_request = sh("dvc metrics show --json results/LR3/points.json", repo).stdout
    assert next(iter(json.loads(on_request).values()))["data"]["results/LR3/points.json"]["data"] == per_point


def _leaves(d: dict, prefix=""):
    """Flattened metric names, as DVC's tables name their columns."""
    for k, v in d.items():
        yield from _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]


def test_the_sweep_plots_render_one_per_study_in_a_headless_browser(repo, tmp_path):
    lacking = plots_page.missing()
    if lacking:
        if os.environ.get("MONOSEM_CI"):
            pytest.fail(f"{lacking}: CI must render the DVC plots")
        pytest.skip(lacking)
    repo, _ = repo
    sweep = list(csv.DictReader((repo / "results/K1/sweep.csv").open()))
    assert len(sweep) == 8 and {k: sweep[0][k] for k in ("point", "seed", "series", "order", "x", "parameter")} == {
        "point": "neurons=8,batch_size=64,eps=0.125", "seed": "0", "series": "eps=0.125", "order": "0", "x": "8",
        "parameter": "model.neurons + train.batch_size"}
    sh(f"dvc plots show -o {tmp_path / 'plots'}", repo)
    page = tmp_path / "plots" / "index.html"
    result = plots_page.render(page, tmp_path / "vega")
    assert result["errors"] == [] and len(result["drawn"]) == page.read_text().count("vegaEmbed(")
    titles = sorted(t for t in result["titles"] if " against " in t)
    assert titles == ["K1: #mono/#features against model.neurons + train.batch_size",
                      "LR1: #mono/#features against train.lr", "LR3: #mono/#features against train.lr",
                      "LR5: #mono/#features against (no sweep)", "NOISE: #mono/#features against train.noise_std"]


def test_stage_logs_off_a_terminal_have_progress_lines_and_no_advertisement_or_bar(repo):
    _, out = repo
    assert "💡" not in out and "litlogger" not in out and "LeafSpec" not in out
    assert "\r" not in out and "it/s]" not in out  # no bar redrawn into the log
    # A line per tenth of training passed (here a chunk of 16 steps is a quarter): 6 toy fits (K1 has two
    # widths), 3 SAE architectures.
    lines = re.findall(r"^  step (\d+)/64 \(\d+%\)  (loss|mse) [\d.e+-]+  (.*)$", out, re.M)
    assert [s for s, _, _ in lines] == ["16", "32", "48", "64"] * 9
    assert sum(name == "mse" for _, name, _ in lines) == 4 * 3
    assert all(left.endswith("s left") for s, _, left in lines if s != "64")
    assert all(left.startswith("done in ") for s, _, left in lines if s == "64")
    assert re.search(r"^report: 5 studies, \d+/\d+ claims hold \([\w@, ]+\); \d+ fragile -> reports/report.md$", out, re.M)


def test_one_mlflow_run_per_model_under_a_parent_with_metrics_and_figures(repo):
    repo, _ = repo
    c, _ = client(repo)
    runs = all_runs(repo)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 6 + 1 and len(children) == 22 + 12  # 5 studies and the SAE study; the report's own run
    assert all(r.info.status == "FINISHED" for r in runs)
    manifest = json.loads((repo / "models/LR1/instances.json").read_text())
    ids = {e["run_id"] for e in manifest["instances"]}
    assert ids <= {r.info.run_id for r in children}
    run = c.get_run(manifest["instances"][0]["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == manifest["parent_run_id"]
    assert run.data.params["train.lr"] == "0.003" and run.data.params["world.eps"] == "0.25"
    assert run.data.params["seed"] == "0" and run.data.params["sweep.train.lr"] == "0.003"
    for tag in ("dvc.stage", "dvc.exp_name", "dvc.baseline_rev", "git.commit", "monosem.input_hash"):
        assert tag in run.data.tags
    assert run.data.tags["dvc.stage"] == "train@LR1"
    assert {"loss", "mono_per_feature", "mean_bias", "final.loss", "final.mono_per_feature",
            "interp.poly_r2_rank_m", "interp.n_mono_at_0.99"} <= set(run.data.metrics)
    assert len(c.get_metric_history(run.info.run_id, "loss")) >= 8
    kinds = ("table", "figure", "decomposition", "spectrum", "summary")
    artifacts = lambda run_id: {a.path for kind in kinds for a in c.list_artifacts(run_id, f"interp/{kind}")}  # noqa: E731
    label = manifest["instances"][0]["label"]
    assert artifacts(run.info.run_id) == {f"interp/table/{label}.csv", f"interp/summary/{label}.json"}
    drawn = next(e for e in manifest["instances"] if e["label"] == "lr=0.03,seed=0")  # figures: this model only
    label = drawn["label"]
    assert {f"interp/table/{label}.csv", f"interp/decomposition/{label}.png", f"interp/spectrum/{label}.png",
            f"interp/figure/{label}.png", f"interp/summary/{label}.json"} == artifacts(drawn["run_id"])
    assert [a.path for a in c.list_artifacts(run.info.run_id, "model")] == ["model/model.safetensors"]
    exp = client(repo)[1]
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_saes_train_on_a_model_layer_with_metrics_exports_runs_figures_and_claims(repo):
    repo, _ = repo
    metrics = json.loads((repo / "results/saes/SAE1/measured.json").read_text())
    assert metrics["layer"] == "hidden" and len(metrics["saes"]) == 12 and metrics["input_scale"] > 0
    row = metrics["saes"]["gated-lambda0.01-seed1"]
    for key in ("l0", "explained_variance", "nmse", "dead_fraction", "shrinkage_gamma", "l2_ratio", "mmcs",
                "mmcs_reverse", "recovered_at_0.9", "recovered_at_0.99", "mcc", "uniqueness", "precision", "recall",
                "f1", "magnitude_ratio", "loss_orig", "loss_zero", "loss_spliced", "loss_recovered"):
        assert key in row, key
    assert 0 <= row["mcc"] <= 1 and row["loss_recovered"] == pytest.approx(
        (row["loss_zero"] - row["loss_spliced"]) / (row["loss_zero"] - row["loss_orig"]), rel=1e-4)
    assert metrics["saes"]["topk-k2-seed0"]["l0"] <= 2  # TopK: at most k latents per input
    assert {c["id"] for c in metrics["claims"]} == {"gated_less_shrinkage@SAE1", "gated_half_l0@SAE1", "gated_pareto@SAE1"}
    assert {r["architecture"] for r in metrics["matched_l0"]} == {"relu", "gated", "topk"}
    folder = repo / "models/saes/SAE1/topk-k2-seed0"
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 2 and cfg["d_in"] == 16 and cfg["d_sae"] == 16
    from safetensors import safe_open
    with safe_open(folder / "sae_weights.safetensors", "pt") as fh:
        assert set(fh.keys()) == {"W_enc", "b_enc", "W_dec", "b_dec"} and fh.get_slice("W_enc").get_shape() == [16, 16]
    for fig in ("pareto.png", "recovery.png", "shrinkage.png", "training.png"):
        assert (repo / f"results/saes/SAE1/figures/{fig}").stat().st_size > 10_000
    claims = {c["id"] for c in json.loads((repo / "reports/claims.json").read_text())}
    assert "gated_pareto@SAE1" in claims
    report = (repo / "reports/report.md").read_text()
    assert "## Sparse autoencoders" in report and "figures/sae-SAE1-pareto.png" in report
    c, _ = client(repo)
    runs = [r for r in all_runs(repo) if r.data.tags.get("monosem.sae") == "SAE1"]
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and len(runs) == 13 and all(r.info.status == "FINISHED" for r in runs)
    run = next(r for r in runs if r.data.tags.get("monosem.label") == "gated-lambda0.01-seed1")
    assert run.data.params["sae.architecture"] == "gated" and run.data.params["sae.lambda"] == "0.01"
    assert {"final.mcc", "final.explained_variance", "final.loss_recovered", "l0", "mse"} <= set(run.data.metrics)
    assert {a.path for a in c.list_artifacts(run.info.run_id, "saelens")} == {"saelens/cfg.json",
                                                                          "saelens/sae_weights.safetensors"}


def test_editing_an_sae_study_reruns_only_it_and_the_report(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["saes"]["SAE1"]["architectures"]["topk"] = [1, 3]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(sh("dvc repro", repo).stdout) == {"sae@SAE1", "report"}
    assert "topk-k3-seed1" in json.loads((repo / "results/saes/SAE1/measured.json").read_text())["saes"]


def test_an_experiment_on_one_study_reruns_it_alone_and_dvc_shows_only_its_change(repo):
    repo, _ = repo
    before = len(all_runs(repo))
    assert "up to date" in sh("dvc repro", repo).stdout  # nothing changed: nothing runs, no new runs
    assert len(all_runs(repo)) == before
    lr1_metrics = (repo / "results/LR1/measured.json").read_bytes()
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm baseline", repo)

    out = sh("dvc exp run -S studies.LR3.train.steps=48", repo).stdout
    assert ran(out) == {"train@LR3", "measure@LR3", "report"}
    assert (repo / "results/LR1/measured.json").read_bytes() == lr1_metrics
    assert len(all_runs(repo)) == before + 1 + 4 + 1  # a new parent, one run per LR3 instance, the report's run
    diff = json.loads(sh("dvc metrics diff --json", repo).stdout)
    assert set(diff) <= {"results/LR3/metrics.json"}, diff  # its headline, if the edit moved it
    per_point = json.loads(sh("dvc metrics diff --json --targets results/LR3/points.json", repo).stdout)
    assert list(per_point) == ["results/LR3/points.json"] and "lr=0.03.loss" in per_point["results/LR3/points.json"]
    header = next(csv.reader(io.StringIO(sh("dvc exp show --only-changed --csv", repo).stdout)))
    assert "studies.LR3.train.steps" in header and len(header) <= 40, header
    assert not [c for c in header if any(other in c for other in ("LR1", "LR5", "NOISE", "K1", "SAE1"))], header


def test_editing_a_world_reruns_it_and_only_the_studies_trained_on_it(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["worlds"]["tiny_abs"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro", repo).stdout
    assert ran(out) == {"generate@tiny_abs", "train@LR5", "measure@LR5", "report"}


def test_a_diverging_instance_is_flagged_and_every_stage_still_completes(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["studies"]["LR1"]["sweep"]["train.lr"] = [0.003, 1e30]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", repo)
    metrics = json.loads((repo / "results/LR1/points.json").read_text())
    assert metrics["lr=1e+30"]["diverged"] == 2 and metrics["lr=0.003"]["diverged"] == 0
    assert "lr=1e+30" not in (repo / "results/LR1/sweep.csv").read_text()  # nothing to plot
    manifest = json.loads((repo / "models/LR1/instances.json").read_text())
    c, _ = client(repo)
    status = {e["label"]: c.get_run(e["run_id"]).info.status for e in manifest["instances"]}
    assert status == {"lr=0.003,seed=0": "FINISHED", "lr=0.003,seed=1": "FINISHED",
                      "lr=1e+30,seed=0": "FAILED", "lr=1e+30,seed=1": "FAILED"}
    assert "(2 diverged)" in (repo / "reports/report.md").read_text()


def test_bad_param_stops_before_training_with_one_line_and_no_running_runs(repo):
    repo, _ = repo
    before = len(all_runs(repo))
    lr3 = (repo / "models/LR3/weights.safetensors").read_bytes()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["studies"]["LR1"]["train"]["lr"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro train@LR1", repo, check=False)
    assert out.returncode != 0
    assert "error: params.yaml: studies.LR1.train.lr = -1: Input should be greater than 0" in out.stderr
    runs = all_runs(repo)
    assert len(runs) == before and not [r for r in runs if r.info.status == "RUNNING"]
    assert (repo / "models/LR3/weights.safetensors").read_bytes() == lr3
