"""Train a SLAP model (contrastive + masked-patch SSL + captioning, one stage) on caption manifests.

    python recipes/train_slap.py --config recipes/configs/slap-tiny.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/train_slap.py \\
        --config recipes/configs/slap-tiny.yaml --set data.batch_size=256 model.config.ssl_weight=0

The data pipeline, launcher, checkpoints and resume are train_pengi.py's: manifest rows (``data.tasks``,
default captions) decoded whole (random crops only beyond ``max_seconds``), batched by duration buckets
(``data.bucket_by_duration``) so that padding stays small, or packed several clips per row (``train.pack``).
The objectives' weights are ``model.config.{contrastive,ssl,caption}_weight`` (0 switches one off). After each
optimiser step the EMA teacher follows the student. Each objective's loss is logged (``train/<name>``) and
printed every ``log.every`` steps; validation reports the losses and text/audio retrieval R@1/R@5.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from recipe_utils import latest_checkpoint, load_config, save_checkpoint
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

from pengi import SLAP, SLAPProcessor
from pengi.data.dataset import AudioTextDataset, DurationBucketBatchSampler, SLAPCollator, durations, mixture, readable
from pengi.data.manifest import load_manifest
from pengi.evaluation import load_metric
from pengi.presets import SLAP_PRESETS


def build_model(cfg: dict) -> SLAP:
    spec = cfg["model"]
    if spec.get("init_from"):
        return SLAP.from_pretrained(spec["init_from"])
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    overrides = dict(spec.get("config") or {})
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
    loader_kwargs = dict(collate_fn=SLAPCollator(processor), num_workers=data.get("num_workers", 0),
                         generator=torch.Generator().manual_seed(seed))
    rows = load_rows(data["train"], tasks, seed, data.get("check_files", True))
    lengths = durations(rows) if data.get("bucket_by_duration", True) else [0.0] * len(rows)
    sampler = DurationBucketBatchSampler(lengths, data["batch_size"], seed=seed, drop_last=True,
                                         bucket_batches=data.get("bucket_batches", 50))
    if len(sampler) == 0:
        raise ValueError(f"the training data has fewer examples than one batch ({data['batch_size']})")
    train = accelerator.prepare(torch.utils.data.DataLoader(AudioTextDataset(rows, processor, train=True, seed=seed),
                                                            batch_sampler=sampler, **loader_kwargs))

    def epoch_batches(epoch: int, skip: int):
        train.set_epoch(epoch)
        sampler.skip_next(skip)
        return train

    val = None
    if data.get("validation"):
        val_rows = load_rows([{"manifest": data["validation"]}], tasks, seed, check_files=False)
        val = accelerator.prepare(torch.utils.data.DataLoader(AudioTextDataset(val_rows, processor, train=False),
                                                              batch_size=data["batch_size"], **loader_kwargs))
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    out, opt_cfg, seed = cfg["output_dir"], cfg["optim"], cfg.get("seed", 0)
    pack = cfg["train"].get("pack", False)

    accelerator = Accelerator(mixed_precision=cfg.get("precision", "no"),
                              gradient_accumulation_steps=opt_cfg.get("grad_accum", 1),
                              log_with=cfg["log"].get("tracker", "tensorboard"), project_dir=out,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    set_seed(seed)
    model = build_model(cfg)
    processor = model.processor
    epoch_batches, val_loader = build_data(cfg, processor, seed, accelerator)
    params = [p for p in model.parameters() if p.requires_grad]  # the EMA teacher has none
    optimizer = torch.optim.AdamW(params, lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.01),
                                  betas=tuple(opt_cfg.get("betas", (0.9, 0.999))))
    scheduler = get_cosine_schedule_with_warmup(optimizer, opt_cfg.get("warmup_steps", 0), opt_cfg["max_steps"])
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    ckpt_dir = os.path.join(out, "checkpoints")
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    resume = latest_checkpoint(ckpt_dir)
    if resume:
        accelerator.load_state(resume)
        with open(os.path.join(resume, "trainer_state.json")) as f:
            state = json.load(f)
        accelerator.print(f"resumed from {resume} (step {state['step']})")
    accelerator.init_trackers(cfg.get("run_name", "slap"), config={k: v for k, v in cfg.items()
                                                                   if isinstance(v, (int, float, str, bool))})
    accelerator.print(f"trainable parameters: {sum(p.numel() for p in params):,}")

    model.train()
    max_steps = opt_cfg["max_steps"]
    bar = tqdm(total=max_steps, initial=state["step"], desc="training", disable=not accelerator.is_main_process)
    started, seen = time.time(), 0
    while state["step"] < max_steps:
        for batch in epoch_batches(state["epoch"], state["batch_in_epoch"]):
            if accelerator.reduce(torch.tensor(int(not batch), device=accelerator.device), "sum").item():
                state["batch_in_epoch"] += 1
                continue
            with accelerator.accumulate(model):
                output = model(**batch, pack=pack)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and opt_cfg.get("max_grad_norm"):
                    accelerator.clip_grad_norm_(params, opt_cfg["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["batch_in_epoch"] += 1
            seen += batch["waveforms"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            unwrapped.ema_step()
            state["step"] += 1
            bar.update(1)
            step = state["step"]
            if step % cfg["log"].get("every", 10) == 0 or step == max_steps:
                losses = {f"train/{k}": accelerator.gather(v.detach()).mean().item() for k, v in output.losses.items()}
                losses["train/loss"] = accelerator.gather(output.loss.detach()).mean().item()
                rate = seen / (time.time() - started)
                accelerator.log({**losses, "train/lr": scheduler.get_last_lr()[0], "train/samples_per_s": rate},
                                step=step)
                accelerator.print(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items()))
            if val_loader is not None and (step % cfg["eval"]["every"] == 0 or step == max_steps):
                scores = validate(model, val_loader, accelerator, cfg)
                accelerator.log(scores, step=step)
                accelerator.print(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
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
        unwrapped.save_pretrained(os.path.join(out, "final"))
        accelerator.print(f"saved {os.path.join(out, 'final')}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
