"""Training throughput (samples/s, peak memory, MFU) of pengi-base, lever by lever, against the same-run baseline.

    python -m perf.train_throughput --device cpu --steps 3 --batch-size 4
    python -m perf.train_throughput --device cuda --batch-size 32 128 --steps 10
    python -m perf.train_throughput --device cuda --levers all --batch-size 32 64 128 256 512

A step is what the recipe does per batch (pengi_recipes.training_loop.run): forward under autocast, backward,
gradient clipping at 1.0 and AdamW, on the parts the recipe trains (pengi-base: HTSAT, the projections and the
mappers; CLIP's text encoder and GPT-2 frozen, prompts from the prompt cache). Inputs are in memory, so the
figure is the model's, not the data loader's (`perf.recipe_throughput` measures the recipe on files).

The baseline is the step as it was before these levers: autocast to ``--precision``, frozen weights in fp32
(autocast casts them at every step), HTSAT's eager attention, AdamW's default (foreach) kernels, no
compilation. Each lever changes one thing (``--levers``; the recipe option that does the same in brackets):

    frozen-bf16   the frozen LM and prompt encoder held in bf16 (train.frozen_dtype=bfloat16)
    sdpa          HTSAT's window attention in one F.scaled_dot_product_attention call (pengi's default now)
    fused-adamw   AdamW's fused kernel (optim.fused=true; the recipe's default on CUDA)
    compile       torch.compile of the trainable parts: audio encoder and mappers (train.compile=[...])
    cuda-graphs   the same with mode reduce-overhead: CUDA graphs (train.compile_mode=reduce-overhead)
    compile-lm    compile the frozen LM too
    checkpointing activation checkpointing in HTSAT, GPT-2 and CLIP's text encoder (less memory, more work)
    eager-all     frozen-bf16 + sdpa + fused-adamw together, not compiled
    all           frozen-bf16 + sdpa + fused-adamw + cuda-graphs together

Every configuration is measured at every ``--batch-size``; a batch that does not fit is reported and skipped.
Each line prints samples/s, the ratio to the baseline at the same batch size and at the first batch size (the
batch-size lever), the peak GPU memory (torch.cuda.max_memory_allocated) and the MFU: the FLOPs of one
baseline step as torch.utils.flop_counter counts them (matrix products, convolutions, attention; forward and
backward), counted once, times the step rate, against ``--peak-tflops`` (989: the H100's and H200's dense
bf16 peak by the datasheet).
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from pengi import Pengi, PengiProcessor
from pengi.models.pengi.modeling_pengi import DEFAULT_MODEL_DIR
from pengi.modules.htsat_attention import set_htsat_attention
from pengi.presets import pengi_base, tiny
from pengi.synthetic import example
from pengi_recipes.training_loop import compile_modules
from perf.tokenizer_files import add_arguments, clip_bpe_file, gpt2_tokenizer
from tests.clip_tokenizer import clip_tokenizer_from_bpe

TASKS = ["generate audio caption", "this is a sound of", "question: is it raining?", "generate metadata"]
# What configs/pengi/base.yaml trains, and the modules the compile levers compile.
TRAINABLE = {"pengi-base": ["audio_encoder", "audio_mapper", "text_mapper", "prompt_encoder.projection",
                            "prompt_encoder.clip_text_projection"],
             "pengi-tiny": ["audio_encoder", "audio_mapper", "text_mapper", "lm"]}
COMPILED = ["audio_encoder", "audio_mapper", "text_mapper"]


@dataclass(frozen=True)
class Settings:
    """One configuration of the step."""

    frozen_dtype: torch.dtype | None = None
    attention: str = "eager"
    fused: bool = False
    compile: tuple[str, ...] = ()
    compile_mode: str | None = None
    checkpointing: bool = False

    def recipe_overrides(self) -> list[str]:
        """The same configuration as train_pengi ``--set`` values."""
        out = [f"optim.fused={str(self.fused).lower()}"]
        if self.frozen_dtype is not None:
            out.append(f"train.frozen_dtype={str(self.frozen_dtype).removeprefix('torch.')}")
        if self.compile:
            out.append(f"train.compile=[{', '.join(self.compile)}]")
        if self.compile_mode:
            out.append(f"train.compile_mode={self.compile_mode}")
        if self.checkpointing:
            out.append("train.gradient_checkpointing=true")  # the recipe's option covers the LM only
        return out


BASELINE = Settings()
LEVERS = {
    "frozen-bf16": Settings(frozen_dtype=torch.bfloat16),
    "sdpa": Settings(attention="sdpa"),
    "fused-adamw": Settings(fused=True),
    "compile": Settings(compile=tuple(COMPILED)),
    "cuda-graphs": Settings(compile=tuple(COMPILED), compile_mode="reduce-overhead"),
    "compile-lm": Settings(compile=(*COMPILED, "lm")),
    "checkpointing": Settings(checkpointing=True),
    "eager-all": Settings(frozen_dtype=torch.bfloat16, attention="sdpa", fused=True),
    "all": Settings(frozen_dtype=torch.bfloat16, attention="sdpa", fused=True, compile=tuple(COMPILED),
                    compile_mode="reduce-overhead"),
}
DEFAULT_LEVERS = ["frozen-bf16", "sdpa", "fused-adamw", "compile", "cuda-graphs", "all"]


def build(shape: str, args: argparse.Namespace, device: torch.device, settings: Settings = BASELINE) -> Pengi:
    """A model of ``shape`` with random weights (the same for every configuration), what the recipe trains
    trainable, set up as ``settings`` says."""
    torch.manual_seed(0)
    if shape == "pengi-base":
        gpt2, clip = gpt2_tokenizer(args.gpt2_bpe), clip_tokenizer_from_bpe(clip_bpe_file(args.clip_bpe))
        config = pengi_base()
        with torch.device(device):  # initialised where it runs: fast on a GPU
            model = Pengi(config)
        model.processor = PengiProcessor(config, gpt2, clip)
    else:
        starter = Pengi.from_pretrained(DEFAULT_MODEL_DIR)
        config = tiny(lm_config=starter.config.lm_config.to_dict(), d_proj=64, freeze_lm=False)
        model = Pengi(config)
        model.processor = PengiProcessor(config, starter.processor.tokenizer)
    model.to(device)
    model.requires_grad_(False)
    for name in TRAINABLE[shape]:
        model.get_submodule(name).requires_grad_(True)
    if model.prompt_encoder is not None:
        model.prompt_encoder.enable_cache()
    set_htsat_attention(model, settings.attention)
    if settings.checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.frozen_dtype is not None:
        model.hold_frozen_in(settings.frozen_dtype)
    if settings.compile:
        compile_modules(model, list(settings.compile), settings.compile_mode)
    return model.train()


def make_batch(model: Pengi, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    waves = [(example(s, sample_rate=44100, seconds=7.0).audio, 44100) for s in range(size)]
    prompts = [TASKS[i % len(TASKS)] for i in range(size)]
    answers = ["a dog barks while cars pass by on a wet road"] * size
    batch = model.processor(audio=waves, prompts=prompts, answers=answers)
    return {k: v.to(device) for k, v in batch.items()}


def training_step(model: Pengi, settings: Settings, dtype: torch.dtype, device: torch.device):
    """The recipe's step as a closure over a fresh AdamW: ``step(batch)``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=settings.fused)
    graphs = settings.compile_mode == "reduce-overhead"

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(model: Pengi, batch: dict, dtype: torch.dtype, device: torch.device) -> float:
    """FLOPs of one step (forward and backward) as counted, after a first step has filled the prompt cache."""
    step = training_step(model, BASELINE, dtype, device)
    step(batch)
    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops()


