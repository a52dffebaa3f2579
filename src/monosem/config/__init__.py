"""Typed, validated parameters: everything `params.yaml` may say, and nothing else.

A bad key, type or range is reported as one line naming the key, the value and what is allowed
(`ParamsError`), before any stage does work.

This layer is data only: it knows no model family and no SAE architecture. `parse_params` takes a `Registry`
that answers for them; `monosem.params` passes the registered ones (the toy families, the SAE registry).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from monosem.config.raw import inherited_from, lookup, where, with_defaults
from monosem.errors import ParamsError


class Registry(Protocol):
    """What params are checked against besides this schema: the registered model kinds (`family(kind)` has
    `check(model_cfg)`, `tms_world` and `tied`; it raises ValueError naming the allowed kinds) and SAE
    architectures (`architecture(name)` has `check_knob`; it raises KeyError naming the allowed ones)."""

    def family(self, kind: str) -> Any: ...

    def kinds(self) -> list[str]: ...

    def architecture(self, name: str) -> Any: ...


class _Strict(BaseModel):
    # allow_inf_nan=False: a float bound such as `gt=0` admits infinity, and NaN passes every comparison.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class World(_Strict):
    """A data-generating process (Jermyn et al. 2022, §2): N sparse features embedded into m dims."""

    n_features: int = Field(ge=1, description="N, the number of ground-truth features")
    d_embed: int = Field(ge=1, description="m, the dimension of x = P f")
    eps: float = Field(gt=0, le=1, description="feature density ε (mean of p_i)")
    distribution: Literal["uniform", "power_law"] = "uniform"
    task: Literal["decoder", "reprojector", "abs", "tms"] = "decoder"
    values: Literal["uniform", "signed_uniform", "gaussian"] = Field(
        default="uniform", description="a present feature's value: U[0,1), U[-1,1) or N(0,1) (tms task only)")
    importance_decay: float = Field(default=1.0, gt=0, le=1,
                                    description="feature i's loss weight I_i = decay^i, i = 0..N-1 (tms task only)")
    n_eval: int = Field(default=8192, ge=1, description="size of the held-out evaluation set")
    seed: int = Field(default=0, ge=0)
    embedder: Literal["shared", "per_seed"] = Field(
        default="shared", description="shared: one P (and Q) for every model; per_seed: each instance seed draws "
                                      "its own, as the authors drew a fresh P for every run")

    @model_validator(mode="after")
    def _tms_fields(self) -> World:
        if self.task == "tms" and self.d_embed != self.n_features:
            raise ValueError(f"the tms task feeds the features in directly (x = f): d_embed must equal "
                             f"n_features = {self.n_features}")
        if self.task != "tms" and self.d_embed > self.n_features:
            raise ValueError(f"d_embed = {self.d_embed} must be at most n_features = {self.n_features}: the embedder "
                             f"P (m × N) has orthonormal rows, at most N of them")
        if self.task != "tms" and (self.values != "uniform" or self.importance_decay != 1):
            raise ValueError("values and importance_decay apply to the tms task only")
        if self.task == "tms" and self.embedder != "shared":
            raise ValueError("the tms task has no embedder (x = f): embedder must be shared")
        return self


# Each study knob says, in its field's metadata, how it may vary: INSTANCE knobs may differ between instances
# trained side by side in one batched module; GROUP knobs may be swept, and instances that differ in one form
# separate shape groups; unmarked knobs are fixed per study (and part of the group key too).
INSTANCE, GROUP = {"knob": "instance"}, {"knob": "group"}


class DataCfg(_Strict):
    eps: float | None = Field(default=None, gt=0, le=1, json_schema_extra=INSTANCE,
                              description="feature density ε of this study's data; null: the world's")


class ModelCfg(_Strict):
    kind: str = Field(default="jermyn", description="a model family (monosem.toy.families): jermyn: act(W1 x + b1) "
                                                    "then W2; tms_relu: ReLU(WᵀWx + b); tms_hidden: ReLU(Wᵀ ReLU(Wx) "
                                                    "+ b); power: (WᵀWx)^power")
    neurons: int = Field(ge=1, json_schema_extra=GROUP, description="k, the width of the hidden layer (m in the TMS models)")
    activation: Literal["relu", "gelu", "solu"] = Field(default="relu", json_schema_extra=GROUP)
    power: int = Field(default=3, ge=1, le=15, json_schema_extra=GROUP, description="odd exponent k of the power model")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str, info: ValidationInfo) -> str:
        if info.context:  # parse_params' registry; a ModelCfg built in code is checked by _check_sweeps
            info.context.family(kind)
        return kind

    @model_validator(mode="after")
    def _kind_fields(self, info: ValidationInfo) -> ModelCfg:
        if info.context:
            info.context.family(self.kind).check(self)
        return self


class TrainCfg(_Strict):
    steps: int = Field(ge=2, json_schema_extra=GROUP)
    batch_size: int = Field(ge=1, json_schema_extra=GROUP)
    lr: float = Field(gt=0, json_schema_extra=INSTANCE)
    t_max: int = Field(default=512, ge=1, json_schema_extra=GROUP, description="cosine half-period, stepped every iteration")
    bias_offset: float = Field(default=0.0, ge=-100, le=100, json_schema_extra=INSTANCE)
    bias_decay: float = Field(default=0.0, ge=0, json_schema_extra=INSTANCE)
    l1: float = Field(default=0.0, ge=0, json_schema_extra=INSTANCE,
                      description="coefficient of the L1 penalty on hidden activations")
    l1_out: float = Field(default=0.0, ge=0, json_schema_extra=INSTANCE,
                          description="coefficient of the L1 penalty on output activations")
    noise_std: float = Field(default=0.0, ge=0, json_schema_extra=INSTANCE,
                             description="σ of Gaussian noise added to x during training")
    inhibit: float = Field(default=0.0, ge=0, json_schema_extra=INSTANCE,
                           description="coefficient of the L2E inhibition of monosemantic neurons")
    inhibit_frac: float = Field(default=0.02, gt=0, lt=1, json_schema_extra=INSTANCE,
                                description="share of (sample, neuron) pairs inhibited")
    log_points: int = Field(default=100, ge=1, json_schema_extra=GROUP, description="curve points besides the powers of two")
    optimizer: Literal["lamb", "adamw"] = Field(
        default="lamb", description="lamb: the paper's, cosine schedule; adamw: TMS's, constant learning rate")
    weight_decay: float = Field(default=0.0, ge=0, lt=1, json_schema_extra=INSTANCE,
                                description="AdamW's decoupled weight decay")

    @model_validator(mode="after")
    def _decay_keeps_bias_sign(self) -> TrainCfg:
        if self.bias_decay * self.lr >= 1:
            raise ValueError(f"bias_decay * lr = {self.bias_decay * self.lr:g} must be < 1 (b <- b (1 - decay lr))")
        if self.optimizer == "lamb" and self.weight_decay:
            raise ValueError("weight_decay applies to adamw only (the paper's LAMB has none)")
        return self


SECTIONS = {"data": DataCfg, "model": ModelCfg, "train": TrainCfg}


def knobs(kind: dict | None) -> tuple[str, ...]:
    """The study knobs ("section.name") whose field metadata is `kind` (INSTANCE, GROUP; None: unmarked)."""
    return tuple(f"{section}.{name}" for section, cls in SECTIONS.items() for name, f in cls.model_fields.items()
                 if (f.json_schema_extra or None) == kind)


PER_INSTANCE = knobs(INSTANCE)  # may differ between instances trained side by side in one batched module
SWEEPABLE = PER_INSTANCE + knobs(GROUP)  # may be swept; instances that differ in a GROUP knob train apart


def axis_keys(sweep_key: str) -> list[str]:
    """A sweep key names one parameter, or several joined by commas that are swept together (zipped), each
    value then being a list with one entry per parameter: `model.neurons,train.batch_size: [[16, 512], ...]`
    keeps B·k fixed across a width sweep, as the paper does."""
    return [k.strip() for k in sweep_key.split(",")]


def _assignments(sweep_key: str, value: Any) -> dict[str, Any]:
    keys = axis_keys(sweep_key)
    if len(keys) == 1:
        return {keys[0]: value}
    if not isinstance(value, (list, tuple)) or len(value) != len(keys):
        raise ValueError(f"a zipped sweep value must be a list of {len(keys)} values, one per key")
    return dict(zip(keys, value))


class Study(_Strict):
    """A set of models trained on one world: base settings, a sweep grid and seeds."""

    world: str
    data: DataCfg = DataCfg()
    model: ModelCfg
    train: TrainCfg
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(min_length=1)

    def axes(self) -> list[list[str]]:
        """The swept parameters, one list per sweep axis (a zipped axis names several)."""
        return [axis_keys(k) for k in self.sweep]

    def instances(self) -> list[Instance]:
        """Expand the sweep grid (cartesian product over axes) times the seeds."""
        out = []
        for values in itertools.product(*self.sweep.values()):
            point = {k: v for key, value in zip(self.sweep, values) for k, v in _assignments(key, value).items()}
            data, model, train = _apply(self, point)
            for seed in self.seeds:
                out.append(Instance(point=point, seed=seed, data=data, model=model, train=train))
        return out


class Instance(_Strict):
    point: dict[str, Any]
    seed: int
    data: DataCfg = DataCfg()
    model: ModelCfg
    train: TrainCfg

    @property
    def group_key(self) -> tuple:
        """Instances that agree on every knob but the per-instance ones (PER_INSTANCE: the feature density
        is drawn per instance from shared streams) train together: the values of all the others, in order."""
        return tuple(getattr(getattr(self, section), name) for section in ("model", "train")
                     for name, f in SECTIONS[section].model_fields.items() if f.json_schema_extra != INSTANCE)

    @property
    def point_label(self) -> str:
        return ",".join(f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                        for k, v in self.point.items()) or "base"

    @property
    def label(self) -> str:
        return f"{self.point_label},seed={self.seed}"

    def flat_params(self) -> dict[str, Any]:
        flat = {f"data.{k}": v for k, v in self.data.model_dump().items()}
        flat |= {f"model.{k}": v for k, v in self.model.model_dump().items()}
        flat |= {f"train.{k}": v for k, v in self.train.model_dump().items()}
        return flat | {"seed": self.seed}


def _apply(study: Study, point: dict[str, Any]) -> tuple[DataCfg, ModelCfg, TrainCfg]:
    sections = {"data": study.data.model_dump(), "model": study.model.model_dump(), "train": study.train.model_dump()}
    for key, value in point.items():
        section, name = key.split(".", 1)
        sections[section][name] = value
    return DataCfg(**sections["data"]), ModelCfg(**sections["model"]), TrainCfg(**sections["train"])


class SaeTrain(_Strict):
    steps: int = Field(ge=2)
    batch_size: int = Field(ge=1)
    lr: float = Field(default=1e-3, gt=0, description="Adam's learning rate, β2 = 0.999")
    beta1: float | None = Field(default=None, ge=0, lt=1, description="Adam's β1; default each architecture's own")
    b_dec_init: Literal["zero", "mean", "geometric_median"] | None = Field(
        default=None, description="b_dec's initial value from the data; default each architecture's own")
    lr_warmup_steps: int = Field(default=0, ge=0, description="the rate rises linearly from 0 over these steps")
    sparsity_warmup_steps: int = Field(default=0, ge=0, description="λ rises linearly from 0 over these steps")
    dead_after: int = Field(default=1000, ge=1, description="steps without firing after which a latent is dead")
    log_points: int = Field(default=20, ge=1, description="curve points besides the powers of two")


class SaeStudy(_Strict):
    """SAEs trained on one toy model's activations: its world's inputs x = P·f or its hidden layer."""

    study: str = Field(description="the toy study whose model supplies the activations")
    instance: str = Field(description="that model's label, e.g. 'lr=0.003,seed=0'")
    world: str = Field(description="the study's world (named here for DVC's dependency; checked)")
    layer: Literal["input", "hidden"] = Field(description="input: x = P·f; hidden: the model's hidden layer")
    latents: int = Field(ge=1, description="dictionary size m")
    architectures: dict[str, list[float]] = Field(
        min_length=1, description="each registered architecture's sweep of λ (k for those swept over k)")
    seeds: list[int] = Field(min_length=1)
    train: SaeTrain
    n_eval: int = Field(default=8192, ge=2, description="held-out activations the metrics use")


class Tracking(_Strict):
    experiment: str = Field(default="monosem", min_length=1)
    flush_seconds: float = Field(default=30.0, gt=0, description="how often live curves are sent to MLflow")


class Runtime(_Strict):
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    threads: int = Field(default=0, ge=0, description="torch intra-op threads; 0 = all cores")
    devices: int = Field(default=1, ge=1, description="devices (processes on the CPU) training one study, data parallel")
    strategy: str = Field(default="auto", min_length=1, description="Lightning strategy, e.g. ddp")
    num_nodes: int = Field(default=1, ge=1, description="machines training one study (ddp across nodes)")
    checkpoint_every: int = Field(default=0, ge=0, description="save a training checkpoint every this many steps; 0 = never")
    resume: bool = Field(default=False, description="continue from a checkpoint made by the same params and code")
    matmul_precision: Literal["highest", "high"] = Field(
        default="highest", description="training matmuls: highest = fp32; high = TF32 on GPUs that have it (metrics "
                                       "are always computed in fp32)")
    cuda_graphs: bool = Field(default=False, description="replay each training step as one captured CUDA graph "
                                                         "(GPU, one process, the paper's decoder)")


class Defaults(_Strict):
    """What every entry of a section has unless it says otherwise, merged under it key by key (`with_defaults`)."""

    worlds: dict[str, Any] = Field(default_factory=dict)
    studies: dict[str, Any] = Field(default_factory=dict)
    saes: dict[str, Any] = Field(default_factory=dict)


class Params(_Strict):
    defaults: Defaults = Defaults()
    worlds: dict[str, World] = Field(min_length=1)
    studies: dict[str, Study] = Field(default_factory=dict)
    saes: dict[str, SaeStudy] = Field(default_factory=dict)
    tracking: Tracking = Tracking()
    runtime: Runtime = Runtime()


def _check_sweeps(params: Params, registry: Registry) -> None:
    for name, study in params.studies.items():
        if study.world not in params.worlds:
            raise ParamsError(f"studies.{name}.world = {study.world!r}: no such world; "
                              f"allowed: {sorted(params.worlds)}")
        tms_world = params.worlds[study.world].task == "tms"
        fam = registry.family(study.model.kind)
        if fam.tms_world != tms_world:
            tms_kinds = [kind for kind in registry.kinds() if registry.family(kind).tms_world]
            raise ParamsError(f"studies.{name}.model.kind = {study.model.kind!r}: world {study.world!r} has task "
                              f"{params.worlds[study.world].task!r}; kinds {tms_kinds} train on tms worlds, "
                              f"jermyn on the others")
        swept = [k for key in study.sweep for k in axis_keys(key)]
        for key, values in study.sweep.items():
            where = f"studies.{name}.sweep.{key}"
            for k in axis_keys(key):
                if k not in SWEEPABLE:
                    raise ParamsError(f"{where}: cannot sweep {k!r}; allowed: {list(SWEEPABLE)}")
                if swept.count(k) > 1:
                    raise ParamsError(f"{where}: {k!r} is swept more than once")
            if not values:
                raise ParamsError(f"{where} = []: a sweep needs at least one value")
            for i, value in enumerate(values):
                try:
                    fam.check(_apply(study, _assignments(key, value))[1])
                except ValueError as err:  # pydantic's ValidationError is a ValueError
                    msg = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
                    raise ParamsError(f"{where}[{i}] = {value!r}: {msg}") from None
        if len(set(study.seeds)) != len(study.seeds):
            raise ParamsError(f"studies.{name}.seeds = {study.seeds}: seeds must be distinct")
        labels = [inst.label for inst in study.instances()]
        if len(set(labels)) != len(labels):
            raise ParamsError(f"studies.{name}.sweep: repeated sweep values give duplicate instances")
        if fam.tied and any(i.train.bias_offset or i.train.bias_decay for i in study.instances()):
            raise ParamsError(f"studies.{name}.train: bias_offset and bias_decay apply to kind jermyn only")


def _check_saes(params: Params, registry: Registry) -> None:
    if "saes" in params.studies:
        raise ParamsError("studies.saes: the name 'saes' is reserved (models/saes and results/saes hold the SAEs)")
    for name, sae in params.saes.items():
        where = f"saes.{name}"
        if sae.study not in params.studies:
            raise ParamsError(f"{where}.study = {sae.study!r}: no such study; allowed: {sorted(params.studies)}")
        study = params.studies[sae.study]
        if sae.world != study.world:
            raise ParamsError(f"{where}.world = {sae.world!r}: study {sae.study!r} trains on world {study.world!r}")
        labels = [i.label for i in study.instances()]
        if sae.instance not in labels:
            raise ParamsError(f"{where}.instance = {sae.instance!r}: no such model in study {sae.study!r}; "
                              f"allowed: {labels}")
        for arch, values in sae.architectures.items():
            at = f"{where}.architectures.{arch}"
            try:
                cls = registry.architecture(arch)
            except KeyError as e:
                raise ParamsError(f"{at}: {e.args[0]}") from None
            if not values:
                raise ParamsError(f"{at} = []: a sweep needs at least one value")
            if len(set(values)) != len(values):
                raise ParamsError(f"{at} = {values}: values must be distinct")
            for i, v in enumerate(values):
                if (problem := cls.check_knob(v, sae.latents)) is not None:
                    raise ParamsError(f"{at}[{i}] = {problem}")
        if len(set(sae.seeds)) != len(sae.seeds):
            raise ParamsError(f"{where}.seeds = {sae.seeds}: seeds must be distinct")


def parse_params(raw: Any, source: str, registry: Registry) -> Params:
    """Validate a params mapping (its defaults merged in) against this schema and the registry's kinds and
    architectures; raise `ParamsError` with one line for the first problem."""
    merged = with_defaults(raw)
    try:
        params = Params.model_validate(merged, context=registry)
    except ValidationError as err:
        e = err.errors()[0]
        loc = e["loc"]
        allowed = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = "unknown key"
        elif e["type"] == "missing":
            allowed = "required key is missing"
        value = lookup(merged, loc)
        shown = "" if e["type"] == "missing" else f" = {value!r}"
        raise ParamsError(f"{source}: {where(loc)}{shown}{inherited_from(raw, loc)}: {allowed}") from None
    try:
        _check_sweeps(params, registry)
        _check_saes(params, registry)
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None
    return params


def read_yaml(path: str | Path) -> Any:
    """A params file's mapping, or one line saying why it cannot be read."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
