"""Helpers for the end-to-end tests: a real `dvc repro` in a temp git repo, a real MLflow store."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny_params.yaml"


def make_repo(path: Path, params: dict) -> Path:
    """This checkout's pipeline and library with `params`, committed in a fresh git repo."""
    for name in ("dvc.yaml", ".gitignore", "pipeline", "src", ".dvc"):
        src = ROOT / name
        (shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
         if src.is_dir() else shutil.copy(src, path / name))
    write_params(path, params)
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", path)
    return path


def tiny(studies=None, edit=None) -> dict:
    """The tiny params, optionally cut to some studies (and the worlds they use) and edited."""
    params = yaml.safe_load(TINY.read_text())
    if studies:
        params["studies"] = {k: v for k, v in params["studies"].items() if k in studies}
        used = {s["world"] for s in params["studies"].values()}
        params["worlds"] = {k: v for k, v in params["worlds"].items() if k in used}
        params["saes"] = {k: v for k, v in params["saes"].items() if v["study"] in studies}
    if edit:
        edit(params)
    return params


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def sh(cmd, cwd, check=True, env: dict | None = None):
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"} | (env or {})
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        env.pop(var, None)
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def client(repo):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = c.get_experiment_by_name("monosem-test")
    return c, exp


def all_runs(repo):
    c, exp = client(repo)
    return c.search_runs([exp.experiment_id], max_results=1000)


