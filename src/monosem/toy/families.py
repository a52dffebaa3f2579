"""Model families: what the stages need to know about a model kind (`ModelCfg.kind`), in one place per kind.

A family says which worlds it trains on and which knobs apply to it, builds its batched module, names the
tensors an instance saves, measures a group of its trained instances, and lists the metrics its reports show
and the figures `interpret` draws for it. Stages ask `family(kind)`; none compares kind strings.

- `jermyn`: the paper's decoder, act(W1 x + b1) then W2 (Jermyn et al. 2022, Eqs. 4–6);
- `tms_relu`, `tms_hidden`: Elhage et al.'s tied models of superposition (ReLU output; privileged basis);
- `power`: the power-activation autoencoder of the loss bounds (Basu Roy Chowdhury & Weiner).

A new kind is one file: a `Family` subclass and `register(MyFamily())`. Outside this package, name its
module in `MONOSEM_PLUGINS` (comma-separated module names on the Python path): it is imported with this
module, in every stage. Imports of torch and the library's heavy modules happen inside the methods: `config`
imports this module.
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple


class Metric(NamedTuple):
    """A measured quantity: its key in measured.json, its column label and digits in the report, and when the
    report shows it ("table": always; "noise": in studies trained with input noise; None: never, summarised
    only)."""

    key: str
    label: str
    digits: int
    shown: str | None = "table"


class Family:
    kinds: tuple[str, ...] = ()
    tied = False  # a tied model (W and an output bias b): no hidden bias, so no bias trick
    tms_world = False  # trains on `task: tms` worlds (else on the paper's tasks)
    activation = False  # ModelCfg.activation applies
    paper_neurons = False  # its neurons are the paper's: the mechanism claims read their interpret summaries
    metrics: tuple[Metric, ...] = ()  # summarised per sweep point by measure, in this order
    dvc_metrics: tuple[tuple[str, ...], tuple[str, ...], str] = ((), (), "")  # summary.compact's (spread, counts, headline)
    shown: tuple[str, str] = ("loss", "loss")  # the metric measure prints per point, and its label
    figures: frozenset[str] = frozenset()  # the study figures interpret draws (interpret.py names them)

    def check(self, cfg) -> None:
        """Raise ValueError for a ModelCfg this family cannot train."""
        if not self.activation and cfg.activation != "relu":
            raise ValueError(f"activation applies to kind jermyn only; {cfg.kind}'s nonlinearity is fixed")

    def act_label(self, cfg) -> str:
        """The report's "act" column."""
        return cfg.kind

    def describe(self, cfg) -> str:
        """The model in a report section's first line."""
        return f"{cfg.kind}, m = {cfg.neurons}"

    def label(self, key: str) -> str:
        """A metric's label (its key where the table has none)."""
        return next((m.label for m in self.metrics if m.key == key), key)

    def summarised(self, row: dict) -> tuple[str, ...]:
        """The keys measure summarises over seeds, given one measured row."""
        return tuple(m.key for m in self.metrics)

    def columns(self, noisy: bool = False) -> list[Metric]:
        """The report's columns for a study of this family."""
        return [m for m in self.metrics if m.shown == "table" or (noisy and m.shown == "noise")]

    def row_extras(self, world, cfg) -> dict:
        """Values measure adds to each instance's row besides its metrics."""
        return {}


