"""What every training recipe shares: accelerate set-up (precision, threads, checkpoint rotation), data loaders
that resume mid-epoch, AdamW with warm-up and cosine decay, and the step loop with logs, validation and
checkpoints (`pengi_recipes.checkpoints`).

A recipe (train_pengi.py, train_clap.py, ...) reads its config (`pengi_recipes.config`), builds its model and
data and calls `run`; the model's ``forward`` must return an output with ``.loss``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from pengi.data.dataset import AudioTextDataset
from pengi.data.sampling import DurationBucketBatchSampler, durations
from pengi_recipes.checkpoints import project_configuration, resume, save_checkpoint
from pengi_recipes.config import ConfigError


# ----------------------------------------------------------------------------- set-up
def mixed_precision(cfg: dict) -> str | None:
    """The config's ``precision`` when it sets one, else None: the launcher's choice (``accelerate launch
    --mixed_precision bf16`` or a ``pengi_recipes/accelerate`` file), or no mixed precision without a launcher."""
    precision = cfg.get("precision")
    if precision is None:
        return None
    precision = "no" if precision is False else str(precision)  # YAML reads a bare no as false
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher and launcher != str(precision):
        print(f"note: the config's precision {precision!r} overrides the launcher's {launcher!r} "
              f"(leave precision out of the config, or --set precision={launcher}, to use the launcher's)")
    return precision


def make_accelerator(cfg: dict) -> Accelerator:
    """The run's accelerator (precision, accumulation, tracker, checkpoint rotation, batches split across
    processes), seed and threads set."""
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg),
                              gradient_accumulation_steps=cfg["optim"].get("grad_accum", 1),
                              log_with=cfg["log"].get("tracker", "tensorboard"),
                              project_config=project_configuration(cfg),
                              # Copies of pinned batches to the GPU overlap its work (data.pin_memory).
                              dataloader_config=DataLoaderConfiguration(split_batches=True,
                                                                        non_blocking=torch.cuda.is_available()))
    set_seed(cfg.get("seed", 0))
    torch.set_num_threads(training_threads(cfg, accelerator.state.num_processes))
    return accelerator


def training_threads(cfg: dict, processes: int = 1) -> int:
    """Intra-op threads of a training process: ``threads`` when set, else this process's share of the cores
    less one per DataLoader worker (which runs one thread, `worker_threads`): the CPU is never oversubscribed."""
    if cfg.get("threads"):
        return cfg["threads"]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(processes, 1) - cfg["data"].get("num_workers", 0))


def worker_threads(worker_id: int) -> None:
    """DataLoader worker set-up: one intra-op thread (decoding and resampling are per-clip work)."""
    torch.set_num_threads(1)


def compile_modules(model: torch.nn.Module, names: list[str], mode: str | None = None) -> None:
    """`torch.compile` each named submodule in place (``nn.Module.compile``: the state dict's keys do not change,
    so checkpoints and the saved model are as without). ``mode`` "reduce-overhead" adds CUDA graphs, which pay
    where shapes repeat (fixed-length clips and prefixes; answers padded to the batch's longest vary)."""
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"train.compile: the model has no module {name!r}") from None
        module.compile(mode=mode)


# ----------------------------------------------------------------------------- data
def loader_options(data: dict, collate_fn: Callable, seed: int, device: torch.device | None = None) -> dict:
    """DataLoader arguments every recipe uses: workers, prefetching, persistent workers and pinned memory as
    ``data`` says (pinned by default when ``device`` is a GPU). Loaders get their own generator: iterating must
    not draw from the global RNG that dropout uses."""
    workers = data.get("num_workers", 0)
    for key in ("prefetch_factor", "persistent_workers"):
        if data.get(key) and not workers:
            raise ConfigError(f"data.{key} applies to DataLoader workers: set data.num_workers > 0 as well")
    pin = data.get("pin_memory")
    if pin is None:
        pin = device is not None and torch.device(device).type == "cuda"
    options = dict(collate_fn=collate_fn, num_workers=workers, worker_init_fn=worker_threads,
                   generator=torch.Generator().manual_seed(seed), pin_memory=bool(pin),
                   persistent_workers=bool(data.get("persistent_workers")))
    if data.get("prefetch_factor"):
        options["prefetch_factor"] = data["prefetch_factor"]
    return options


def map_style_batches(rows, processor, data: dict, seed: int, accelerator: Accelerator, loader_kwargs: dict,
                      bucket_by_duration: bool = False) -> EpochBatches:
    """``epoch_batches(epoch, skip)`` over manifest ``rows`` decoded in the loader's workers: global batches of
    ``data.batch_size`` (split across processes), grouped by duration when ``data.bucket_by_duration`` (default
    ``bucket_by_duration``), resumable mid-epoch."""
    lengths = durations(rows) if data.get("bucket_by_duration", bucket_by_duration) else [0.0] * len(rows)
    sampler = DurationBucketBatchSampler(lengths, data["batch_size"], seed=seed, drop_last=True,
                                         bucket_batches=data.get("bucket_batches", 50))
    if len(sampler) == 0:
        raise ValueError(f"the training data has fewer examples than one batch ({data['batch_size']})")
    train = accelerator.prepare(torch.utils.data.DataLoader(
        AudioTextDataset(rows, processor, train=True, seed=seed), batch_sampler=sampler, **loader_kwargs))

    def epoch_batches(epoch: int, skip: int):
        train.set_epoch(epoch)  # accelerate passes it on to the sampler and the dataset
        return accelerator.skip_first_batches(train, skip) if skip else train  # skipped batches are not decoded

    return epoch_batches


