"""Hardening, fast parts: every params key refused with one line by a real stage entry point; artifacts
that are not ours (truncated, wrong shapes, pickles) refused without being executed."""

import ast
import copy
import importlib.util
import math
import pickle
import sys
import types
import typing
from pathlib import Path

import pytest
import torch
import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel

from monosem.config import (
    DataCfg,
    Defaults,
    ModelCfg,
    Params,
    Runtime,
    SaeStudy,
    SaeTrain,
    Study,
    Tracking,
    TrainCfg,
    World,
)
from monosem.errors import ArtifactError
from monosem.store.artifacts import load_tensors, load_world, save_tensors, save_world
from monosem.worlds import generate_world

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "tiny_params.yaml").read_text())

# Where each params model lives in the tiny params file.
SECTIONS = {World: "worlds.tiny", DataCfg: "studies.LR1.data", ModelCfg: "studies.LR1.model",
            TrainCfg: "studies.LR1.train", Study: "studies.LR1", SaeStudy: "saes.SAE1", SaeTrain: "saes.SAE1.train",
            Tracking: "tracking", Runtime: "runtime", Defaults: "defaults", Params: ""}


def _wrong_type(annotation):
    """A value no field of this annotation accepts: a string for containers and sections, a mapping for scalars."""
    section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return "abc" if section or typing.get_origin(annotation) in (dict, list) else {"nested": 1}


def _out_of_range(field):
    for m in field.metadata:
        if isinstance(m, Ge):
            yield "below minimum", m.ge - 1
        elif isinstance(m, Gt):
            yield "at exclusive minimum", m.gt
        elif isinstance(m, Le):
            yield "above maximum", m.le + 1
        elif isinstance(m, Lt):
            yield "at exclusive maximum", m.lt
        elif isinstance(m, MinLen):
            yield "too short", "" if field.annotation is str else ([] if typing.get_origin(field.annotation) is list else {})


def _holding(annotation, value):
    """A value of `annotation`'s shape with `value` in place of each float it holds (None: it holds none)."""
    if annotation is float:
        return value
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is list and _holding(args[0], value) is not None:
        return [_holding(args[0], value)]
    if origin is dict and _holding(args[1], value) is not None:
        key = typing.get_args(args[0])[0] if typing.get_origin(args[0]) is typing.Literal else "a"
        return {key: _holding(args[1], value)}
    if origin in (typing.Union, types.UnionType):
        return next((h for a in args if (h := _holding(a, value)) is not None), None)
    return None


