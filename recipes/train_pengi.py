"""Train a Pengi model on manifests, from one CPU to many GPUs on several machines, with accelerate.

    python recipes/train_pengi.py --config recipes/configs/pengi-tiny.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/train_pengi.py \\
        --config recipes/configs/pengi-base.yaml --set data.batch_size=32 optim.lr=5e-5

Every value of the YAML config can be overridden with ``--set key.sub=value``. The run writes TensorBoard
logs, checkpoints (``checkpoints/step_N``: model, optimizer, scheduler, RNG states and the data position,
written under a temporary name and renamed when complete, the last ``keep_last`` kept) and the final
model (``final/``, loadable with ``Pengi.from_pretrained``). Started again with the same output folder,
it resumes from the newest complete checkpoint, also after being killed.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import gather_object, set_seed
from datasets.distributed import split_dataset_by_node
from recipe_utils import latest_checkpoint, load_config, save_checkpoint
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

from pengi import Pengi, PengiProcessor
from pengi.data.dataset import (
    AudioTextDataset,
    DurationBucketBatchSampler,
    PengiCollator,
    StreamingAudioTextDataset,
    durations,
    mixture,
    readable,
)
from pengi.data.manifest import load_manifest
from pengi.evaluation import load_metric
from pengi.presets import PRESETS


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
    return model


# ----------------------------------------------------------------------------- data
def build_data(cfg: dict, processor: PengiProcessor, seed: int, accelerator: Accelerator):
    """Returns ``epoch_batches(epoch, skip)``, the batches of one epoch after its first ``skip``, and the
    validation loader. ``data.batch_size`` is the global batch, split across processes."""
    data = cfg["data"]
    collate = PengiCollator(processor)
    workers = data.get("num_workers", 0)
    weights = [part.get("weight", 1.0) for part in data["train"]]
    # Loaders get their own generator: iterating must not draw from the global RNG that dropout uses.
    loader_kwargs = dict(collate_fn=collate, num_workers=workers, generator=torch.Generator().manual_seed(seed))

    if data.get("streaming"):
        parts = [load_manifest(part["manifest"], streaming=True) for part in data["train"]]
        stream = mixture(parts, weights, seed=seed).shuffle(seed=seed, buffer_size=data.get("shuffle_buffer", 10_000))
        stream = split_dataset_by_node(stream, rank=accelerator.process_index, world_size=accelerator.num_processes)
        per_process = data["batch_size"] // accelerator.num_processes

        def epoch_batches(epoch: int, skip: int):
            stream.set_epoch(epoch)
            train_set = StreamingAudioTextDataset(stream, processor, seed, skip_rows=skip * per_process)
            train_set.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(train_set, batch_size=per_process, drop_last=True, **loader_kwargs)
            for batch in loader:
                yield {k: v.to(accelerator.device) for k, v in batch.items()}
    else:
        rows = mixture([load_manifest(part["manifest"]) for part in data["train"]], weights, seed=seed)
        if data.get("check_files", True):
            rows = readable(rows, num_proc=data.get("num_proc"))
        lengths = durations(rows) if data.get("bucket_by_duration") else [0.0] * len(rows)
        sampler = DurationBucketBatchSampler(lengths, data["batch_size"], seed=seed, drop_last=True)
        if len(sampler) == 0:
            raise ValueError(f"the training data has fewer examples than one batch ({data['batch_size']})")
        train = torch.utils.data.DataLoader(AudioTextDataset(rows, processor, train=True, seed=seed),
                                            batch_sampler=sampler, **loader_kwargs)
        train = accelerator.prepare(train)

        def epoch_batches(epoch: int, skip: int):
            train.set_epoch(epoch)  # accelerate passes it on to the sampler and the dataset
            sampler.skip_next(skip)
            return train

    val = None
    if data.get("validation"):
        val_set = AudioTextDataset(load_manifest(data["validation"]), processor, train=False)
        val = accelerator.prepare(torch.utils.data.DataLoader(val_set, batch_size=data["batch_size"], **loader_kwargs))
    return epoch_batches, val


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: Pengi, loader, accelerator: Accelerator, cfg: dict) -> tuple[dict[str, float], list]:
    """Validation loss, and with ``eval.metrics`` greedy answers scored against the references: exact match
    (ClothoAQA normalisation; per prompt when there are only a few distinct prompts) and, with
    ``eval.caption_metrics``, the COCO caption metrics of the "generate audio caption" rows.
    Returns the scores and a few (prompt, reference, generated) samples."""
    model.eval()
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
        captions = [(p, t) for q, t, p in zip(prompts, truths, preds) if q.strip() == "generate audio caption"]
        if cfg["eval"].get("caption_metrics") and captions:
            coco = load_metric("caption_metrics").compute(
                predictions=[p for p, _ in captions], references=[[t] for _, t in captions], spice=False)
            scores.update({f"val/{k}": v for k, v in coco.items() if isinstance(v, float)})
    model.train()
    return scores, list(zip(prompts, truths, preds))[: cfg["eval"].get("samples", 4)]


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    out, opt_cfg, seed = cfg["output_dir"], cfg["optim"], cfg.get("seed", 0)

    accelerator = Accelerator(mixed_precision=cfg.get("precision", "no"),
                              gradient_accumulation_steps=opt_cfg.get("grad_accum", 1),
                              log_with=cfg["log"].get("tracker", "tensorboard"), project_dir=out,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    set_seed(seed)
    model = build_model(cfg)
    processor = model.processor
    epoch_batches, val_loader = build_data(cfg, processor, seed, accelerator)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.01),
                                  betas=tuple(opt_cfg.get("betas", (0.9, 0.999))))
    scheduler = get_cosine_schedule_with_warmup(optimizer, opt_cfg.get("warmup_steps", 0), opt_cfg["max_steps"])
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    ckpt_dir = os.path.join(out, "checkpoints")
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    resume = latest_checkpoint(ckpt_dir)
    if resume:
        accelerator.load_state(resume)
        with open(os.path.join(resume, "trainer_state.json")) as f:
            state = json.load(f)
        accelerator.print(f"resumed from {resume} (step {state['step']})")
    accelerator.init_trackers(cfg.get("run_name", "pengi"), config={k: v for k, v in cfg.items()
                                                                     if isinstance(v, (int, float, str, bool))})
    accelerator.print(f"trainable parameters: {sum(p.numel() for p in params):,}")

    model.train()
    max_steps = opt_cfg["max_steps"]
    bar = tqdm(total=max_steps, initial=state["step"], desc="training", disable=not accelerator.is_main_process)
    started, seen = time.time(), 0
    while state["step"] < max_steps:
        for batch in epoch_batches(state["epoch"], state["batch_in_epoch"]):
            # Every process skips together when any got a batch with no readable audio (all logged).
            if accelerator.reduce(torch.tensor(int(not batch), device=accelerator.device), "sum").item():
                state["batch_in_epoch"] += 1
                continue
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and opt_cfg.get("max_grad_norm"):
                    accelerator.clip_grad_norm_(params, opt_cfg["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["batch_in_epoch"] += 1
            seen += batch["waveforms"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            step = state["step"]
            if step % cfg["log"].get("every", 10) == 0 or step == max_steps:
                mean_loss = accelerator.gather(loss.detach()).mean().item()
                rate = seen / (time.time() - started)
                accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0],
                                 "train/samples_per_s": rate}, step=step)
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:.1f}")
            if val_loader is not None and (step % cfg["eval"]["every"] == 0 or step == max_steps):
                scores, samples = validate(model, val_loader, accelerator, cfg)
                accelerator.log(scores, step=step)
                accelerator.print(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                for prompt, truth, pred in samples:
                    accelerator.print(f"  [{prompt}] reference: {truth!r}  generated: {pred!r}")
            if step % cfg["checkpoint"]["every"] == 0 or step == max_steps:
                save_checkpoint(accelerator, ckpt_dir, state, cfg["checkpoint"].get("keep_last", 3))
            if step >= max_steps:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        if cfg["train"].get("lora"):
            final.lm = final.lm.merge_and_unload()
        final.save_pretrained(os.path.join(out, "final"))
        accelerator.print(f"saved {os.path.join(out, 'final')}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
