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
import shutil
import time

import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

from pengi import Pengi, PengiProcessor
from pengi.data.dataset import AudioTextDataset, DurationBucketBatchSampler, PengiCollator, durations, mixture, readable
from pengi.data.manifest import load_manifest
from pengi.presets import PRESETS


# ----------------------------------------------------------------------------- config
def load_config(path: str, overrides: list[str]) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    for item in overrides:
        key, _, value = item.partition("=")
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _number_or_value(yaml.safe_load(value))
    return cfg


def _number_or_value(value):
    """YAML 1.1 reads ``3e-3`` as a string; take it as the number a user meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


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
def build_data(cfg: dict, processor: PengiProcessor, seed: int):
    data = cfg["data"]
    parts = [load_manifest(part["manifest"]) for part in data["train"]]
    rows = mixture(parts, [part.get("weight", 1.0) for part in data["train"]], seed=seed)
    if data.get("check_files", True):
        rows = readable(rows, num_proc=data.get("num_proc"))
    lengths = durations(rows) if data.get("bucket_by_duration") else [0.0] * len(rows)
    sampler = DurationBucketBatchSampler(lengths, data["batch_size"], seed=seed, drop_last=True)
    train_set = AudioTextDataset(rows, processor, train=True, seed=seed)
    collate = PengiCollator(processor)
    workers = data.get("num_workers", 0)
    # Its own generator: iterating must not draw from the global RNG that dropout uses, or resumed runs diverge.
    train = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                        generator=torch.Generator().manual_seed(seed))
    val = None
    if data.get("validation"):
        val_set = AudioTextDataset(load_manifest(data["validation"]), processor, train=False)
        val = torch.utils.data.DataLoader(val_set, batch_size=data["batch_size"], collate_fn=collate,
                                          num_workers=workers)
    return train, val, sampler


# ----------------------------------------------------------------------------- checkpoints
def latest_checkpoint(folder: str) -> str | None:
    if not os.path.isdir(folder):
        return None
    done = sorted(d for d in os.listdir(folder) if d.startswith("step_"))
    return os.path.join(folder, done[-1]) if done else None


def save_checkpoint(accelerator: Accelerator, folder: str, state: dict, keep_last: int) -> None:
    """Write to a temporary folder, then rename: a checkpoint folder named step_N is always complete."""
    final = os.path.join(folder, f"step_{state['step']:08d}")
    tmp = os.path.join(folder, f".tmp_step_{state['step']:08d}")
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump(state, f)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(d for d in os.listdir(folder) if d.startswith("step_"))[:-keep_last]:
            shutil.rmtree(os.path.join(folder, old))
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: Pengi, loader, accelerator: Accelerator, cfg: dict) -> tuple[float, list[tuple[str, str, str]]]:
    model.eval()
    losses, samples = [], []
    for i, batch in enumerate(loader):
        if i >= cfg["eval"].get("max_batches", 50):
            break
        losses.append(accelerator.gather(model(**batch).loss.detach()).mean().item())
        if i == 0:
            n = cfg["eval"].get("samples", 4)
            unwrapped = accelerator.unwrap_model(model)
            prefix = unwrapped.prefix(batch["waveforms"][:n], batch["prompt_input_ids"][:n],
                                      batch["prompt_attention_mask"][:n])
            ids, _ = unwrapped.generate_from_prefix(prefix, num_beams=1)
            proc = unwrapped.processor
            prompts = proc.tokenizer.batch_decode(batch["prompt_input_ids"][:n], skip_special_tokens=True) \
                if unwrapped.prompt_encoder is None else \
                proc.prompt_tokenizer.batch_decode(batch["prompt_input_ids"][:n], skip_special_tokens=True)
            truths = proc.decode(batch["input_ids"][:n])
            samples = list(zip(prompts, truths, proc.decode(ids)))
    model.train()
    return (sum(losses) / max(len(losses), 1)), samples


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
    train_loader, val_loader, sampler = build_data(cfg, processor, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.01),
                                  betas=tuple(opt_cfg.get("betas", (0.9, 0.999))))
    scheduler = get_cosine_schedule_with_warmup(optimizer, opt_cfg.get("warmup_steps", 0), opt_cfg["max_steps"])
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)

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

    if len(sampler) == 0:
        raise ValueError(f"the training data has fewer examples than one batch ({cfg['data']['batch_size']})")
    model.train()
    max_steps = opt_cfg["max_steps"]
    bar = tqdm(total=max_steps, initial=state["step"], desc="training", disable=not accelerator.is_main_process)
    started, seen = time.time(), 0
    while state["step"] < max_steps:
        train_loader.set_epoch(state["epoch"])  # accelerate passes it on to the sampler and the dataset
        sampler.skip_next(state["batch_in_epoch"])
        for batch in train_loader:
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
                val_loss, samples = validate(model, val_loader, accelerator, cfg)
                accelerator.log({"val/loss": val_loss}, step=step)
                accelerator.print(f"step {step}: validation loss {val_loss:.4f}")
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
