"""Train a SLAP model (contrastive + masked-patch SSL + captioning, one stage) on caption manifests.

    python -m pengi_recipes.train_slap --config slap/tiny
    accelerate launch --config_file pengi_recipes/accelerate/multi_gpu.yaml -m pengi_recipes.train_slap \\
        --config slap/tiny --set data.batch_size=256 model.config.ssl_weight=0

The data pipeline, launcher, checkpoints and resume are train_pengi.py's: manifest rows (``data.tasks``,
default captions) decoded whole (random crops only beyond ``max_seconds``), batched by duration buckets
(``data.bucket_by_duration``) so that padding stays small, or packed several clips per row (``train.pack``).
The objectives' weights are ``model.config.{contrastive,ssl,caption}_weight`` (0 switches one off). After each
optimiser step the EMA teacher (torch's ``AveragedModel``) follows the student (``SLAP.ema_step``). Each
objective's loss is logged (``train/<name>``) and printed every ``log.every`` steps; validation reports the
losses and text/audio retrieval R@1/R@5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from pengi import SLAP, SLAPConfig, SLAPProcessor
from pengi.data.manifest import load_manifest
from pengi.data.sampling import mixture, readable
from pengi.evaluation import load_metric
from pengi.models.slap.processing_slap import SLAPCollator
from pengi.presets import SLAP_PRESETS
from pengi_recipes.config import Data, ModelSource, Recipe, check_keys, parse_args
from pengi_recipes.training_loop import (
    finish,
    loader_options,
    make_accelerator,
    map_style_batches,
    run,
    validation_loader,
)


# ----------------------------------------------------------------------------- config
@dataclass
class SlapModel(ModelSource):
    preset: str | None = "slap-tiny"


@dataclass
class SlapTrain:
    """``pack``: several clips per row with block-diagonal attention instead of one padded clip per row."""

    pack: bool = False


@dataclass
class SlapData(Data):
    """``tasks``: the manifest tasks whose answers are the texts (captions by default)."""

    tasks: list[str] = field(default_factory=lambda: ["caption"])
    bucket_by_duration: bool = True


@dataclass
class SlapEval:
    every: int = 500
    max_batches: int = 50


@dataclass
class SlapRecipe(Recipe):
    model: SlapModel = field(default_factory=SlapModel)
    train: SlapTrain = field(default_factory=SlapTrain)
    data: SlapData = field(default_factory=SlapData)
    eval: SlapEval = field(default_factory=SlapEval)


# ----------------------------------------------------------------------------- model
def build_model(cfg: dict) -> SLAP:
    spec = cfg["model"]
    if spec.get("init_from"):
        return SLAP.from_pretrained(spec["init_from"])
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    overrides = dict(spec.get("config") or {})
    check_keys(overrides, SLAPConfig, "model.config")
    overrides.setdefault("vocab_size", len(tokenizer))
    config = SLAP_PRESETS[spec["preset"]](**overrides)
    model = SLAP(config)
    model.processor = SLAPProcessor(config, tokenizer)
    return model


def load_rows(parts: list[dict], tasks: list[str], seed: int, check_files: bool = True):
    """The manifests' rows of the given tasks, mixed by weight."""
    loaded = [load_manifest(p["manifest"]).filter(lambda r: r["task"] in tasks) for p in parts]
    rows = mixture(loaded, [p.get("weight", 1.0) for p in parts], seed=seed)
    return readable(rows) if check_files else rows


def build_data(cfg: dict, processor: SLAPProcessor, seed: int, accelerator: Accelerator):
    """``epoch_batches(epoch, skip)`` and the validation loader, as in train_pengi.py (map-style data)."""
    data = cfg["data"]
    tasks = data.get("tasks", ["caption"])
    loader_kwargs = loader_options(data, SLAPCollator(processor), seed, accelerator.device)
    rows = load_rows(data["train"], tasks, seed, data.get("check_files", True))
    epoch_batches = map_style_batches(rows, processor, data, seed, accelerator, loader_kwargs, bucket_by_duration=True)

    val = None
    if data.get("validation"):
        val_rows = load_rows([{"manifest": data["validation"]}], tasks, seed, check_files=False)
        val = validation_loader(val_rows, processor, data, accelerator, loader_kwargs)
    return epoch_batches, val


@torch.no_grad()
def validate(model: SLAP, loader, accelerator: Accelerator, cfg: dict) -> dict[str, float]:
    """Mean validation loss of each objective, and retrieval over the validation clips (main process's share)."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    sums: dict[str, float] = {}
    audio, text, n = [], [], 0
    for i, batch in enumerate(loader):
        if i >= cfg["eval"].get("max_batches", 50):
            break
        for name, value in model(**batch, pack=cfg["train"].get("pack", False)).losses.items():
            sums[name] = sums.get(name, 0.0) + accelerator.gather(value.detach()).mean().item()
        n += 1
        audio.append(unwrapped.audio_embedding(batch["waveforms"], batch.get("waveform_lengths")))
        text.append(unwrapped.text_embedding(batch["input_ids"], batch["attention_mask"]))
    scores = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
    if audio:
        sim = (torch.cat(audio) @ torch.cat(text).T).float().cpu().numpy()
        found = load_metric("retrieval").compute(predictions=sim.T, references=list(range(sim.shape[0])))
        scores.update({f"val/{k}": found[k] for k in ("t2a_R@1", "t2a_R@5", "a2t_R@1", "a2t_R@5")})
    model.train()
    return scores


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(__doc__, SlapRecipe, argv)
    accelerator = make_accelerator(cfg)
    model = build_model(cfg)
    epoch_batches, val_loader = build_data(cfg, model.processor, cfg.get("seed", 0), accelerator)
    validate_fn = None if val_loader is None else (lambda m: (validate(m, val_loader, accelerator, cfg), []))
    final = run(cfg, accelerator, model, epoch_batches, validate_fn, after_step=lambda m: m.ema_step(),
                forward_kwargs={"pack": cfg["train"].get("pack", False)})
    finish(accelerator, cfg, final)


if __name__ == "__main__":
    main()