class Decoder(Family):
    """The paper's model: h = act(W1 x + b1), y = W2 h, no output bias (Jermyn et al. 2022, §2)."""

    kinds = ("jermyn",)
    activation = paper_neurons = True
    metrics = (Metric("loss", "eval loss", 4), Metric("mono_per_feature", "#mono/#features", 3),
               Metric("mono_per_neuron", "#mono/#neurons", 3), Metric("features_covered", "features covered", 3),
               Metric("mono_per_feature_at_0.99", "#mono/#features at 0.99", 3),
               Metric("mono_scale_vs_frac_mono_spearman", "ρ(mono scale, frac_mono)", 3, None),
               Metric("n_dead", "dead", 1), Metric("bias_mean_mono", "bias mono", 3),
               Metric("bias_mean_poly", "bias poly", 3), Metric("bias_mean_live", "bias live", 3),
               Metric("n_bias_positive", "bias > 0", 1, None),
               Metric("noise_change_mono", "noise Δh/h mono", 3, "noise"),
               Metric("noise_change_poly", "noise Δh/h poly", 3, "noise"))
    dvc_metrics = (("mono_per_feature", "mono_per_neuron", "loss"), ("n_dead", "diverged"), "mono_per_feature")
    shown = ("mono_per_feature", "#mono/#features")

    def act_label(self, cfg) -> str:
        return cfg.activation

    def describe(self, cfg) -> str:
        return f"k = {cfg.neurons} {cfg.activation}"

    def build(self, n_inst: int, cfg, d_in: int, d_out: int):
        from monosem.toy.models import ToyModels

        return ToyModels(n_inst, d_in, cfg.neurons, d_out, cfg.activation)

    def from_states(self, states: list[dict], cfg):
        from monosem.toy.models import ToyModels

        return ToyModels.from_states(states, cfg.activation)

    def weight_shapes(self, k: int, n: int, d_embed: int, d_out: int) -> dict[str, tuple[int, ...]]:
        return {"W1": (k, d_embed), "b1": (k,), "W2": (d_out, k)}

    def measure(self, model, world, eval_x, eval_target, states, members, instances, cfg) -> tuple[dict, None]:
        """The paper's metrics, the monosemantic scale and the noise response of one density group."""
        import torch

        from monosem.analysis.metrics import (
            frac_mono,
            measure,
            monosemantic_scale,
            noise_activation_change,
            single_feature_activations,
            spearman,
        )
        from monosem.worlds import generator

        values = measure(model, world.probes, eval_x, eval_target)
        h = model.hidden(eval_x.expand(len(members), *eval_x.shape))  # (inst, samples, k)
        ms = torch.stack([monosemantic_scale(h[j], states[i]["act_mean"], states[i]["act_var"])
                          for j, i in enumerate(members)])  # one instance at a time: bounded memory
        fm = frac_mono(single_feature_activations(model, world.probes))
        values["mono_scale_mean"] = ms.mean(-1)
        values["mono_scale_vs_frac_mono_spearman"] = torch.tensor([spearman(ms[j], fm[j]) for j in range(len(members))],
                                                                   device=eval_x.device)
        # Eval-time noise at each model's own training σ; the same draw for every model of the study.
        sigma = torch.tensor([instances[i].train.noise_std for i in members], device=eval_x.device)
        values |= noise_activation_change(model, world.probes, eval_x, sigma, generator(world.cfg.seed, "eval-noise"))
        return values, None


TIED_METRICS = (Metric("loss", "eval loss", 4), Metric("features_learned", "‖W‖²_F", 2),
                Metric("dims_per_feature", "D* = m/‖W‖²_F", 3), Metric("sum_dimensionality", "Σ D_i", 2),
                Metric("n_represented", "represented", 1), Metric("mean_superposition", "superposition", 3),
                Metric("bias_mean", "mean b", 3))
NEURON_METRICS = (Metric("mono_per_neuron", "#mono/#neurons", 3), Metric("lecomte_poly", "Lecomte poly", 1),
                  Metric("weight_share_mean", "weight share", 3))


class Tied(Family):
    """Elhage et al.'s tied models: x' = act(WᵀWx + b) (models.TiedModels), trained on tms worlds."""

    tied = tms_world = True
    shown = ("dims_per_feature", "D*")

    def build(self, n_inst: int, cfg, d_in: int, d_out: int):
        from monosem.toy.models import TiedModels

        return TiedModels(n_inst, d_in, cfg.neurons, cfg.kind, cfg.power)

    def from_states(self, states: list[dict], cfg):
        from monosem.toy.models import TiedModels

        return TiedModels.from_states(states, cfg.kind, cfg.power)

    def weight_shapes(self, k: int, n: int, d_embed: int, d_out: int) -> dict[str, tuple[int, ...]]:
        return {"W": (k, n), "b": (n,)}  # W (m, n), output bias b (n,)

    def measure(self, model, world, eval_x, eval_target, states, members, instances, cfg) -> tuple[dict, dict]:
        from monosem.analysis.superposition import measure_tied

        return measure_tied(model, eval_x, world.importance)

    def row_extras(self, world, cfg) -> dict:
        return {"density": world.cfg.eps, "neurons": cfg.neurons}


