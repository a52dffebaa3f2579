"""The batched trainer is the paper's training loop, instance by instance."""

import math

import pytest
import torch
import torch_optimizer
from torch import nn

from monosem.config import DataCfg, Instance, ModelCfg, TrainCfg, World
from monosem.toy.models import ToyModels, l1_penalty
from monosem.toy.optim import BatchedLamb, cosine_factor, decay_bias
from monosem.training.loop import fit, log_steps
from monosem.training.toy import ToyStudyModule
from monosem.worlds import derive_seed, generate_world, task_loss

WORLD = World(n_features=12, d_embed=4, eps=0.2, n_eval=64, seed=3)


def instance(seed=0, steps=40, **train):
    base = dict(steps=steps, batch_size=32, lr=0.01, t_max=8, bias_offset=-0.5, bias_decay=0.5, l1=0.01)
    return Instance(point={}, seed=seed, model=ModelCfg(neurons=10), train=TrainCfg(**base | train))


def reference_run(world, inst: Instance, steps: int):
    """The authors' loop: nn.Sequential, torch_optimizer.Lamb, CosineAnnealingLR, bias decay in the first half."""
    toy = ToyModels(1, world.cfg.d_embed, inst.model.neurons, world.d_out)
    toy.init_instance(0, inst.seed, inst.train.bias_offset)
    l1, act, l2 = nn.Linear(world.cfg.d_embed, inst.model.neurons), nn.ReLU(), nn.Linear(inst.model.neurons, world.d_out, bias=False)
    with torch.no_grad():
        l1.weight.copy_(toy.W1[0]), l1.bias.copy_(toy.b1[0]), l2.weight.copy_(toy.W2[0])
    net = nn.Sequential(l1, act, l2)
    opt = torch_optimizer.Lamb(net.parameters(), lr=inst.train.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=inst.train.t_max)
    gen = torch.Generator().manual_seed(derive_seed(world.cfg.seed, inst.seed, "data"))
    noise = torch.Generator().manual_seed(derive_seed(world.cfg.seed, inst.seed, "noise"))
    for i in range(steps):
        f = world.sample(inst.train.batch_size, gen)
        x = world.inputs(f)
        if inst.train.noise_std > 0:
            x = x + inst.train.noise_std * torch.randn(x.shape, generator=noise)
        h = act(l1(x))
        y = l2(h)
        loss = ((y - world.targets(f)) ** 2).sum() / len(f) + inst.train.l1 * h.abs().sum() / len(f) \
            + inst.train.l1_out * y.abs().sum() / len(f)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if i < inst.train.steps / 2:
            with torch.no_grad():
                l1.bias.mul_(1 - inst.train.bias_decay * inst.train.lr)
    return {"W1": l1.weight.detach(), "b1": l1.bias.detach(), "W2": l2.weight.detach()}


def batched_run(world, instances):
    module = ToyStudyModule(world, instances)
    fit(module, progress=False)
    return module


def test_cosine_factor_is_periodic_like_pytorch():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    for step in range(40):
        assert cosine_factor(step, 8) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()
    assert cosine_factor(8, 8) == 0 and cosine_factor(16, 8) == 1 and cosine_factor(24, 8) == 0


@pytest.mark.parametrize("fused", [True, False], ids=["numba", "torch ops"])
@pytest.mark.parametrize("size", [5, 300], ids=["small", "vectorised sums"])
def test_batched_lamb_step_equals_reference_lamb_per_instance(fused, size):
    """Both CPU paths (one numba pass per block; torch's ops, which a GPU runs) equal torch_optimizer.Lamb on
    each instance alone, to float rounding."""
    torch.manual_seed(0)
    params = [torch.randn(3, size, 4), torch.randn(3, size), torch.zeros(3, 6)]  # a zero tensor: trust ratio 1
    lrs = torch.tensor([0.01, 0.1, 0.03])
    batched = [nn.Parameter(p.clone()) for p in params]
    opt = BatchedLamb(batched, lr=lrs, fused=fused)
    assert opt.fused is fused
    singles = [[nn.Parameter(p[i].clone()) for p in params] for i in range(3)]
    refs = [torch_optimizer.Lamb(s, lr=float(lrs[i])) for i, s in enumerate(singles)]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(batched, grads):
            p.grad = g.clone()
        opt.step()
        for i in range(3):
            for p, g in zip(singles[i], grads):
                p.grad = g[i].clone()
            refs[i].step()
    for i in range(3):
        for p, s in zip(batched, singles[i]):
            torch.testing.assert_close(p[i], s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "gelu", "solu"])
