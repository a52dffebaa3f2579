"""The training step is device-agnostic: on the CPU, nothing it creates could land on another device than the
module's, and it never reads a value back from the device; on a GPU (skipped without CUDA), it trains the same
models as the CPU from the same batches. Measuring, interpreting and measuring SAEs create nothing off their
inputs' device either (they read their results back by design)."""

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from monosem.config import Instance, ModelCfg, TrainCfg, World
from monosem.training.toy import ToyStudyModule
from monosem.worlds import generate_world

SRC = str(Path(__file__).resolve().parents[1] / "src" / "monosem")
FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.tensor, torch.as_tensor, torch.arange,
             torch.rand, torch.randn, torch.randint, torch.eye, torch.linspace, torch.scalar_tensor}
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
              torch.Tensor.__float__, torch.Tensor.cpu, torch.Tensor.numpy}


class DeviceAudit(TorchFunctionMode):
    """Records, from monosem's own code, tensor factories called without a device (they would create CPU
    tensors on a GPU run) and reads of device values by the host (each one a synchronisation)."""

    def __init__(self, reads: bool = True):
        super().__init__()
        self.found: list[str] = []
        self.reads = reads  # False: factories only

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        factory = func in FACTORIES and kwargs.get("device") is None and kwargs.get("out") is None
        if factory or (self.reads and func in HOST_READS):
            frame = sys._getframe(1)
            while frame and not frame.f_code.co_filename.startswith(SRC):
                frame = frame.f_back
            if frame:
                self.found.append(f"{func.__name__} at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        return func(*args, **kwargs)


def module_for(world_cfg: World, model: dict, steps=40, **train) -> ToyStudyModule:
    insts = [Instance(point={}, seed=s, model=ModelCfg(**model),
                      train=TrainCfg(steps=steps, batch_size=16, lr=0.01, t_max=8, log_points=2, **train))
             for s in (0, 1)]
    module = ToyStudyModule(generate_world(world_cfg), insts)
    module.configure_optimizers()
    module.on_train_start()
    return module


CASES = {
    "decoder, by hand": (World(n_features=12, d_embed=4, eps=0.2, n_eval=64), {"neurons": 10},
                         dict(bias_offset=-0.5, bias_decay=0.5, l1=0.01, l1_out=0.01, noise_std=0.1)),
    "decoder, inhibition (autograd)": (World(n_features=12, d_embed=4, eps=0.2, n_eval=64), {"neurons": 10},
                                       dict(inhibit=0.05)),
    "abs task": (World(n_features=12, d_embed=4, eps=0.2, task="abs", n_eval=64), {"neurons": 10}, {}),
    "tied TMS model (AdamW)": (World(n_features=6, d_embed=6, eps=0.5, task="tms", n_eval=64),
                               {"kind": "tms_hidden", "neurons": 3}, dict(optimizer="adamw", weight_decay=0.01)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_training_step_creates_nothing_off_its_device_and_never_reads_it_back(case):
    world, model, train = CASES[case]
    module = module_for(world, model, **train)
    # LAMB's and the sampler's numba passes run on the CPU only (their .numpy() views are host reads by design):
    # audit the torch ops a GPU runs
    module.optimizer.fused = module.stream.fused = False
    with DeviceAudit() as audit:
        for step in range(12):  # includes curve points (steps 1, 2, 4, 8) and tracked batches
            module._step(step, None)
    assert audit.found == []
    assert len(module.curves.steps) == 4  # the audit watched the curve points too


def test_the_audit_catches_a_factory_without_a_device_and_a_host_read():
    module = module_for(*CASES["decoder, by hand"][:2])
    with DeviceAudit() as audit:
        module.lr.sum().item()
        torch.zeros(3)
    assert audit.found == []  # called from the test, not from monosem: not counted
    from monosem.toy import optim

    with DeviceAudit() as audit:
        optim.FlatParams([torch.nn.Parameter(torch.zeros(2, 3))]).norms(torch.zeros(6)).tolist()
        optim.cosine_factor(3, 8)
    assert audit.found == []  # a monosem call path without factories or reads
    with DeviceAudit() as audit:
        exec(compile("import torch; torch.zeros(2)", f"{SRC}/fake.py", "exec"))
    assert audit.found and audit.found[0].startswith("zeros at fake.py")


@pytest.mark.parametrize("case", list(CASES))
def test_measuring_and_interpreting_create_nothing_off_the_models_device(case):
    from monosem.analysis.interpret import analyse
    from monosem.toy.families import family, models_from_states
    from monosem.toy.models import ACTIVATIONS

    world_cfg, model, train = CASES[case]
    module = module_for(world_cfg, model, **train)
    for step in range(12):
        module._step(step, None)
    var = module.act_m2 / (module.act_count - 1).clamp(min=1)
    states = [module.model.instance_state(j) | {"act_mean": module.act_mean[j].float(), "act_var": var[j].float()}
              for j in range(2)]
    world, cfg = generate_world(world_cfg), module.instances[0].model
    eval_x, eval_target = world.inputs(world.eval_f), world.targets(world.eval_f)
    models = models_from_states(states, cfg)
    with DeviceAudit(reads=False) as audit:  # what pipeline/measure.py and interpret.py run on the GPU
        values, _ = family(cfg.kind).measure(models, world, eval_x, eval_target, states, [0, 1], module.instances, cfg)
        if not family(cfg.kind).tied:
            analyse(states[0]["W1"], states[0]["b1"], states[0]["W2"], world.P, ACTIVATIONS[cfg.activation],
                    world_cfg.task, eval_x, world.Q)
    assert audit.found == [] and values["loss"].shape == (2,)


@pytest.mark.parametrize("arch", ["relu", "gated", "topk", "batchtopk", "jumprelu"])
def test_measuring_saes_creates_nothing_off_their_device_but_the_cpu_matching(arch):
    from monosem.analysis.sae_eval import measure_saes
    from monosem.config import SaeTrain
    from monosem.toy.models import ToyModels
    from monosem.training.sae import Activations, SAEStudyModule, eval_features

    world = generate_world(World(n_features=8, d_embed=4, eps=0.25, n_eval=256, seed=0))
    toy = ToyModels(1, 4, 16, 8)
    toy.init_instance(0, 0, -0.1)
    src = Activations(world, toy.requires_grad_(False), "hidden", eval_features(world, world.probs, 256))
    train = SaeTrain(steps=4, batch_size=32, lr=3e-3, lr_warmup_steps=1, sparsity_warmup_steps=1, log_points=2)
    module = SAEStudyModule(src, world.probs, arch, [2 if "topk" in arch else 0.1], [0], 12, train)
    with DeviceAudit(reads=False) as audit:
        rows = measure_saes(module.sae, src, world.eval_f)
    assert [f for f in audit.found if "at sae_metrics.py" not in f] == []  # its matching gets CPU copies
    assert 0 <= rows[0]["mcc"] <= 1


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graph"])
def test_on_a_gpu_the_step_trains_what_the_cpu_trains_from_the_same_batches(graphs):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gpu import lockstep

    world, model, train = CASES["decoder, by hand"]
    insts = [Instance(point={}, seed=s, model=ModelCfg(**model),
                      train=TrainCfg(steps=200, batch_size=64, lr=0.01, t_max=8, **train)) for s in (0, 1)]
    if graphs:  # a graph replays the step with the GPU's own generators: compared with the GPU's eager step
        diff = lockstep(generate_world(world), insts, ("cuda", "cuda"), 100, graphs=(False, True), feed=False)
    else:
        diff = lockstep(generate_world(world), insts, ("cpu", "cuda"), 100)
    assert max(diff.values()) < 1e-4, diff
