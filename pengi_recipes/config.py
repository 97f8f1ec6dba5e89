"""Recipe configs: a YAML file (a path, or a shipped one by name: ``pengi/tiny``) plus ``--set key.sub=value``
overrides, checked against the recipe's schema before any work starts.

The schemas are dataclasses read by OmegaConf's structured configs (as torchtune's configs are): a key that is not
in the schema, a value of the wrong type, or one that does not parse fails with one line naming the key, what it
takes and the closest valid key. A recipe gets a plain dict with every default filled in.

Input paths (tokenizers, pretrained parts, manifests) resolve from the working directory, else from the config's
own folder, else from the folder that holds the installed ``pengi`` package (``pengi/default_model/tokenizer``);
a value found in none of them stays as it is (a hub name, or the output of an earlier stage).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(importlib.util.find_spec("pengi").origin))
PRECISIONS = ("no", "fp16", "bf16")
# Keys that take one of a few strings (or null), whatever the recipe.
CHOICES = {
    "train.frozen_dtype": ("bfloat16", "float16"),
    "train.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}


class ConfigError(ValueError):
    """A config that does not fit its recipe's schema; the message names the key."""


# ----------------------------------------------------------------------------- the shared sections
@dataclass
class Optim:
    lr: float = MISSING
    max_steps: int = MISSING
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    fused: bool | None = None  # AdamW's fused kernel (one launch for all parameters); unset: on CUDA


@dataclass
class Log:
    every: int = 10
    tracker: str | None = "tensorboard"


@dataclass
class Checkpoint:
    every: int = 500
    keep_last: int = 3


@dataclass
class ManifestPart:
    manifest: str = MISSING
    weight: float = 1.0


@dataclass
class Data:
    """``batch_size`` is the global batch, split across processes; ``num_workers`` decode in DataLoader worker
    processes (each with one intra-op thread), each keeping ``prefetch_factor`` batches ready (unset: torch's 2),
    and ``persistent_workers`` keeps them between epochs and validations; ``pin_memory`` (unset: on CUDA) puts
    batches in page-locked memory, so that they are copied to the GPU while it computes."""

    train: list[ManifestPart] = MISSING
    validation: str | None = None
    batch_size: int = 32
    num_workers: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool = False
    pin_memory: bool | None = None
    bucket_by_duration: bool = False
    bucket_batches: int = 50
    streaming: bool = False
    shuffle_buffer: int = 10_000
    check_files: bool = True
    num_proc: int | None = None


@dataclass
class Recipe:
    """The sections every training recipe has. ``threads``: intra-op threads of each training process (default:
    its cores less ``data.num_workers``, so decoding workers and the model do not oversubscribe the CPU);
    ``precision``: no, fp16 or bf16 (unset: the launcher's ``--mixed_precision``)."""

    output_dir: str = MISSING
    seed: int = 0
    run_name: str = "run"
    precision: str | None = None
    threads: int | None = None
    data: Data = field(default_factory=Data)
    optim: Optim = field(default_factory=Optim)
    log: Log = field(default_factory=Log)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)


# Keys whose values are input paths (resolved as the module docstring says): a path, or a list of manifest parts.
INPUT_PATHS = ("model", "model.tokenizer", "model.prompt_tokenizer", "model.lm_from", "model.prompt_encoder_from",
               "model.init_from", "model.clap_from", "model.text_encoder_from", "data.train", "data.validation",
               "data.test")


# ----------------------------------------------------------------------------- loading
def find_config(name_or_path: str) -> str:
    """A config file: the path itself, or a shipped config by name (``pengi/tiny`` is ``configs/pengi/tiny.yaml``)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(CONFIGS_DIR, name_or_path.removesuffix(".yaml") + ".yaml")
    if os.path.isfile(shipped):
        return shipped
    raise ConfigError(f"{name_or_path}: no such config file, nor a shipped config ({', '.join(shipped_configs())})")


def shipped_configs() -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), CONFIGS_DIR).removesuffix(".yaml")
                  for d, _, files in os.walk(CONFIGS_DIR) for f in files if f.endswith(".yaml"))


def load_config(name_or_path: str, overrides: list[str], schema: type = Recipe) -> dict:
    """The config file with the ``KEY=VALUE`` overrides applied, checked against ``schema``, as a plain dict."""
    path = find_config(name_or_path)
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {_first_line(err)}") from None
    cfg = _merge(OmegaConf.structured(schema), _normalise(raw), path)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: overrides are KEY=VALUE (e.g. optim.max_steps=100)")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: cannot parse the value {text!r} ({_first_line(err)})") from None
        cfg = _merge(cfg, _normalise(_nest(key, value)), f"--set {item}")
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {getattr(err, 'full_key', '')} needs a value (set it in the file or with "
                          f"--set {getattr(err, 'full_key', 'KEY')}=...)") from None
    if plain.get("precision") not in (None, *PRECISIONS):
        raise ConfigError(f"{path}: precision must be one of {', '.join(PRECISIONS)} (or unset), "
                          f"got {plain['precision']!r}")
    for dotted, choices in CHOICES.items():
        section, key = dotted.split(".")
        value = (plain.get(section) or {}).get(key) if isinstance(plain.get(section), dict) else None
        if value is not None and value not in choices:
            raise ConfigError(f"{path}: {dotted} must be one of {', '.join(choices)} (or null), got {value!r}")
    resolve_inputs(plain, os.path.dirname(os.path.abspath(path)))
    return plain


def _merge(cfg, update: dict, source: str):
    try:
        return OmegaConf.merge(cfg, update)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        raise ConfigError(f"{source}: {key}: {_first_line(err)}") from None


def _nest(key: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def _normalise(raw: dict) -> dict:
    """YAML 1.1 quirks: a bare ``precision: no`` reads as false; ``3e-3`` reads as a string (OmegaConf converts
    strings to the schema's numbers itself)."""
    if raw.get("precision") is False:
        raw["precision"] = "no"
    return raw


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def resolve_inputs(cfg: dict, config_dir: str) -> None:
    """Make the input paths of ``cfg`` (`INPUT_PATHS`) absolute where they are found."""
    for dotted in INPUT_PATHS:
        *parents, leaf = dotted.split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = node.get(leaf)
        if isinstance(value, str):
            node[leaf] = resolve_path(value, config_dir)
        elif isinstance(value, list):
            for part in value:
                part["manifest"] = resolve_path(part["manifest"], config_dir)


def resolve_path(value: str, config_dir: str) -> str:
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return value
    for base in (os.getcwd(), config_dir, PACKAGE_ROOT):
        candidate = os.path.join(base, value)
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return value


def check_keys(values: dict, config_class: type, where: str) -> None:
    """Every key of ``values`` (overrides of a model config) is a field of ``config_class``."""
    known = {f.name for f in dataclasses.fields(config_class)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}.{key}: not a field of {config_class.__name__}{hint}")


def parse_args(doc: str, schema: type = Recipe, argv: list[str] | None = None) -> dict:
    """``--config FILE_OR_NAME --set key.sub=value ...`` -> the checked config."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help=f"a YAML file, or a shipped config: {', '.join(shipped_configs())}")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values")
    args = parser.parse_args(argv)
    try:
        return load_config(args.config, args.set, schema)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")


# ----------------------------------------------------------------------------- sections recipes extend
@dataclass
class ModelSource:
    """Where a recipe's model comes from: a named shape (``preset``) with ``config`` overrides of its fields and a
    ``tokenizer``, or an earlier model folder (``init_from``)."""

    preset: str | None = None
    tokenizer: str | None = None
    init_from: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