@pytest.mark.parametrize("penalties", [False, True], ids=["task", "l1+lasso"])
def test_gradients_by_hand_equal_autograd(activation, penalties):
    """ToyModels.loss_and_grads is the loss of forward + task_loss + l1_penalty, backpropagated by hand."""
    torch.manual_seed(0)
    model = ToyModels(3, 5, 7, 6, activation)
    for i in range(3):
        model.init_instance(i, seed=i, bias_offset=-0.1)
    x, target = torch.randn(3, 16, 5), torch.rand(3, 16, 6)
    l1 = torch.tensor([0.0, 0.1, 0.3]) if penalties else None
    l1_out = torch.tensor([0.2, 0.0, 0.05]) if penalties else None
    h, y = model(x)
    task = task_loss(y, target)
    loss = task + (l1 * l1_penalty(h) + l1_out * l1_penalty(y) if penalties else 0)
    expected = torch.autograd.grad(loss.sum(), [model.W1, model.b1, model.W2])
    got_task, got_h = model.loss_and_grads(x, target.clone(), l1, l1_out)
    torch.testing.assert_close(got_task, task.detach())
    torch.testing.assert_close(got_h, h.detach())
    for name, want in zip(("W1", "b1", "W2"), expected):
        torch.testing.assert_close(getattr(model, name).grad, want, rtol=1e-5, atol=1e-6, msg=name)


def test_bias_decay_multiplies_by_one_minus_decay_times_lr():
    b = torch.ones(2, 3)
    decay_bias(b, torch.tensor([0.5, 0.0]), torch.tensor([0.1, 0.1]))
    assert torch.equal(b, torch.tensor([[0.95] * 3, [1.0] * 3]))


def test_loss_is_summed_over_outputs_and_averaged_over_batch():
    y = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])  # (inst=1, batch=2, out=2)
    t = torch.zeros_like(y)
    assert task_loss(y, t).item() == pytest.approx((1 + 4) / 2)
    assert l1_penalty(-y).item() == pytest.approx(3 / 2)


def test_default_init_matches_nn_linear_bounds_plus_offset():
    toy = ToyModels(1, 16, 64, 32)
    toy.init_instance(0, seed=1, bias_offset=-1.0)
    assert toy.W1.abs().max() <= 1 / 4 and toy.W1.abs().max() > 0.2  # U(±1/√m)
    assert toy.W2.abs().max() <= 1 / 8 and toy.W2.abs().max() > 0.1  # U(±1/√k)
    assert -1.25 <= toy.b1.min() and toy.b1.max() <= -0.75


@pytest.mark.parametrize("extra", [{}, {"noise_std": 0.1, "l1_out": 0.02}], ids=["paper", "noise+lasso"])
def test_one_instance_matches_torch_optimizer_lamb_reference(extra):
    world = generate_world(WORLD)
    inst = instance(seed=5, **extra)
    module = batched_run(world, [inst])
    ref = reference_run(world, inst, inst.train.steps)
    for name in ("W1", "b1", "W2"):
        torch.testing.assert_close(getattr(module.model, name)[0].detach(), ref[name], rtol=1e-4, atol=1e-5)


def test_batched_training_equals_separate_runs():
    world = generate_world(WORLD)
    lrs, seeds = [0.003, 0.03], [0, 1]
    insts = [instance(seed=s, lr=lr, bias_decay=d, noise_std=n, l1_out=o)
             for lr, d, n, o in zip(lrs, [0.0, 3.0], [0.0, 0.2], [0.05, 0.0]) for s in seeds]
    together = batched_run(world, insts)
    for i, inst in enumerate(insts):
        alone = batched_run(world, [inst])
        for name in ("W1", "b1", "W2"):
            torch.testing.assert_close(getattr(together.model, name)[i], getattr(alone.model, name)[0], rtol=1e-5, atol=1e-6)
        assert torch.allclose(together.curves.values["loss"][-1][i], alone.curves.values["loss"][-1][0], rtol=1e-5)