def _models_in(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _sections(model=Params):
    """Every params model reachable from Params."""
    yield model
    for field in model.model_fields.values():
        for sub in _models_in(field.annotation):
            yield from _sections(sub)


def bad_cases():
    """(id, dotted path, value): for every key of every section, a wrong type and each bound broken, and an
    unknown key in every section. Generated from the schema, so a new key is covered when it is added."""
    for model, prefix in SECTIONS.items():
        at = (lambda key: f"{prefix}.{key}") if prefix else (lambda key: key)
        yield f"{at('no_such_key')}: unknown", at("no_such_key"), 1
        for name, field in model.model_fields.items():
            yield f"{at(name)}: wrong type", at(name), _wrong_type(field.annotation)
            for what, value in _out_of_range(field):
                yield f"{at(name)}: {what}", at(name), value
            for what, bad in (("inf", math.inf), ("-inf", -math.inf), ("nan", math.nan)):
                if (value := _holding(field.annotation, bad)) is not None:
                    yield f"{at(name)}: {what}", at(name), value
    yield "studies.LR1.sweep: inf among a sweep's values", "studies.LR1.sweep", {"train.lr": [0.01, math.inf]}


CASES = list(bad_cases())


def edited(path: str, value):
    raw = copy.deepcopy(TINY)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return raw


def _stage(name: str):
    """A pipeline entry point, imported as DVC runs it (pipeline/ on sys.path)."""
    sys.path.insert(0, str(ROOT / "pipeline"))
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "pipeline" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_stage():
    return _stage("train")


def run_train(stage, params: dict, study: str, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    """The train entry point as DVC runs it, in tmp_path with `params`: (exit code, stderr)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(sys, "argv", ["train.py", study])
    with pytest.raises(SystemExit) as exit_:
        stage.run(stage.main)
    return exit_.value.code, capsys.readouterr().err.strip()


def test_the_table_covers_every_key_of_every_section():
    assert set(_sections()) == set(SECTIONS)
    keys = {path for _, path, _ in CASES}
    for model, prefix in SECTIONS.items():
        for name in model.model_fields:
            assert (f"{prefix}.{name}" if prefix else name) in keys
    assert len(CASES) > 60


@pytest.mark.parametrize("path,value", [(p, v) for _, p, v in CASES], ids=[i for i, _, _ in CASES])
def test_every_bad_param_stops_the_stage_with_one_line_naming_the_key_and_touches_no_store(
        path, value, train_stage, tmp_path, monkeypatch, capsys):
    code, err = run_train(train_stage, edited(path, value), "LR1", tmp_path, monkeypatch, capsys)
    assert code == 2
    assert "\n" not in err and err.startswith("error: params.yaml: ")
    assert path in err, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "models").exists()


def test_a_stage_for_an_unknown_study_names_the_allowed_ones(train_stage, tmp_path, monkeypatch, capsys):
    code, err = run_train(train_stage, TINY, "LR9", tmp_path, monkeypatch, capsys)
    assert code == 2 and "studies.LR9: no such study; allowed: ['K1', 'LR1'" in err


# --- artifacts ------------------------------------------------------------------------------------

def test_a_truncated_weights_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"W1": torch.ones(16, 4)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"w.safetensors: not a valid safetensors file"):
        load_tensors(path)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_a_pickle_is_refused_and_never_executed(tmp_path):
    _Payload.marker = str(tmp_path / "pwned")
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"W1": _Payload()}))
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        load_tensors(path)
    torch.save({"W1": torch.ones(2)}, tmp_path / "torch.pt")  # torch's own (zip) format is refused too
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        load_tensors(tmp_path / "torch.pt")
    assert not (tmp_path / "pwned").exists()


def test_a_world_with_wrong_shapes_is_refused_naming_the_tensor(tmp_path):
    world = generate_world(World(n_features=8, d_embed=4, eps=0.25, n_eval=16))
    save_world(world, tmp_path)
    assert torch.equal(load_world(tmp_path).P, world.P)
    save_tensors(tmp_path / "world.safetensors", {"P": world.P.T.contiguous(), "probs": world.probs,
                                                  "eval_f": world.eval_f})
    with pytest.raises(ArtifactError, match=r"tensor 'P' has shape \(8, 4\), expected \(4, 8\)"):
        load_world(tmp_path)


def test_model_weights_with_wrong_shapes_are_refused_before_use(tmp_path, monkeypatch):
    common = _stage("common")
    world = generate_world(World(n_features=8, d_embed=4, eps=0.25, n_eval=16))
    monkeypatch.chdir(tmp_path)
    k, label = 16, "lr=0.01,seed=0"
    good = {"W1": torch.zeros(k, 4), "b1": torch.zeros(k), "W2": torch.zeros(8, k), "act_mean": torch.zeros(k),
            "act_var": torch.ones(k)}
    manifest = {"instances": [{"label": label, "instance": {"model": {"neurons": k}}}]}
    save_tensors(common.model_dir("S") / "weights.safetensors", {f"{label}/{n}": t for n, t in good.items()})
    assert common.load_states("S", manifest, world)[0]["W2"].shape == (8, k)
    bad = good | {"W2": torch.zeros(4, k)}
    save_tensors(common.model_dir("S") / "weights.safetensors", {f"{label}/{n}": t for n, t in bad.items()})
    with pytest.raises(ArtifactError, match=r"'lr=0.01,seed=0/W2' has shape \(4, 16\), expected \(8, 16\)"):
        common.load_states("S", manifest, world)


def test_nothing_unpickles_untrusted_data():
    """torch.load only with weights_only=True; no pickle.load(s) anywhere in the project's code."""
    offenders = []
    for folder in ("src", "pipeline", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                if owner == "torch" and node.func.attr == "load":
                    safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                    if not safe:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if owner == "pickle" and node.func.attr in ("load", "loads"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_data_parallel_training_needs_a_batch_each_process_can_slice(train_stage, tmp_path, monkeypatch, capsys):
    code, err = run_train(train_stage, edited("runtime", {"devices": 3, "strategy": "ddp"}), "LR1", tmp_path,
                          monkeypatch, capsys)
    assert code == 2 and ("error: params.yaml: studies.LR1: batch_size 32 is not divisible by runtime.devices × "
                          "runtime.num_nodes = 3") in err