def validation_loader(rows, processor, data: dict, accelerator: Accelerator, loader_kwargs: dict):
    """Validation batches of ``data.batch_size`` clips, with the model's deterministic crops."""
    return accelerator.prepare(torch.utils.data.DataLoader(AudioTextDataset(rows, processor, train=False),
                                                           batch_size=data["batch_size"], **loader_kwargs))


# ----------------------------------------------------------------------------- the loop
EpochBatches = Callable[[int, int], Iterable[dict]]
Validate = Callable[[torch.nn.Module], tuple[dict[str, float], list[str]]]


def run(cfg: dict, accelerator: Accelerator, model: torch.nn.Module, epoch_batches: EpochBatches,
        validate: Validate | None = None, extra_logs: Callable[[torch.nn.Module], dict] | None = None,
        after_step: Callable[[torch.nn.Module], None] | None = None, forward_kwargs: dict | None = None
        ) -> torch.nn.Module:
    """Train ``model``'s trainable parameters for ``optim.max_steps`` optimizer steps; returns the unwrapped model.

    ``epoch_batches(epoch, skip)`` yields one epoch's batches after its first ``skip`` (exact resume).
    ``validate(model)`` returns scores to log and lines to print, every ``eval.every`` steps.
    ``extra_logs(unwrapped_model)`` adds values to each training log line; an output with a ``losses`` dict
    (one loss per objective) has each logged too. ``after_step(unwrapped_model)`` runs after every optimizer
    step (an EMA teacher's update). ``forward_kwargs`` go to every forward call.
    Resumes from the newest complete checkpoint in ``output_dir/checkpoints``.
    """
    opt_cfg = cfg["optim"]
    params = [p for p in model.parameters() if p.requires_grad]
    fused = opt_cfg.get("fused")
    if fused is None:  # one kernel for every parameter's update; the default on CUDA
        fused = accelerator.device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.01),
                                  betas=tuple(opt_cfg.get("betas", (0.9, 0.999))), fused=bool(fused))
    scheduler = get_cosine_schedule_with_warmup(optimizer, opt_cfg.get("warmup_steps", 0), opt_cfg["max_steps"])
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    resumed = resume(accelerator)
    if resumed:
        state, folder = resumed
        accelerator.print(f"resumed from {folder} (step {state['step']})")
    accelerator.init_trackers(cfg.get("run_name", "run"), config={k: v for k, v in cfg.items()
                                                                  if isinstance(v, (int, float, str, bool))})
    accelerator.print(f"trainable parameters: {sum(p.numel() for p in params):,}; "
                      f"mixed precision: {accelerator.mixed_precision}; fused AdamW: {bool(fused)}")

    model.train()
    max_steps = opt_cfg["max_steps"]
    bar = tqdm(total=max_steps, initial=state["step"], desc="training", disable=not accelerator.is_main_process)
    started, seen = time.time(), 0  # samples/s of the training steps since the last log line
    while state["step"] < max_steps:
        for batch in epoch_batches(state["epoch"], state["batch_in_epoch"]):
            # Every process skips together when any got a batch with no readable audio (all logged). Alone, a
            # process decides by itself: a reduction would wait for the GPU at every step.
            empty = not batch if accelerator.num_processes == 1 else \
                accelerator.reduce(torch.tensor(int(not batch), device=accelerator.device), "sum").item()
            if empty:
                state["batch_in_epoch"] += 1
                continue
            with accelerator.accumulate(model):
                output = model(**batch, **(forward_kwargs or {}))
                loss = output.loss
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
            if after_step is not None:
                after_step(accelerator.unwrap_model(model))
            state["step"] += 1
            bar.update(1)
            step = state["step"]
            if step % cfg["log"].get("every", 10) == 0 or step == max_steps:
                mean_loss = accelerator.gather(loss.detach()).mean().item()
                rate = seen / (time.time() - started)
                started, seen = time.time(), 0
                losses = {"train/loss": mean_loss}
                for name, value in (getattr(output, "losses", None) or {}).items():
                    losses[f"train/{name}"] = accelerator.gather(value.detach()).mean().item()
                logs = {**losses, "train/lr": scheduler.get_last_lr()[0], "train/samples_per_s": rate}
                if extra_logs is not None:
                    logs.update(extra_logs(accelerator.unwrap_model(model)))
                accelerator.log(logs, step=step)
                accelerator.print(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
                                  + f"  samples/s {rate:.1f}")
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:.1f}")
            if validate is not None and (step % cfg["eval"]["every"] == 0 or step == max_steps):
                model.eval()
                scores, lines = validate(model)
                model.train()
                accelerator.log(scores, step=step)
                accelerator.print(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                for line in lines:
                    accelerator.print(f"  {line}")
                started, seen = time.time(), 0  # the logged rate is the training steps'
            if step % cfg["checkpoint"]["every"] == 0 or step == max_steps:
                save_checkpoint(accelerator, state)
                started, seen = time.time(), 0
            if step >= max_steps:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model)


def finish(accelerator: Accelerator, cfg: dict, model: torch.nn.Module) -> None:
    """Save the trained model to ``output_dir/final`` (main process only) and close the trackers."""
    if accelerator.is_main_process:
        final = os.path.join(cfg["output_dir"], "final")
        model.save_pretrained(final)
        accelerator.print(f"saved {final}")
    accelerator.end_training()