def test_instances_at_other_densities_train_together_exactly_as_alone():
    world = generate_world(WORLD)
    base = instance()
    insts = [base.model_copy(update={"seed": s, "data": DataCfg(eps=e)}) for e in (None, 0.05, 0.5) for s in (0, 1)]
    together = batched_run(world, insts)
    for i, inst in enumerate(insts):
        alone = batched_run(world, [inst])
        ref = reference_run(world.with_eps(inst.data.eps), inst, inst.train.steps)
        for name in ("W1", "b1", "W2"):
            torch.testing.assert_close(getattr(together.model, name)[i], getattr(alone.model, name)[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(getattr(alone.model, name)[0].detach(), ref[name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(together.model.W1[0], together.model.W1[2])  # the density mattered


def test_with_embedders_per_seed_each_seed_trains_on_its_own_P_batched_as_alone():
    world = generate_world(WORLD.model_copy(update={"embedder": "per_seed"}))
    insts = [instance(seed=s, lr=lr) for lr in (0.003, 0.03) for s in (0, 1)]
    together = batched_run(world, insts)
    assert not torch.equal(world.for_seed(0).P, world.for_seed(1).P)
    assert torch.equal(world.for_seed(1).P, world.for_seed(1).P)  # derived, not drawn twice differently
    for i, inst in enumerate(insts):
        ref = reference_run(world.for_seed(inst.seed), inst, inst.train.steps)
        for name in ("W1", "b1", "W2"):
            torch.testing.assert_close(getattr(together.model, name)[i].detach(), ref[name], rtol=1e-4, atol=1e-5)


def test_bias_decay_only_in_first_half():
    world = generate_world(WORLD)
    # lr tiny so the optimiser barely moves b; decay huge so its effect is unmistakable.
    insts = [instance(steps=20, lr=1e-6, bias_decay=5e4, bias_offset=-1.0)]
    module = ToyStudyModule(world, insts)
    b0 = module.model.b1.detach().clone()
    fit(module, progress=False)
    expected = b0 * (1 - 5e4 * 1e-6) ** 10  # 10 of 20 steps decay
    torch.testing.assert_close(module.model.b1.detach(), expected, rtol=1e-3, atol=1e-4)


def test_log_steps_include_powers_of_two_and_the_end():
    s = log_steps(100, 4)
    assert {1, 2, 4, 8, 16, 32, 64, 25, 50, 75, 100} <= set(s) and s == sorted(s)


def test_diverging_instance_is_flagged_and_others_unaffected():
    world = generate_world(WORLD)
    good, bad = instance(seed=0, lr=0.01), instance(seed=0, lr=1e30, bias_decay=0.0)
    module = batched_run(world, [good, bad])  # two sweep points, one seed: order (point, seed)
    alone = batched_run(world, [good])
    assert module.diverged_at[0] == -1
    torch.testing.assert_close(module.model.W1[0], alone.model.W1[0])
    assert module.diverged_at[1] >= 0
    assert not math.isfinite(module.curves.values["loss"][-1][1])


def test_inhibition_penalises_log_deviation_of_the_selected_spikes():
    from monosem.toy.interventions import inhibition_penalty, moving_threshold, phi

    h = torch.tensor([[[0.0, 1.0], [2.0, 1.0]]])  # (inst=1, batch=2, k=2)
    mean, var = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    scores = phi(h, mean, var)
    assert scores.tolist() == [[[0.0, 0.0], [4.0, 0.0]]]
    tau = moving_threshold(scores, torch.tensor([0.25]), torch.tensor([float("nan")]))
    assert tau.item() == 4.0  # the top quarter of the 4 pairs: the one spike
    assert moving_threshold(scores, torch.tensor([0.25]), torch.tensor([2.0])).item() == pytest.approx(2.2)
    pen = inhibition_penalty(h, mean, scores, tau)
    assert pen.item() == pytest.approx(math.log(4.0) / 2)  # log((2 − 0)²) over a batch of 2
    # Per instance: the ceil(frac·n)-th largest score, at each instance's own fraction (ties kept).
    two = torch.tensor([[[5.0, 1.0], [3.0, 3.0]], [[0.0, 7.0], [2.0, 6.0]]])
    taus = moving_threshold(two, torch.tensor([0.5, 0.7]), torch.tensor([float("nan")] * 2))
    assert taus.tolist() == [3.0, 2.0]  # instance 0: 2nd of 5,3,3,1; instance 1: 3rd of 7,6,2,0


def test_inhibition_trains_batched_like_alone_and_changes_the_model():
    world = generate_world(WORLD)
    insts = [instance(seed=0, inhibit=0.0), instance(seed=0, lr=0.02, inhibit=0.05, inhibit_frac=0.1)]
    together = batched_run(world, insts)
    alone = batched_run(world, [insts[1]])
    torch.testing.assert_close(together.model.W1[1], alone.model.W1[0], rtol=1e-5, atol=1e-6)
    plain = batched_run(world, [instance(seed=0, lr=0.02)])
    assert not torch.allclose(alone.model.W1[0], plain.model.W1[0])


def test_a_run_resumed_from_a_checkpoint_ends_bit_identical_to_an_uninterrupted_one():
    """Every piece of state survives: weights, LAMB moments, Welford statistics, inhibition threshold,
    partial loss average, curve points, and the data and noise generators."""
    import lightning.pytorch as L

    from monosem.training.loop import Checkpointer

    world = generate_world(WORLD)
    insts = [instance(seed=0, steps=96, noise_std=0.1, inhibit=0.05), instance(seed=1, steps=96, lr=0.02)]
    whole = batched_run(world, insts)

    saved = {}

    class Interrupt(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if module.done >= 48:
                raise RuntimeError("interrupted")

    first = ToyStudyModule(world, insts)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(first, callbacks=[Checkpointer(32, lambda step, t, m: saved.update({step: (t, m)})), Interrupt()],
            progress=False)
    assert sorted(saved) == [32]
    resumed = ToyStudyModule(world, insts)
    resumed.restore(*saved[32])
    assert resumed.start_step == 32
    fit(resumed, progress=False)
    for name in ("W1", "b1", "W2"):
        assert torch.equal(getattr(resumed.model, name), getattr(whole.model, name)), name
    for name in ("act_mean", "act_m2", "act_count", "inhibit_tau"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.curves.steps == whole.curves.steps
    for k in whole.curves.values:
        assert torch.equal(torch.stack(resumed.curves.values[k]), torch.stack(whole.curves.values[k])), k


def test_importing_monosem_flushes_subnormals_on_every_thread_of_the_pool():
    """The flag is per thread and copied to threads when the pool starts: set later (as `fit` once did), only
    the calling thread flushes and results can vary from run to run. Fresh process, two threads."""
    import subprocess
    import sys

    code = ("import torch, monosem; torch.set_num_threads(2); x = torch.full((1 << 20,), 1e-39); "
            "y = x * 1.0; print(int((y != 0).sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"


@pytest.mark.parametrize("signed", [False, True])
def test_the_fused_sampler_gives_torchs_features_bit_for_bit(signed):
    from monosem.training.sample_kernel import masked_ratio, signed_masked_ratio
    from monosem.worlds import features_from_uniforms

    gen = torch.Generator().manual_seed(0)
    u = torch.rand((3, 2, 50, 7) if signed else (3, 50, 7), generator=gen)  # (seed, [2,] batch, N)
    probs = torch.tensor([[0.0, 1.0, 0.5, 0.3, 0.01, 0.9, 0.25], [0.1] * 7])  # (dens, N): a feature never and always on
    out = torch.full((2, 3, 50, 7), float("nan"))
    (signed_masked_ratio if signed else masked_ratio)(u.numpy(), probs.numpy(), out.numpy())
    expected = features_from_uniforms(u.unsqueeze(0), probs.unsqueeze(1), signed)
    assert torch.equal(out, expected) and (out[0, ..., 0] == 0).all() and (out[0, ..., 1] != 0).any()
