"""Save and load: safetensors for tensors, JSON for metadata, every write atomic, nothing unpickled."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from monosem.config import World
from monosem.errors import ArtifactError
from monosem.worlds import WorldData


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (run the stage that makes it: `dvc repro`)") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: not valid JSON ({err})") from None


def write_csv(path: str | Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Rows as a CSV table with a header of `fields` (default: the first row's keys), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    out, storages = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory: a 1-wide world's probes Pᵀ are P's own storage.
        if v.untyped_storage().data_ptr() in storages:
            v = v.clone()
        storages.add(v.untyped_storage().data_ptr())
        out[k] = v
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=meta)


def load_tensors(path: str | Path, expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file; refuse anything else, or tensors of unexpected shapes."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (run the stage that makes it: `dvc repro`)") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: not a valid safetensors file ({err})") from None
    for key, shape in (expected or {}).items():
        if key not in tensors:
            raise ArtifactError(f"{path}: tensor {key!r} missing")
        if tuple(tensors[key].shape) != tuple(shape):
            raise ArtifactError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {shape}")
    return tensors


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (its header only)."""
    try:
        with safe_open(str(path), "pt") as fh:
            return fh.metadata() or {}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: not a valid safetensors file ({err})") from None


# --- worlds ---------------------------------------------------------------------------------------

def save_world(world: WorldData, directory: str | Path) -> None:
    directory = Path(directory)
    tensors = {"P": world.P, "probs": world.probs, "eval_f": world.eval_f, "probes": world.probes}
    if world.Q is not None:
        tensors["Q"] = world.Q
    save_tensors(directory / "world.safetensors", tensors)
    stats = {"expected_active": float(world.probs.sum()), "max_prob": float(world.probs.max()),
             "eval_mean_active": float((world.eval_f != 0).float().sum(1).mean()),
             "zero_predictor_loss": float((world.targets(world.eval_f) ** 2).sum(1).mean())}
    write_json(directory / "world.json", {"config": world.cfg.model_dump(), "stats": stats})


def load_world(directory: str | Path) -> WorldData:
    directory = Path(directory)
    meta = read_json(directory / "world.json")
    cfg = World(**meta["config"])
    n, m = cfg.n_features, cfg.d_embed
    expected = {"P": (m, n), "probs": (n,), "eval_f": (cfg.n_eval, n)}
    if cfg.task == "reprojector":
        expected["Q"] = (m, n)
    t = load_tensors(directory / "world.safetensors", expected)
    return WorldData(cfg, t["P"], t.get("Q"), t["probs"], t["eval_f"])