def measure(step, batch: dict, steps: int, warmup: int, device: torch.device) -> tuple[float, int | None]:
    """(samples/s, peak GPU memory in bytes or None) over ``steps`` steps after ``warmup``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(batch)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(batch)
    sync(device)
    elapsed = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is {loss.item()}")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return steps * batch["waveforms"].shape[0] / elapsed, peak


def free(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()  # compiled graphs of the configuration before, with their CUDA graph pools
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", default="pengi-base", choices=sorted(TRAINABLE))
    parser.add_argument("--precision", choices=["bfloat16", "float32"], default=None,
                        help="autocast dtype of every configuration (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--tf32", action="store_true", help="let float32 matrix products use TF32 on CUDA")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[4])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=None,
                        help="steps before timing (default: 1, or 3 for compiled configurations)")
    parser.add_argument("--levers", nargs="*", default=DEFAULT_LEVERS, choices=sorted(LEVERS),
                        help="configurations measured after the baseline, one at a time")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.precision or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({torch.get_num_threads()}"
             " threads)") + f", autocast {str(dtype).removeprefix('torch.')}, TF32 {'on' if args.tf32 else 'off'}, "
          f"{args.steps} timed steps", flush=True)

    batches: dict[int, dict] = {}
    model = build(args.shape, args, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    for size in args.batch_size:
        batches[size] = make_batch(model, size, device)
    flops = count_flops(model, batches[args.batch_size[0]], dtype, device) / args.batch_size[0]
    print(f"{args.shape}: {trainable / 1e6:.1f}M trainable, {frozen / 1e6:.1f}M frozen parameters; "
          f"{flops / 1e9:.1f} GFLOP per sample per step as counted", flush=True)
    del model
    free(device)

    rates: dict[tuple[str, int], float] = {}  # samples/s by (configuration, batch size)
    first = args.batch_size[0]
    print(f"{'configuration':13s} {'batch':>5s} {'samples/s':>10s} {'vs baseline':>11s} {'vs base@' + str(first):>11s}"
          f" {'peak GiB':>9s} {'MFU':>6s}", flush=True)
    for name in ["baseline", *args.levers]:
        settings = BASELINE if name == "baseline" else LEVERS[name]
        warmup = args.warmup if args.warmup is not None else (3 if settings.compile else 1)
        model = build(args.shape, args, device, settings)
        step = training_step(model, settings, dtype, device)
        for size in args.batch_size:
            try:
                rate, peak = measure(step, batches[size], args.steps, warmup, device)
            except torch.OutOfMemoryError:
                print(f"{name:13s} {size:5d} out of memory", flush=True)
                step = training_step(model, settings, dtype, device)  # drop the optimizer state it held
                free(device)
                continue
            rates[(name, size)] = rate
            same = rates.get(("baseline", size))
            base = rates.get(("baseline", first))
            line = (f"{name:13s} {size:5d} {rate:10.2f} {rate / same if same else float('nan'):10.2f}x "
                    f"{rate / base if base else float('nan'):10.2f}x")
            line += f" {peak / 2**30:9.2f}" if peak is not None else f" {'-':>9s}"
            if device.type == "cuda":
                line += f" {flops * rate / (args.peak_tflops * 1e12):6.1%}"
            print(line, flush=True)
        del model, step
        free(device)
    recipe = {name: " ".join(LEVERS[name].recipe_overrides()) for name in args.levers}
    print("recipe options of each configuration: " + "; ".join(f"{k}: {v}" for k, v in recipe.items()))


if __name__ == "__main__":
    main()
