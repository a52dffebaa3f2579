"""Save and load: safetensors for tensors, JSON for metadata, every write atomic, nothing unpickled."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import secrets
import shutil
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
    """Yield a new empty file beside `path`, renamed into place only if the block succeeds (else removed).

    It is created as any program creates a file (mode 0666 less the umask, or as the folder's default ACL says),
    not 0600 as `tempfile.mkstemp` would, and keeps that mode if the block replaces it (safetensors' `save_file`
    writes a 0600 file of its own and renames it over the path it is given); folders get the default mode too.
    A full disk, at any step, is an ArtifactError naming `path` and the device (`no_space`), with nothing left
    behind."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_file(path)
        mode = os.stat(tmp).st_mode
        yield tmp
        if os.stat(tmp).st_mode != mode:
            os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, path)
    except Exception as err:
        if is_no_space(err):
            raise no_space(path) from err
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _new_file(path: Path) -> Path:
    """A new empty file `.<name>.<random>.tmp` beside `path`, with the mode a new file gets (0666 & ~umask)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path))


def is_no_space(err: BaseException) -> bool:
    """Whether `err` is a full disk: an OSError with errno ENOSPC, or safetensors' SafetensorError, whose message
    is the only trace of the OS error it wraps."""
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    return isinstance(err, SafetensorError) and "No space left on device" in str(err)


def no_space(path: str | Path) -> ArtifactError:
    """The one line for a full disk: the file not written, and the device it would have been on (its source in
    /proc/self/mountinfo, its mount point, the space left there)."""
    return ArtifactError(f"{path}: not written: no space left on device ({device(Path(path).parent)})")


def device(folder: str | Path) -> str:
    """`<source> mounted at <mount point>, <free> free` for the file system holding `folder` (or its nearest
    existing parent)."""
    where = Path(os.path.realpath(folder))
    while not where.exists() and where != where.parent:
        where = where.parent
    mount = where
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    source = None
    with contextlib.suppress(OSError, ValueError, IndexError):  # no /proc (not Linux), or a line not understood
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            dash = fields.index("-")
            if _unescape(fields[4]) == str(mount):
                fstype, src = fields[dash + 1], _unescape(fields[dash + 2])
                source = src if src.startswith("/") or src == fstype else f"{src} ({fstype})"
    if source is None:
        dev = os.stat(where).st_dev
        source = f"device {os.major(dev)}:{os.minor(dev)}"
    try:
        free = _size(shutil.disk_usage(mount).free)
    except OSError:
        free = "unknown"
    return f"{source} mounted at {mount}, {free} free"


def _unescape(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (space, tab, newline and backslash as octal escapes)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _size(n: float) -> str:
    units = ["B", "kB", "MB", "GB", "TB"]
    while n >= 1000 and len(units) > 1:
        n, units = n / 1000, units[1:]
    return f"{n:.0f} B" if units[0] == "B" else f"{n:.1f} {units[0]}"


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
