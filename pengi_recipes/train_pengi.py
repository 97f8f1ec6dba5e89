"""Train a Pengi model on manifests, from one CPU to many GPUs on several machines, with accelerate.

    python -m pengi_recipes.train_pengi --config pengi/tiny
    accelerate launch --config_file pengi_recipes/accelerate/multi_gpu.yaml -m pengi_recipes.train_pengi \\
        --config pengi/base --set data.batch_size=32 optim.lr=5e-5

Every value of the YAML config can be overridden with ``--set key.sub=value``. The run writes TensorBoard
logs, checkpoints (``checkpoints/step_N``: model, optimizer, scheduler, RNG states and the data position,
written under a temporary name and renamed when complete, the last ``keep_last`` kept) and the final
model (``final/``, loadable with ``Pengi.from_pretrained``). Started again with the same output folder,
it resumes from the newest complete checkpoint, also after being killed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from datasets.distributed import split_dataset_by_node
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from pengi import CLAP, Pengi, PengiConfig, PengiProcessor
from pengi.data.dataset import StreamingAudioTextDataset
from pengi.data.manifest import load_manifest
from pengi.data.sampling import mixture, readable
from pengi.data.tasks import prompt_for
from pengi.evaluation import load_metric
from pengi.models.pengi.processing_pengi import PengiCollator
from pengi.presets import PRESETS
from pengi_recipes.config import ModelSource, Recipe, check_keys, parse_args
from pengi_recipes.training_loop import (
    compile_modules,
    finish,
    loader_options,
    make_accelerator,
    map_style_batches,
    run,
    validation_loader,
)


# ----------------------------------------------------------------------------- config
@dataclass
class PengiModel(ModelSource):
    """``prompt_tokenizer``: the prompt encoder's; ``lm_from``/``prompt_encoder_from``: pretrained parts
    (transformers folders or hub names); ``clap_from``: a CLAP folder to start the encoders from."""

    preset: str | None = "tiny"
    prompt_tokenizer: str | None = None
    lm_from: str | None = None
    prompt_encoder_from: str | None = None
    clap_from: str | None = None


@dataclass
class PengiTrain:
    """``trainable``: module names; ``lora``: peft `LoraConfig` arguments for the LM (merged into the saved model).
    ``frozen_dtype``: bfloat16 holds the frozen parts (the LM, a frozen encoder backbone) in bf16 while the
    trainable parts train in fp32 under autocast, instead of casting the frozen weights at every step (the
    final model is saved in fp32). ``compile``: modules to `torch.compile` (e.g. the trainable ones:
    ``[audio_encoder, audio_mapper, text_mapper]``), with ``compile_mode`` (reduce-overhead: CUDA graphs too)."""

    trainable: list[str] = field(default_factory=lambda: ["audio_encoder", "audio_mapper", "text_mapper"])
    lora: dict[str, Any] | None = None
    gradient_checkpointing: bool = False
    frozen_dtype: str | None = None
    compile: list[str] = field(default_factory=list)
    compile_mode: str | None = None


@dataclass
class PengiEval:
    every: int = 500
    samples: int = 4
    max_batches: int = 50
    metrics: bool = True
    caption_metrics: bool = False


@dataclass
class PengiRecipe(Recipe):
    model: PengiModel = field(default_factory=PengiModel)
    train: PengiTrain = field(default_factory=PengiTrain)
    eval: PengiEval = field(default_factory=PengiEval)


# ----------------------------------------------------------------------------- model
def build_model(cfg: dict) -> Pengi:
    spec = cfg["model"]
    if spec.get("init_from"):
        model = Pengi.from_pretrained(spec["init_from"])
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
        prompt_tokenizer = AutoTokenizer.from_pretrained(spec["prompt_tokenizer"]) if spec.get("prompt_tokenizer") \
            else None
        overrides = dict(spec.get("config") or {})
        check_keys(overrides, PengiConfig, "model.config")
        if spec.get("lm_from"):
            overrides.setdefault("lm_config", AutoConfig.from_pretrained(spec["lm_from"]))
        if spec.get("prompt_encoder_from"):
            overrides.setdefault("prompt_encoder_config", AutoConfig.from_pretrained(spec["prompt_encoder_from"]))
        if spec["preset"] == "tiny":
            overrides.setdefault("vocab_size", len(tokenizer))
        config = PRESETS[spec["preset"]](**overrides)
        model = Pengi(config)
        if spec.get("lm_from"):
            model.lm.load_state_dict(AutoModelForCausalLM.from_pretrained(spec["lm_from"]).state_dict())
        if spec.get("prompt_encoder_from"):
            model.prompt_encoder.base.load_state_dict(AutoModel.from_pretrained(spec["prompt_encoder_from"]).state_dict())
        model.processor = PengiProcessor(config, tokenizer, prompt_tokenizer)
    if spec.get("clap_from"):  # encoders pretrained contrastively (pengi_recipes/train_clap.py)
        copied = model.load_clap_encoders(CLAP.from_pretrained(spec["clap_from"]))
        print(f"initialised {', '.join(copied)} from the CLAP model {spec['clap_from']}")

    trainable = cfg["train"]["trainable"]
    model.requires_grad_(False)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)
    if cfg["train"].get("lora"):
        from peft import LoraConfig, get_peft_model

        model.lm = get_peft_model(model.lm, LoraConfig(**cfg["train"]["lora"]))
    if cfg["train"].get("gradient_checkpointing"):
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model.prompt_encoder is not None:
        model.prompt_encoder.enable_cache()
    if cfg["train"].get("frozen_dtype"):
        held = model.hold_frozen_in(getattr(torch, cfg["train"]["frozen_dtype"]))
        print(f"held in {cfg['train']['frozen_dtype']} (frozen): {', '.join(held) or 'nothing'}")
    if cfg["train"].get("compile"):
        compile_modules(model, cfg["train"]["compile"], cfg["train"].get("compile_mode"))
    return model


# ----------------------------------------------------------------------------- data
def build_data(cfg: dict, processor: PengiProcessor, seed: int, accelerator: Accelerator):
    """Returns ``epoch_batches(epoch, skip)``, the batches of one epoch after its first ``skip``, and the
    validation loader. ``data.batch_size`` is the global batch, split across processes."""
    data = cfg["data"]
    weights = [part.get("weight", 1.0) for part in data["train"]]
    loader_kwargs = loader_options(data, PengiCollator(processor), seed, accelerator.device)

    if data.get("streaming"):
        parts = [load_manifest(part["manifest"], streaming=True) for part in data["train"]]
        stream = mixture(parts, weights, seed=seed).shuffle(seed=seed, buffer_size=data.get("shuffle_buffer", 10_000))
        stream = split_dataset_by_node(stream, rank=accelerator.process_index, world_size=accelerator.num_processes)
        per_process = data["batch_size"] // accelerator.num_processes

        def epoch_batches(epoch: int, skip: int):
            stream.set_epoch(epoch)
            train_set = StreamingAudioTextDataset(stream, processor, per_process, seed, skip_batches=skip)
            train_set.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(train_set, batch_size=None, **loader_kwargs)
            for batch in loader:
                yield {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
    else:
        rows = mixture([load_manifest(part["manifest"]) for part in data["train"]], weights, seed=seed)
        if data.get("check_files", True):
            rows = readable(rows, num_proc=data.get("num_proc"))
        epoch_batches = map_style_batches(rows, processor, data, seed, accelerator, loader_kwargs)

    val = None
    if data.get("validation"):
        val = validation_loader(load_manifest(data["validation"]), processor, data, accelerator, loader_kwargs)
    return epoch_batches, val


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: Pengi, loader, accelerator: Accelerator, cfg: dict) -> tuple[dict[str, float], list[str]]:
    """Validation loss, and with ``eval.metrics`` greedy answers scored against the references: exact match
    (ClothoAQA normalisation; per prompt when there are only a few distinct prompts) and, with
    ``eval.caption_metrics``, the COCO caption metrics of the "generate audio caption" rows.
    Returns the scores and a few samples (prompt, reference, generated) to print."""
    unwrapped = accelerator.unwrap_model(model)
    proc = unwrapped.processor
    prompt_tok = proc.prompt_tokenizer or proc.tokenizer
    losses, prompts, truths, preds = [], [], [], []
    for i, batch in enumerate(loader):
        if i >= cfg["eval"].get("max_batches", 50):
            break
        losses.append(accelerator.gather(model(**batch).loss.detach()).mean().item())
        if cfg["eval"].get("metrics", True) or i == 0:
            prefix = unwrapped.prefix(batch["waveforms"], batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                      waveform_lengths=batch.get("waveform_lengths"))
            ids, _ = unwrapped.generate_from_prefix(prefix, num_beams=1)
            prompts += prompt_tok.batch_decode(batch["prompt_input_ids"], skip_special_tokens=True)
            truths += proc.decode(batch["input_ids"])
            preds += proc.decode(ids)
    prompts, truths, preds = (gather_object(x) for x in (prompts, truths, preds))
    scores = {"val/loss": sum(losses) / max(len(losses), 1)}
    if cfg["eval"].get("metrics", True) and preds and accelerator.is_main_process:
        by_prompt = len(set(prompts)) <= 12  # task prompts, not free-form questions: one score for each
        qa = load_metric("audio_qa").compute(
            predictions=preds, references=[[t] for t in truths], question_types=prompts if by_prompt else None)
        scores["val/exact_match"] = qa["accuracy"]
        scores.update({f"val/exact_match/{p}": v["accuracy"] for p, v in qa.get("per_type", {}).items()})
        captions = [(p, t) for q, t, p in zip(prompts, truths, preds) if q.strip() == prompt_for("caption")]
        if cfg["eval"].get("caption_metrics") and captions:
            coco = load_metric("caption_metrics").compute(
                predictions=[p for p, _ in captions], references=[[t] for _, t in captions], spice=False)
            scores.update({f"val/{k}": v for k, v in coco.items() if isinstance(v, float)})
    samples = list(zip(prompts, truths, preds))[: cfg["eval"].get("samples", 4)]
    return scores, [f"[{prompt}] reference: {truth!r}  generated: {pred!r}" for prompt, truth, pred in samples]


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(__doc__, PengiRecipe, argv)
    accelerator = make_accelerator(cfg)
    model = build_model(cfg)
    epoch_batches, val_loader = build_data(cfg, model.processor, cfg.get("seed", 0), accelerator)
    validate_fn = None if val_loader is None else (lambda m: validate(m, val_loader, accelerator, cfg))
    final = run(cfg, accelerator, model, epoch_batches, validate_fn)
    if accelerator.is_main_process and cfg["train"].get("lora"):
        final.lm = final.lm.merge_and_unload()
    if cfg["train"].get("frozen_dtype"):
        final.to(torch.float32)  # saved as every pengi model is (the values the prefix was trained against)
    finish(accelerator, cfg, final)


if __name__ == "__main__":
    main()
