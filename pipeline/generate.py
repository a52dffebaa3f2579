"""generate@<world>: the embedders, feature probabilities, held-out eval set and probes of one world."""

import boot

boot.begin(logs=False)  # first: this checkout's library

from monosem.config import ParamsError
from monosem.params import load_params
from monosem.store.artifacts import save_world
from monosem.worlds import generate_world

from common import check_memory, run, world_dir


def main(name: str) -> None:
    params = load_params()
    if name not in params.worlds:
        raise ParamsError(f"params.yaml: worlds.{name}: no such world; allowed: {sorted(params.worlds)}")
    check_memory(params, [f"generate@{name}"])
    world = generate_world(params.worlds[name])
    save_world(world, world_dir(name))
    cfg = world.cfg
    print(f"world {name}: N={cfg.n_features} m={cfg.d_embed} eps={cfg.eps:g} {cfg.distribution} {cfg.task}, "
          f"{cfg.n_eval} eval samples, E[#active]={float(world.probs.sum()):.2f}")


if __name__ == "__main__":
    run(main)
