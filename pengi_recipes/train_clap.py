"""Train a CLAP model (contrastive language-audio pretraining) on manifests, with accelerate.

    python -m pengi_recipes.train_clap --config clap/demo
    accelerate launch --config_file pengi_recipes/accelerate/multi_gpu.yaml -m pengi_recipes.train_clap \\
        --config clap/demo --set model.preset=clap-paper data.batch_size=256

The manifests are the training issue's (audio, prompt, answer, task rows); `data.texts` says which tasks give
CLAP texts and how (``caption: "{answer}"`` uses captions as they are; ``sound_event: "This is a sound of
{answer}"`` turns labels into sentences). Training clips are random crops of ``clip_seconds`` (seeded by
example and epoch); the contrastive batch spans every process (`pengi.modules.contrastive`). Validation reports the
loss and audio-text retrieval (R@1/5/10 both ways) on the validation manifest's texts. Checkpoints, resume,
``--set`` overrides and logs work as in train_pengi.py; the final model (``final/``) loads with
``CLAP.from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import AutoModel, AutoTokenizer

from pengi import CLAP, CLAPConfig, CLAPProcessor
from pengi.data.manifest import load_manifest
from pengi.data.sampling import mixture, readable
from pengi.evaluation import load_metric
from pengi.models.clap.processing_clap import CLAPCollator
from pengi.presets import CLAP_PRESETS
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
class ClapModel(ModelSource):
    """``text_encoder_from``: a pretrained text encoder (transformers folder or hub name)."""

    preset: str | None = "clap-tiny"
    text_encoder_from: str | None = None


@dataclass
class ClapTrain:
    trainable: list[str] = field(default_factory=lambda: ["audio_encoder", "text_encoder", "logit_scale"])


@dataclass
class ClapData(Data):
    """``texts``: which manifest tasks give CLAP texts, and how (``"{answer}"``, ``"This is a sound of {answer}"``)."""

    texts: dict[str, str] = field(default_factory=lambda: {"caption": "{answer}"})


@dataclass
class ClapEval:
    every: int = 500
    max_examples: int = 1000


@dataclass
class ClapRecipe(Recipe):
    model: ClapModel = field(default_factory=ClapModel)
    train: ClapTrain = field(default_factory=ClapTrain)
    data: ClapData = field(default_factory=ClapData)
    eval: ClapEval = field(default_factory=ClapEval)


# ----------------------------------------------------------------------------- model
def build_model(cfg: dict) -> CLAP:
    spec = cfg["model"]
    if spec.get("init_from"):
        model = CLAP.from_pretrained(spec["init_from"])
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
        overrides = dict(spec.get("config") or {})
        check_keys(overrides, CLAPConfig, "model.config")
        if spec["preset"] == "clap-tiny":
            overrides.setdefault("vocab_size", len(tokenizer))
        config = CLAP_PRESETS[spec["preset"]](**overrides)
        model = CLAP(config)
        if spec.get("text_encoder_from"):
            model.text_encoder.base.load_state_dict(AutoModel.from_pretrained(spec["text_encoder_from"]).state_dict())
        model.processor = CLAPProcessor(config, tokenizer)
    model.requires_grad_(False)
    for name in cfg["train"]["trainable"]:
        (model.logit_scale if name == "logit_scale" else model.get_submodule(name)).requires_grad_(True)
    return model


# ----------------------------------------------------------------------------- data
def clap_rows(manifest: str, texts: dict[str, str]) -> datasets.Dataset:
    """The rows of ``manifest`` whose task is in ``texts``, each with its CLAP text in ``answer``."""
    rows = load_manifest(manifest).filter(lambda r: r["task"] in texts)
    if len(rows) == 0:
        raise ValueError(f"{manifest}: no rows of the tasks {sorted(texts)} (data.texts)")
    return rows.map(lambda r: {"answer": texts[r["task"]].format(answer=r["answer"])})


def build_data(cfg: dict, processor: CLAPProcessor, seed: int, accelerator: Accelerator):
    data = cfg["data"]
    texts = data.get("texts", {"caption": "{answer}"})
    weights = [part.get("weight", 1.0) for part in data["train"]]
    rows = mixture([clap_rows(part["manifest"], texts) for part in data["train"]], weights, seed=seed)
    if data.get("check_files", True):
        rows = readable(rows, num_proc=data.get("num_proc"))
    loader_kwargs = loader_options(data, CLAPCollator(processor), seed, accelerator.device)
    epoch_batches = map_style_batches(rows, processor, data, seed, accelerator, loader_kwargs)

    val = None
    if data.get("validation"):
        val_rows = clap_rows(data["validation"], {"caption": texts.get("caption", "{answer}")})
        val_rows = val_rows.select(range(min(len(val_rows), cfg["eval"].get("max_examples", 1000))))
        val = validation_loader(val_rows, processor, data, accelerator, loader_kwargs)
    return epoch_batches, val


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: CLAP, loader, accelerator: Accelerator) -> tuple[dict[str, float], list[str]]:
    """Mean contrastive loss over validation batches, and retrieval among all validation clips and captions."""
    unwrapped = accelerator.unwrap_model(model)
    losses, audio, text = [], [], []
    for batch in loader:
        if not batch:
            continue
        out = unwrapped(**batch, return_loss=batch["waveforms"].shape[0] > 1)
        if out.loss is not None:
            losses.append(out.loss.item())
        audio.append(out.audio_embeds.float().cpu())
        text.append(out.text_embeds.float().cpu())
    audio_all = torch.cat(gather_object([torch.cat(audio)]))
    text_all = torch.cat(gather_object([torch.cat(text)]))
    losses = gather_object(losses)
    scores = {"val/loss": sum(losses) / max(len(losses), 1)}
    sim = (text_all @ audio_all.T).numpy()
    result = load_metric("retrieval").compute(predictions=sim, references=list(range(len(audio_all))))
    scores.update({f"val/{k}": v for k, v in result.items() if "R@" in k})
    return scores, []


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(__doc__, ClapRecipe, argv)
    accelerator = make_accelerator(cfg)
    model = build_model(cfg)
    epoch_batches, val_loader = build_data(cfg, model.processor, cfg.get("seed", 0), accelerator)
    validate_fn = None if val_loader is None else (lambda m: validate(m, val_loader, accelerator))
    final = run(cfg, accelerator, model, epoch_batches, validate_fn,
                extra_logs=lambda m: {"train/temperature": 1 / m.logit_scale.exp().item()})
    finish(accelerator, cfg, final)


if __name__ == "__main__":
    main()