class TmsRelu(Tied):
    """TMS' "ReLU output" model: x' = ReLU(WᵀWx + b)."""

    kinds = ("tms_relu",)
    metrics = TIED_METRICS + (Metric("gain", "gain L̃", 4, None), Metric("n_mono", "mono", 1, None),
                              *(m._replace(shown=None) for m in NEURON_METRICS))
    dvc_metrics = (("dims_per_feature", "loss"), ("n_represented", "diverged"), "dims_per_feature")
    figures = frozenset({"matrices", "dims"})


class TmsHidden(Tied):
    """TMS' privileged basis: h = ReLU(Wx), x' = ReLU(Wᵀh + b); its hidden units are neurons."""

    kinds = ("tms_hidden",)
    metrics = TIED_METRICS + NEURON_METRICS + (Metric("gain", "gain L̃", 4, None), Metric("n_mono", "mono", 1, None))
    dvc_metrics = (("mono_per_neuron", "dims_per_feature", "loss"), ("diverged",), "mono_per_neuron")
    figures = frozenset({"matrices", "neurons"})


class Power(Tied):
    """The loss bounds' autoencoder: x' = (WᵀWx)^k elementwise, odd k, no bias."""

    kinds = ("power",)
    metrics = TIED_METRICS + (Metric("n_mono", "mono", 1, None), *(m._replace(shown=None) for m in NEURON_METRICS),
                              Metric("gain", "gain L̃", 4))
    dvc_metrics = (("gain", "loss"), ("diverged",), "gain")
    figures = frozenset({"dims", "bounds"})
    GAIN_LABELS = {"gain_linear": ("linear", 4), "gain_unsuperposed": ("unsuperposed", 4), "gain_total": ("pnμ₂", 4)}

    def check(self, cfg) -> None:
        super().check(cfg)
        if cfg.power % 2 == 0:
            raise ValueError(f"power = {cfg.power}: the bounds need an odd power")

    def measure(self, model, world, eval_x, eval_target, states, members, instances, cfg) -> tuple[dict, dict]:
        """measure_tied, plus the bounds' reference lines at this density and width."""
        import torch

        from monosem.analysis.theory import gain_references

        values, per_feature = super().measure(model, world, eval_x, eval_target, states, members, instances, cfg)
        refs = gain_references(world.cfg.eps, world.cfg.n_features, cfg.neurons, cfg.power, world.cfg.values)
        return values | {f"gain_{k}": torch.full((len(members),), v, device=eval_x.device) for k, v in refs.items()}, per_feature

    def row_extras(self, world, cfg) -> dict:
        return super().row_extras(world, cfg) | {"power": cfg.power}

    def describe(self, cfg) -> str:
        return f"{super().describe(cfg)}, k = {cfg.power}"

    def summarised(self, row: dict) -> tuple[str, ...]:
        return super().summarised(row) + tuple(k for k in row if k.startswith("gain_"))

    def columns(self, noisy: bool = False) -> list[Metric]:
        return super().columns(noisy) + [Metric(k, *self.GAIN_LABELS[k]) for k in self.GAIN_LABELS]


FAMILIES: dict[str, Family] = {}


def register(fam: Family) -> Family:
    """Make a family's kinds valid `model.kind` values (one line per family)."""
    for kind in fam.kinds:
        FAMILIES[kind] = fam
    return fam


for _fam in (Decoder(), TmsRelu(), TmsHidden(), Power()):
    register(_fam)


for _plugin in filter(None, (m.strip() for m in os.environ.get("MONOSEM_PLUGINS", "").split(","))):
    try:
        importlib.import_module(_plugin)  # registers its families (and SAE architectures)
    except ImportError as err:
        raise ImportError(f"MONOSEM_PLUGINS names {_plugin!r}, which cannot be imported (is its folder on "
                          f"PYTHONPATH?): {err}") from err


def family(kind: str) -> Family:
    try:
        return FAMILIES[kind]
    except KeyError:
        raise ValueError(f"model kind {kind!r}: allowed {sorted(FAMILIES)}") from None


def build_models(n_inst: int, model_cfg, d_in: int, d_out: int):
    """The batched module of a study's model kind (config.ModelCfg; its family builds it)."""
    return family(model_cfg.kind).build(n_inst, model_cfg, d_in, d_out)


def models_from_states(states: list[dict], model_cfg):
    """A kind's batched module holding the given instances' saved tensors."""
    return family(model_cfg.kind).from_states(states, model_cfg)
