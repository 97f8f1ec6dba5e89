"""pengi as a user installs it: a wheel built from this checkout and installed (not editable) into a folder of its
own, then run from a folder outside the checkout. The metrics, the benchmark specs, the recipes and their configs
and the default model must all be inside the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The wheel installed into a target folder; the environment that imports pengi from there."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that setuptools' build/ folder is not left in the checkout
    local = {".venv", ".git", "build", "dist", "runs", "data", "pengi.egg-info", ".pytest_cache", ".ruff_cache"}
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [n for n in names if n == "__pycache__" or
                                                                 (Path(folder) == ROOT and n in local)])
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = (tmp / "dist").glob("pengi-*.whl")
    target = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}  # before the checkout's editable install
    where = subprocess.run([sys.executable, "-c", "import pengi, pengi_recipes; print(pengi.__file__); "
                            "print(pengi_recipes.__file__)"], capture_output=True, text=True, env=env, cwd=tmp)
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout + where.stderr
    return env


def run(env, cwd, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def test_eval_runs_from_an_installed_wheel(installed, tmp_path):
    data = tmp_path / "data"
    made = run(installed, tmp_path, "pengi_recipes.make_synthetic_data", "--out", str(data / "synthetic"),
               "--train", "0", "--validation", "8")
    assert made.returncode == 0, made.stderr[-2000:]
    result = run(installed, tmp_path, "pengi", "eval", "--benchmark", "synthetic", "--out", str(tmp_path / "out"),
                 "--only", "synthetic_caption", "synthetic_sound", "--quiet")  # ./data is the default data root
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["datasets"]) == {"synthetic_caption", "synthetic_sound"}
    assert "CIDEr-D" in results["datasets"]["synthetic_caption"]["metrics"]  # the metric modules are in the wheel
    assert results["datasets"]["synthetic_sound"]["metrics"]["accuracy_similarity"] > 0.5


def test_recipes_and_their_configs_run_from_an_installed_wheel(installed, tmp_path):
    data = tmp_path / "synthetic"
    assert run(installed, tmp_path, "pengi_recipes.make_synthetic_data", "--out", str(data), "--train", "8",
               "--validation", "2").returncode == 0
    result = run(installed, tmp_path, "pengi_recipes.train_pengi", "--config", "pengi/tiny", "--set",
                 f"output_dir={tmp_path / 'run'}", f"data.train=[{{manifest: {data / 'train.jsonl'}}}]",
                 f"data.validation={data / 'validation.jsonl'}", "optim.max_steps=2", "data.batch_size=4",
                 "eval.every=100", "checkpoint.every=100", "log.tracker=null")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
