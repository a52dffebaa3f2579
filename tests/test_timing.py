"""The time projection `make repro` prints before any work (monosem.training.timing), on hand-computed cases."""

import pytest
from e2e import ROOT

from monosem.params import load_params
from monosem.training import timing


def test_a_study_trains_for_its_matmuls_flops_at_the_calibrated_share_of_the_rate():
    params = load_params(ROOT / "params.yaml")
    lr1 = params.studies["LR1"]  # N 128, m 32, k 256, B 256, 4096 steps, 3 learning rates × seeds
    models = 3 * len(lr1.seeds)
    flops = models * 4096 * 6 * 256 * (32 * 256 + 256 * 128)
    got = {t.stage: t.seconds for t in timing.stage_times(params, rate=1e11)}
    loop = timing.STEP_SECONDS * 4096 + flops / (timing.TRAIN_EFFICIENCY * 1e11)  # one module: one shape
    assert got["train@LR1"] == pytest.approx(timing.STAGE_SECONDS + loop)
    per_pass = 2 * 8192 * 256 * (32 + 128 + 128)
    assert got["measure@LR1"] == pytest.approx(timing.STAGE_SECONDS + models * timing.EVAL_PASSES * per_pass / 1e11)
    assert got["generate@uniform"] == timing.STAGE_SECONDS


def test_what_will_run_is_each_changed_stage_and_everything_downstream_of_it():
    params = load_params(ROOT / "params.yaml")
    assert timing.about_to_run(params, set()) == set()
    assert timing.about_to_run(params, {"measure@E1"}) == {"measure@E1", "report"}
    lr1 = timing.about_to_run(params, {"train@LR1"})  # SAE_INPUT and SAE_HIDDEN read an LR1 model
    assert lr1 == {"train@LR1", "measure@LR1", "sae@SAE_INPUT", "sae@SAE_HIDDEN", "report"}
    world = timing.about_to_run(params, {"generate@power_law"})
    assert {"train@LR2", "measure@LR4", "report"} <= world and "train@LR1" not in world
    assert timing.about_to_run(params, None) == {t.stage for t in timing.stage_times(params, 1.0)}


def test_the_paper_profile_projects_to_days_on_a_cpu_and_the_default_to_minutes():
    at = 250e9  # the budget's reference rate
    paper = sum(t.seconds for t in timing.stage_times(load_params(ROOT / "profiles/paper.yaml"), at))
    default = sum(t.seconds for t in timing.stage_times(load_params(ROOT / "params.yaml"), at))
    assert paper > 30 * 86400 and 10 * 60 < default < 30 * 60


@pytest.mark.parametrize("seconds, text", [(4.4, "4 s"), (119.6, "2 min 00 s"), (7170, "2 h 00 min"),
                                           (3 * 86400, "3.0 days"), (800 * 86400, "2.2 years")])
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert timing.duration(seconds) == text


def test_progress_lines_come_at_each_tenth_and_at_least_every_interval_between():
    import io
    from types import SimpleNamespace

    import torch

    from monosem.training.progress import ProgressLines

    module = SimpleNamespace(steps=1000, start_step=0, curves=SimpleNamespace(steps=[1], values={"loss": [torch.ones(2)]}))
    trainer = SimpleNamespace(is_global_zero=True)

    def lines(every: float) -> list[str]:
        out = io.StringIO()
        cb = ProgressLines(stream=out, every=every)
        cb.on_train_start(trainer, module)
        for first in range(0, 1000, 25):  # chunks of 25 steps
            cb.on_train_batch_end(trainer, module, None, (first, 25), first // 25)
        return out.getvalue().splitlines()

    tenths = lines(every=3600.0)
    assert [line.split()[1] for line in tenths] == [f"{s}/1000" for s in range(100, 1001, 100)]
    assert "loss 1" in tenths[0] and tenths[0].endswith("s left") and tenths[-1].split("  ")[-1].startswith("done in")
    assert len(lines(every=0.0)) == 40  # an interval shorter than a chunk: a line after every chunk
