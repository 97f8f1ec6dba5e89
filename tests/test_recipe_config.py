"""Recipe configs: checked against the recipe's schema before any work starts, paths that resolve from anywhere,
threads that do not oversubscribe the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pengi_recipes.config import CONFIGS_DIR, ConfigError, load_config, shipped_configs
from pengi_recipes.train_clap import ClapRecipe
from pengi_recipes.train_pengi import PengiRecipe
from pengi_recipes.training_loop import loader_options, training_threads


def test_shipped_configs_load_by_name_with_every_default_filled():
    assert {"pengi/tiny", "pengi/base", "pengi/demo", "clap/demo", "clap/linear-probe", "slap/tiny"} <= \
        set(shipped_configs())
    cfg = load_config("pengi/tiny", ["optim.lr=3e-3", "precision=no", "optim.max_steps=7"], PengiRecipe)
    assert cfg["optim"]["lr"] == 0.003 and cfg["optim"]["max_steps"] == 7 and cfg["precision"] == "no"
    assert cfg["data"]["train"][0]["weight"] == 1.0 and cfg["eval"]["every"] == 250 and cfg["threads"] is None
    assert load_config(os.path.join(CONFIGS_DIR, "pengi", "tiny.yaml"), [], PengiRecipe)["optim"]["lr"] == 0.002


@pytest.mark.parametrize(("override", "message"), [
    ("optim.max_step=5", "--set optim.max_step=5: optim.max_step: Key 'max_step' not in 'Optim'. Did you mean one "
                         "of: 'max_steps'"),
    ("optim.max_steps=five", "--set optim.max_steps=five: optim.max_steps: Value 'five' of type 'str' could not "
                             "be converted to Integer"),
    ("optim.max_steps", "--set 'optim.max_steps': overrides are KEY=VALUE"),
    ("optim.lr=[1e-3", "--set optim.lr=[1e-3: cannot parse the value '[1e-3'"),
    ("data.train=[{manifest: a.jsonl, weigth: 2}]", "weigth: Key 'weigth' not in 'ManifestPart'. Did you mean: "
                                                    "'weight'?"),
    ("precision=fp8", "precision must be one of no, fp16, bf16 (or unset), got 'fp8'"),
])
def test_bad_overrides_fail_with_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("pengi/tiny", [override], PengiRecipe)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_key_stops_the_recipe_before_any_work():
    result = subprocess.run([sys.executable, "-m", "pengi_recipes.train_pengi", "--config", "pengi/tiny", "--set",
                             "optim.max_step=5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --set optim.max_step=5: optim.max_step: Key 'max_step' not in 'Optim'. Did you "
                           "mean one of: 'max_steps'")
    missing = subprocess.run([sys.executable, "-m", "pengi_recipes.train_pengi", "--config", "pengi/nope"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "pengi/nope: no such config file, nor a shipped config (" in missing.stderr


def test_model_config_overrides_are_checked_against_the_model_config():
    from pengi_recipes.train_pengi import build_model

    cfg = load_config("pengi/tiny", ["model.config.mapper_layer=2"], PengiRecipe)
    with pytest.raises(ConfigError, match="model.config.mapper_layer: not a field of PengiConfig; did you mean "
                                          "'mapper_layers'?"):
        build_model(cfg)


def test_input_paths_resolve_from_the_config_folder_and_the_package(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text("")
    (folder / "my.yaml").write_text("output_dir: runs/x\nmodel: {tokenizer: pengi/default_model/tokenizer, "
                                    "lm_from: gpt2}\ndata:\n  train: [{manifest: data/train.jsonl}]\n"
                                    "optim: {lr: 1.0e-3, max_steps: 3}\n")
    monkeypatch.chdir(tmp_path / "configs" / "data")  # somewhere else entirely
    cfg = load_config(str(folder / "my.yaml"), [], PengiRecipe)
    assert cfg["data"]["train"][0]["manifest"] == str(folder / "data" / "train.jsonl")  # the config's folder
    assert os.path.isfile(os.path.join(cfg["model"]["tokenizer"], "tokenizer.json"))  # inside the package
    assert cfg["model"]["lm_from"] == "gpt2"  # not a path anywhere: a hub name, as given
    assert cfg["output_dir"] == "runs/x"  # outputs are the working directory's
    clap = load_config("clap/demo", [], ClapRecipe)  # runs as shown: its tokenizer is shipped
    assert os.path.isdir(clap["model"]["tokenizer"])


def test_threads_leave_a_core_per_loader_worker():
    cores = len(os.sched_getaffinity(0))
    assert training_threads({"threads": None, "data": {"num_workers": 1}}) == max(1, cores - 1)
    assert training_threads({"threads": None, "data": {"num_workers": 0}}, processes=2) == max(1, cores // 2)
    assert training_threads({"threads": 3, "data": {"num_workers": 8}}) == 3
    assert training_threads({"threads": None, "data": {"num_workers": 64}}) == 1

    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.get_num_threads()

    options = loader_options({"num_workers": 2}, None, seed=0)
    options.pop("collate_fn")
    assert list(torch.utils.data.DataLoader(Threads(), batch_size=None, **options)) == [1, 1]


def test_speed_options_are_checked_and_reach_the_data_loader():
    cfg = load_config("pengi/tiny", [], PengiRecipe)
    assert cfg["train"]["frozen_dtype"] is None and cfg["train"]["compile"] == [] and cfg["optim"]["fused"] is None
    for override, message in [("train.frozen_dtype=fp8", "train.frozen_dtype must be one of bfloat16, float16"),
                              ("train.compile_mode=fast", "train.compile_mode must be one of default, reduce-")]:
        with pytest.raises(ConfigError, match=message):
            load_config("pengi/tiny", [override], PengiRecipe)
    data = {"num_workers": 0, "prefetch_factor": 4}
    with pytest.raises(ConfigError, match="data.prefetch_factor applies to DataLoader workers"):
        loader_options(data, None, seed=0)
    options = loader_options({"num_workers": 2, "prefetch_factor": 4, "persistent_workers": True}, None, seed=0,
                             device=torch.device("cpu"))
    assert (options["prefetch_factor"], options["persistent_workers"], options["pin_memory"]) == (4, True, False)
    assert loader_options({}, None, seed=0, device=torch.device("cuda"))["pin_memory"]  # pinned for a GPU
    assert not loader_options({"pin_memory": False}, None, seed=0, device=torch.device("cuda"))["pin_memory"]
