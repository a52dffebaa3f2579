"""Bad params are refused before any work, with one line naming the key, the value and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from monosem.config import ParamsError
from monosem.params import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "tiny_params.yaml").read_text())


def edited(path: str, value):
    raw = copy.deepcopy(TINY)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


class _Delete:
    def __repr__(self):  # a stable test id (xdist workers must collect the same names)
        return "DELETE"


DELETE = _Delete()

BAD = [
    # (dotted path to edit, new value, words the error must contain)
    ("worlds.tiny.eps", 0.0, ["worlds.tiny.eps", "0.0", "greater than 0"]),
    ("worlds.tiny.eps", 1.5, ["worlds.tiny.eps", "1.5", "less than or equal to 1"]),
    ("worlds.tiny.eps", "dense", ["worlds.tiny.eps", "'dense'", "valid number"]),
    ("worlds.tiny.distribution", "zipf", ["worlds.tiny.distribution", "'zipf'", "'uniform' or 'power_law'"]),
    ("worlds.tiny.task", "sort", ["worlds.tiny.task", "'sort'", "'decoder', 'reprojector', 'abs' or 'tms'"]),
    ("worlds.tiny.n_features", 0, ["worlds.tiny.n_features", "0", "greater than or equal to 1"]),
    ("worlds.tiny.colour", "red", ["worlds.tiny.colour", "unknown key"]),
    ("worlds.tiny.d_embed", DELETE, ["worlds.tiny.d_embed", "required"]),
    ("studies.LR1.model.neurons", 0, ["studies.LR1.model.neurons", "0", "greater than or equal to 1"]),
    ("studies.LR1.model.activation", "tanh", ["studies.LR1.model.activation", "'tanh'", "'relu', 'gelu' or 'solu'"]),
    ("studies.LR1.train.lr", -0.1, ["studies.LR1.train.lr", "-0.1", "greater than 0"]),
    ("studies.LR1.train.steps", 1.5, ["studies.LR1.train.steps", "1.5", "integer"]),
    ("studies.LR1.train.noise_std", -0.1, ["studies.LR1.train.noise_std", "-0.1", "greater than or equal to 0"]),
    ("studies.LR1.train.l1_out", "a lot", ["studies.LR1.train.l1_out", "'a lot'", "valid number"]),
    ("studies.LR1.train.inhibit_frac", 1.0, ["studies.LR1.train.inhibit_frac", "1.0", "less than 1"]),
    ("studies.LR1.train.bias_decay", 1000.0, ["studies.LR1.train", "bias_decay * lr", "< 1"]),
    ("studies.LR1.seeds", [], ["studies.LR1.seeds", "at least 1"]),
    ("studies.LR1.seeds", [1, 1], ["studies.LR1.seeds", "distinct"]),
    ("studies.LR1.world", "mars", ["studies.LR1.world", "'mars'", "no such world", "tiny"]),
    ("studies.LR1.sweep", {"train.momentum": [0.9]}, ["studies.LR1.sweep.train.momentum", "cannot sweep", "train.lr"]),
    ("studies.LR1.sweep", {"train.lr": [0.01, -1]}, ["studies.LR1.sweep.train.lr[1]", "-1", "greater than 0"]),
    ("studies.LR1.sweep", {"model.activation": ["relu", "swish"]}, ["model.activation[1]", "'swish'", "'relu', 'gelu'"]),
    ("studies.LR1.sweep", {"train.lr": []}, ["studies.LR1.sweep.train.lr", "at least one value"]),
    ("studies.LR1.data", {"eps": 0}, ["studies.LR1.data.eps", "0", "greater than 0"]),
    ("studies.LR1.sweep", {"data.eps": [0.1, 2.0]}, ["studies.LR1.sweep.data.eps[1]", "2.0", "less than or equal to 1"]),
    ("studies.LR1.sweep", {"model.neurons,train.batch_size": [[16, 32], [32]]},
     ["studies.LR1.sweep.model.neurons,train.batch_size[1]", "[32]", "list of 2 values"]),
    ("studies.LR1.sweep", {"model.neurons,train.batch_size": [[16, 0]]}, ["train.batch_size[0]", "greater than or equal to 1"]),
    ("studies.LR1.sweep", {"model.neurons,train.gamma": [[16, 1]]}, ["cannot sweep 'train.gamma'"]),
    ("studies.LR1.sweep", {"train.lr": [0.1], "train.lr,train.l1": [[0.1, 0.0]]}, ["'train.lr' is swept more than once"]),
    ("runtime", {"accelerator": "tpu"}, ["runtime.accelerator", "'tpu'", "'cpu', 'gpu' or 'auto'"]),
    ("tracking", {"experiment": ""}, ["tracking.experiment", "at least 1 character"]),
]


@pytest.mark.parametrize("path,value,words", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_param_is_one_line_naming_key_value_and_allowed(path, value, words):
    with pytest.raises(ParamsError) as err:
        parse_params(edited(path, value))
    msg = str(err.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


def test_tiny_and_default_params_are_valid():
    assert parse_params(TINY).studies["LR1"].instances()[0].label == "lr=0.003,seed=0"
    params = load_params(ROOT / "params.yaml")
    # The paper's studies are judged over 3 seeds; tied models (TMS) keep the lowest-loss restart per point.
    assert all(len(s.seeds) >= 3 for s in params.studies.values() if s.model.kind == "jermyn")
    assert {s.model.kind for s in params.studies.values()} == {"jermyn", "tms_relu", "tms_hidden", "power"}


def test_sweep_is_a_grid_times_seeds_with_seed_fastest():
    raw = edited("studies.LR1.sweep", {"train.lr": [0.1, 0.2], "train.l1": [0.0, 0.5]})
    raw["saes"] = {}  # SAE1 names an LR1 model this sweep no longer has
    insts = parse_params(raw).studies["LR1"].instances()
    assert len(insts) == 2 * 2 * 2
    assert [i.seed for i in insts[:4]] == [0, 1, 0, 1]
    assert insts[2].train.lr == 0.1 and insts[2].train.l1 == 0.5 and insts[2].point_label == "lr=0.1,l1=0.5"


def test_zipped_sweep_moves_its_keys_together_and_crosses_the_other_axes():
    raw = edited("studies.LR1.sweep", {"model.neurons,train.batch_size": [[16, 64], [32, 32]], "data.eps": [0.1, 0.2]})
    raw["saes"] = {}  # SAE1 names an LR1 model this sweep no longer has
    study = parse_params(raw).studies["LR1"]
    insts = study.instances()
    assert study.axes() == [["model.neurons", "train.batch_size"], ["data.eps"]]
    assert len(insts) == 2 * 2 * 2
    assert [(i.model.neurons, i.train.batch_size, i.data.eps) for i in insts[::2]] == [
        (16, 64, 0.1), (16, 64, 0.2), (32, 32, 0.1), (32, 32, 0.2)]
    assert insts[0].point_label == "neurons=16,batch_size=64,eps=0.1"
    assert insts[0].group_key == insts[2].group_key  # densities train side by side in one module
    assert insts[0].group_key != insts[4].group_key  # another width is another module
    assert insts[0].flat_params()["data.eps"] == 0.1


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("worlds: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")


def test_paper_profile_has_the_papers_sizes_and_is_valid():
    params = load_params(ROOT / "profiles" / "paper.yaml")
    world = params.worlds["uniform"]
    assert (world.n_features, world.d_embed, world.eps) == (512, 64, 1 / 64)
    assert set(params.studies) >= {"LR1", "LR2", "LR3", "LR4", "B1", "B2", "B3", "B4", "B5", "G3", "E1", "E2", "E3",
                                   "E4", "K0", "K1", "K2", "RG1", "RP1", "LR5", "D1"}  # every batch of Table 1
    for name, study in params.studies.items():
        if study.model.kind != "jermyn":
            continue
        for inst in study.instances():
            t = inst.train
            assert (t.steps, t.t_max) == (2**17, 512)
            assert inst.model.neurons * t.batch_size == 2**23  # the authors keep B·k fixed
        assert len(study.seeds) >= 3
    for name in ("LR1", "LR2", "LR3", "LR4", "RP1", "LR5"):
        assert params.studies[name].sweep["train.lr"] == [0.001, 0.003, 0.005, 0.007, 0.01, 0.03]
    assert [i.model.neurons for i in params.studies["K1"].instances()[::3]] == [2**i for i in range(4, 12)]
    assert params.studies["E1"].sweep["data.eps"][0] == 0.5 and params.studies["B5"].data.eps == 1 / 256
    assert params.studies["LR3"].train.bias_decay == 0.03 and params.studies["LR3"].train.bias_offset == -1
    assert params.runtime.accelerator == "auto"
    tms = params.studies["TMS1"]  # TMS' notebook: AdamW lr 1e-3, batch 1024, 10,000 steps, n = 20, m = 5
    assert (tms.train.optimizer, tms.train.lr, tms.train.batch_size, tms.train.steps) == ("adamw", 0.001, 1024, 10000)
    assert (params.worlds[tms.world].n_features, tms.model.neurons) == (20, 5)
    assert (params.worlds[params.studies["TMS2"].world].n_features, params.studies["TMS2"].model.neurons) == (400, 30)
    bounds = params.studies["BOUNDS"]
    assert all(params.worlds[bounds.world].n_features > d ** 3 for d in bounds.sweep["model.neurons"])  # n > d^k
    # The default profile follows the scaling rule in params.yaml's header: the paper's per-step lr and T_max,
    # every bias decay the paper's x 10, B·k = 2^16 for every decoder study, N·ε = 8 at the base density.
    paper = params.studies
    default = load_params(ROOT / "params.yaml")
    for name, study in default.studies.items():
        if study.model.kind != "jermyn" or name.startswith("CAL"):
            continue
        assert study.train.t_max == 512 and study.train.steps == 2**12
        if name in paper and paper[name].train.bias_decay:
            assert study.train.bias_decay == pytest.approx(10 * paper[name].train.bias_decay), name
        for inst in study.instances():
            assert inst.model.neurons * inst.train.batch_size == 2**16, name
    world = default.worlds["uniform"]
    assert world.n_features * world.eps == 8 and world.n_features == 4 * world.d_embed


# Another valid value for every study knob: a knob added to DataCfg, ModelCfg or TrainCfg fails the test below
# until it is listed here, so its kind (INSTANCE, GROUP or fixed) is a decision, not an accident.
OTHER_VALUE = {"data.eps": 0.3, "model.kind": "tms_relu", "model.neurons": 9, "model.activation": "gelu",
               "model.power": 5, "train.steps": 99, "train.batch_size": 7, "train.lr": 0.02, "train.t_max": 9,
               "train.bias_offset": -1.0, "train.bias_decay": 0.5, "train.l1": 0.1, "train.l1_out": 0.1,
               "train.noise_std": 0.1, "train.inhibit": 0.1, "train.inhibit_frac": 0.1, "train.log_points": 9,
               "train.optimizer": "adamw", "train.weight_decay": 0.01}


def test_every_knob_either_varies_within_a_batched_module_or_splits_the_group():
    from monosem.config import GROUP, PER_INSTANCE, SECTIONS, SWEEPABLE, Instance, knobs

    every = [f"{s}.{n}" for s, cls in SECTIONS.items() for n in cls.model_fields]
    assert sorted(OTHER_VALUE) == sorted(every), "a new knob: list it in OTHER_VALUE and mark its kind"
    assert set(SWEEPABLE) == set(PER_INSTANCE) | set(knobs(GROUP)) and "model.kind" not in SWEEPABLE
    base = {"model": {"neurons": 4}, "train": {"steps": 10, "batch_size": 4, "lr": 0.01}}
    for key, value in OTHER_VALUE.items():
        section, name = key.split(".")
        changed = copy.deepcopy(base)
        changed.setdefault(section, {})[name] = value
        if key == "train.weight_decay":  # AdamW's only
            base_opt = copy.deepcopy(base)
            base_opt["train"]["optimizer"] = changed["train"]["optimizer"] = "adamw"
            a = Instance(point={}, seed=0, **base_opt)
        else:
            a = Instance(point={}, seed=0, **base)
        b = Instance(point={}, seed=0, **changed)
        assert (a.group_key == b.group_key) == (key in PER_INSTANCE), key


def test_defaults_fill_every_entry_key_by_key_and_the_entry_wins():
    raw = copy.deepcopy(TINY)
    lr1 = raw["studies"]["LR1"]
    raw["defaults"] = {"worlds": {}, "saes": {},
                       "studies": {"train": {"t_max": 64, "bias_decay": 0.5}, "seeds": [4, 5]}}
    lr1["train"]["bias_decay"] = 0.25
    lr1["train"].pop("t_max", None)
    study = parse_params(raw).studies["LR1"]
    assert study.train.t_max == 64  # filled in from defaults
    assert study.train.bias_decay == 0.25  # the study's own value wins, key by key
    assert study.train.lr == lr1["train"]["lr"]  # a mapping is merged, not replaced
    assert study.seeds == (lr1.get("seeds") or [4, 5])  # a list is replaced whole
    lr1.pop("seeds", None)
    raw.pop("saes")  # its model's label names seed 0
    assert parse_params(raw).studies["LR1"].seeds == [4, 5]


def test_a_bad_value_inherited_from_defaults_names_where_it_came_from():
    raw = copy.deepcopy(TINY)
    raw["defaults"] = {"studies": {"train": {"t_max": 0}}}
    for study in raw["studies"].values():
        study["train"].pop("t_max", None)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "train.t_max = 0 (from defaults.studies.train.t_max)" in str(err.value)
    raw["defaults"] = {"studies": {"trian": {}}}
    with pytest.raises(ParamsError, match=r"trian = \{\} \(from defaults.studies.trian\): unknown key"):
        parse_params(raw)
    raw["defaults"] = {"models": {}}
    with pytest.raises(ParamsError, match="defaults.models"):
        parse_params(raw)


def test_the_default_params_spell_out_only_what_differs_from_defaults():
    """params.yaml's worlds and studies say what makes each one differ (DVC's tables get a column per leaf):
    none repeats a value its section's defaults already give it."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def leaves(d, prefix=""):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    for section in ("worlds", "studies"):
        inherited = dict(leaves(raw["defaults"][section]))
        assert inherited, section
        for name, entry in raw[section].items():
            repeated = [k for k, v in leaves(entry) if k in inherited and inherited[k] == v]
            assert not repeated, (section, name, repeated)
