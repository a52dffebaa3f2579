"""The memory estimate: what each stage's largest need is, which key a refusal names, and where it counts
(the host, or the accelerator a stage trains on). Calibration against measured peaks:
benchmarks/memory_estimate.py."""

import copy

import pytest
import yaml
from e2e import TINY

from monosem.params import load_params, parse_params
from monosem.training import memory

RAW = yaml.safe_load(TINY.read_text())
GB = 1e9


def estimate(stage: str, edit=None) -> memory.Estimate:
    raw = copy.deepcopy(RAW)
    if edit:
        edit(raw)
    return next(e for e in memory.estimates(parse_params(raw)) if e.stage == stage)


@pytest.mark.parametrize("stage,edit,key", [
    ("generate@tiny", lambda p: p["worlds"]["tiny"].update(n_eval=10**9), "worlds.tiny.n_eval"),
    ("train@LR1", lambda p: p["studies"]["LR1"]["model"].update(neurons=10**8), "studies.LR1.model.neurons"),
    ("train@LR1", lambda p: p["studies"]["LR1"]["train"].update(batch_size=10**8), "studies.LR1.train.batch_size"),
    ("train@K1", lambda p: p["studies"]["K1"]["sweep"].update({"model.neurons,train.batch_size": [[10**8, 32]]}),
     "studies.K1.sweep.model.neurons,train.batch_size (model.neurons)"),
    ("measure@LR1", lambda p: p["worlds"]["tiny"].update(n_eval=10**8), "worlds.tiny.n_eval"),
    ("measure@LR1", lambda p: p["worlds"]["tiny"].update(n_features=10**5), "worlds.tiny.n_features"),
    ("sae@SAE1", lambda p: p["saes"]["SAE1"].update(latents=10**8), "saes.SAE1.latents"),
    ("sae@SAE1", lambda p: p["saes"]["SAE1"].update(n_eval=10**9), "saes.SAE1.n_eval"),
])
def test_an_impossible_size_is_refused_naming_its_key(stage, edit, key):
    est = estimate(stage, edit)
    line = memory.refusal(est, host=16 * GB)
    assert line.startswith(f"{key} = ") and f"{stage} needs about" in line and "more than the 16.0 GB" in line
    assert memory.refusal(estimate(stage), host=16 * GB) is None  # the tiny params fit


def test_training_on_an_accelerator_counts_its_memory_there_and_the_rest_on_the_host():
    est = estimate("train@LR1", lambda p: p["studies"]["LR1"]["model"].update(neurons=10**7))
    on_device = sum(n.bytes for n in est.peak() if n.device)  # weights, optimiser state, a batch
    on_host = est.bytes() - on_device  # the world, the trained weights saved
    assert on_device > on_host > memory.BASE
    assert memory.refusal(est, host=on_host + GB, device=on_device + GB) is None
    assert "more than the 1.0 GB this machine has" in memory.refusal(est, host=GB, device=on_device + GB)
    assert "the accelerator has available" in memory.refusal(est, host=on_host + GB, device=on_device / 2)
    assert memory.refusal(est, host=est.bytes() + GB) is None
    assert memory.refusal(est, host=est.bytes() + GB, processes=2)  # two CPU processes: the training twice


def test_the_shipped_profiles_fit_where_they_are_meant_to_run():
    default = [e.bytes() for e in memory.estimates(load_params("params.yaml"))]
    assert max(default) < 2 * GB  # the 2-core CPU machine, with room to spare
    paper = memory.estimates(load_params("profiles/paper.yaml"))
    assert max(sum(n.bytes for n in e.peak() if n.device) for e in paper) < 40 * GB  # one large GPU


def test_measuring_on_an_accelerator_counts_the_held_out_passes_there():
    est = estimate("measure@LR1", lambda p: p["worlds"]["tiny"].update(n_eval=10**7))
    on_device = sum(n.bytes for n in est.peak() if n.device)  # the hidden layer on the held-out set, a model's outputs
    on_host = est.bytes() - on_device  # the world and the trained weights, loaded on the host first
    assert on_device > on_host > memory.BASE
    assert memory.refusal(est, host=on_host + GB, device=on_device + GB) is None
    assert "the accelerator has available" in memory.refusal(est, host=est.bytes() + GB, device=on_device / 2)
    assert memory.refusal(est, host=est.bytes() + GB) is None  # on the CPU: all of it on the host
