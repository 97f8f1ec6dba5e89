"""Training throughput (samples/s) at pengi-tiny and pengi-base shapes, with and without the prompt cache.

    python perf/train_throughput.py --device cpu --steps 3
    python perf/train_throughput.py --device cuda --dtype float32 bfloat16 --batch-size 32 --steps 20 \\
        --gradient-checkpointing

A step is forward, backward and AdamW on the parts the recipes train (pengi-base: HTSAT, projections and
mappers, with CLIP text and GPT-2 frozen; pengi-tiny: everything). Inputs are random waveforms already in
memory, so the figure is the model's, not the data loader's. The baseline, measured in the same run, is the
same step with the frozen CLIP text encoder run at every step (no prompt cache); the ratio shows what
caching the few task prompts saves. Given several --dtype values (autocast; float32 is plain fp32, TF32 only
with --tf32), each is measured in the same run and compared with the first; --gradient-checkpointing also
measures the cached step with activation checkpointing on every transformer layer (HTSAT, GPT-2, CLIP text).

On CUDA the script prints the peak GPU memory of each measurement (torch.cuda.max_memory_allocated: weights,
AdamW state, activations) and the model FLOPs utilisation: the FLOPs of one cached step as counted by
torch.utils.flop_counter (matrix products, convolutions and attention, forward and backward, without the
recomputation that checkpointing adds) times steps/s, against the peak given by --peak-tflops (989 for the
H100 SXM's dense bf16; fp32 runs are compared with the same bf16 peak).
"""

from __future__ import annotations

import argparse
import time

import torch
from tokenizer_files import add_arguments, clip_bpe_file, gpt2_tokenizer
from torch.utils.flop_counter import FlopCounterMode

from pengi import Pengi, PengiProcessor
from pengi.models.pengi.convert_pengi import clip_tokenizer_from_bpe
from pengi.models.pengi.modeling_pengi import DEFAULT_MODEL_DIR
from pengi.presets import pengi_base, tiny
from pengi.synthetic import example

TASKS = ["generate audio caption", "this is a sound of", "question: is it raining?", "generate metadata"]


def build(shape: str, args) -> Pengi:
    torch.manual_seed(0)
    if shape == "pengi-base":
        gpt2, clip = gpt2_tokenizer(args.gpt2_bpe), clip_tokenizer_from_bpe(clip_bpe_file(args.clip_bpe))
        config = pengi_base()
        model = Pengi(config)
        model.processor = PengiProcessor(config, gpt2, clip)
        model.requires_grad_(False)
        for name in ("audio_encoder", "audio_mapper", "text_mapper", "prompt_encoder.projection",
                     "prompt_encoder.clip_text_projection"):
            model.get_submodule(name).requires_grad_(True)
    else:
        starter = Pengi.from_pretrained(DEFAULT_MODEL_DIR)
        config = tiny(lm_config=starter.config.lm_config.to_dict(), d_proj=64, freeze_lm=False)
        model = Pengi(config)
        model.processor = PengiProcessor(config, starter.processor.tokenizer)
    return model


def checkpointing(model: Pengi, enable: bool) -> None:
    """Activation checkpointing on every layer that supports it (transformers < 5.20 names it gradient_...)."""
    if enable:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        getattr(model, "activation_checkpointing_disable", model.gradient_checkpointing_disable)()


def measure(model: Pengi, batch: dict, steps: int, device: torch.device, dtype: torch.dtype):
    """Returns (samples/s, peak GPU memory in bytes or None, FLOPs of one step as counted)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (and fills the prompt cache when enabled)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch["waveforms"].shape[0] / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return rate, peak, counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="autocast dtype(s); several are measured in turn and compared with the first")
    parser.add_argument("--tf32", action="store_true", help="let float32 matrix products use TF32 on CUDA")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", nargs="+", default=["pengi-tiny", "pengi-base"])
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="also measure the cached step with activation checkpointing")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak (H100 SXM: 989)")
    add_arguments(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", TF32 {'on' if args.tf32 else 'off'}, batch {args.batch_size}, {args.steps} timed steps")

    def report(shape: str, dtype: str, what: str, result, model_flops: float) -> None:
        rate, peak, _ = result
        line = f"{shape:11s} {dtype:9s} {what:24s} {rate:8.2f} samples/s"
        if peak is not None:
            line += f"  peak {peak / 2**30:6.2f} GiB"
        if device.type == "cuda":
            line += f"  MFU {model_flops * rate / args.batch_size / (args.peak_tflops * 1e12):6.1%}"
        print(line, flush=True)

    for shape in args.shapes:
        model = build(shape, args).to(device)
        waves = [(example(s).audio, 16000) for s in range(args.batch_size)]
        prompts = [TASKS[i % len(TASKS)] for i in range(args.batch_size)]
        answers = ["a dog barks while cars pass by on a wet road"] * args.batch_size
        batch = {k: v.to(device) for k, v in model.processor(audio=waves, prompts=prompts, answers=answers).items()}
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        print(f"{shape}: {trainable / 1e6:.1f}M trainable, {frozen / 1e6:.1f}M frozen parameters", flush=True)
        first = None
        for name in args.dtype:
            dtype = getattr(torch, name)
            uncached = None
            if model.prompt_encoder is not None:
                model.prompt_encoder.cache_size = 0  # no cache for the baseline
                uncached = measure(model, batch, args.steps, device, dtype)
                model.prompt_encoder.enable_cache()
            cached = measure(model, batch, args.steps, device, dtype)
            model_flops = cached[2]  # one cached step, no recomputation
            print(f"{shape:11s} {name:9s} counted {model_flops / args.batch_size / 1e9:.1f} GFLOP per sample "
                  "(forward + backward)")
            if uncached is not None:
                report(shape, name, "no prompt cache", uncached, model_flops)
            report(shape, name, "prompt cache" if uncached is not None else "step", cached, model_flops)
            if uncached is not None:
                print(f"{shape:11s} {name:9s} prompt cache vs none: {cached[0] / uncached[0]:.2f}x")
            if args.gradient_checkpointing:
                checkpointing(model, True)
                ckpt = measure(model, batch, args.steps, device, dtype)
                checkpointing(model, False)
                report(shape, name, "+ activation ckpt", ckpt, model_flops)
                mem = f", peak memory {ckpt[1] / cached[1]:.2f}x" if cached[1] else ""
                print(f"{shape:11s} {name:9s} checkpointing vs none: speed {ckpt[0] / cached[0]:.2f}x{mem}")
            if first is None:
                first = (name, cached)
            else:
                mem = f", peak memory {cached[1] / first[1][1]:.2f}x" if cached[1] else ""
                print(f"{shape:11s} {name} vs {first[0]}: speed {cached[0] / first[1][0]:.2f}x{mem}")
        del model, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
