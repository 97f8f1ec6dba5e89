"""How often do bf16 and fp16 greedy answers differ from fp32's, with a trained model? And how fast is each?

    python -m perf.dtype_agreement --device cpu --clips 480 --tasks all
    python -m perf.dtype_agreement --device cuda --clips 2000 --tasks all --batch-size 64

The model (``--model``: a Pengi folder; by default the one shipped with pengi, trained by
`pengi_recipes.train_starter_model`) answers the same clips in each dtype through `Pengi.generate_from_waveforms`,
the path `pengi caption` takes, with the whole model cast as ``--dtype`` casts it. The clips are the synthetic
examples of `pengi.synthetic` with seeds from 0 (held out from the shipped model's training, which used seeds
from 1,000,000), at the model's sample rate and clip length. For each dtype the script prints clips/s, how many
answers differ from fp32's, how many of fp32's tokens differ (position by position; a missing or extra token
counts as one), the exact match against the examples' reference answers, and how many of the first ``--alone``
answers differ when each prompt is answered alone instead of in a batch. A dtype that the device cannot run is
reported as such.
"""

from __future__ import annotations

import argparse
import time

import torch

from pengi import Pengi
from pengi.synthetic import example

DTYPES = ["float32", "bfloat16", "float16"]


def token_differences(tokenizer, reference: list[str], other: list[str]) -> tuple[int, int]:
    """(tokens of ``reference`` in all, positions where ``other`` differs, missing or extra tokens included)."""
    total = differ = 0
    for a, b in zip(reference, other):
        ids_a, ids_b = tokenizer(a)["input_ids"], tokenizer(b)["input_ids"]
        total += len(ids_a)
        differ += sum(x != y for x, y in zip(ids_a, ids_b)) + abs(len(ids_a) - len(ids_b))
    return total, differ


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a Pengi folder (default: the model shipped with pengi)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES, help="compared with float32")
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--tasks", choices=["caption", "all"], default="caption",
                        help="the caption prompt only, or every task prompt of the examples (five per clip)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--alone", type=int, default=160,
                        help="also answer the first N prompts one at a time, and count those that differ from "
                             "the batched answers (pengi's promise: batched or alone, the same answer)")
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    reference_model = Pengi.from_pretrained(args.model).eval()
    proc = reference_model.processor
    seconds = proc.clip_samples / proc.sample_rate
    waves, prompts, answers = [], [], []
    for seed in range(args.clips):
        e = example(seed, sample_rate=proc.sample_rate, seconds=seconds)
        tasks = e.tasks() if args.tasks == "all" else [t for t in e.tasks() if t[0] == "caption"]
        for _, prompt, answer in tasks:
            waves.append(proc.clip(torch.from_numpy(e.audio)))
            prompts.append(prompt)
            answers.append(answer)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
          f"{'' if device.type == 'cuda' else f' ({torch.get_num_threads()} threads)'}; model "
          f"{args.model or 'shipped with pengi'}; {args.clips} clips, {len(waves)} prompts, batch {args.batch_size}, "
          "greedy", flush=True)

    results: dict[str, list[str]] = {}
    for name in ["float32", *[d for d in args.dtypes if d != "float32"]]:
        model = Pengi.from_pretrained(args.model).to(device=device, dtype=getattr(torch, name)).eval()
        try:
            model.generate_from_waveforms(waves[: args.batch_size], prompts[: args.batch_size], args.batch_size,
                                          generate_kwargs={"num_beams": 1})  # warm-up
            sync(device)
            start = time.perf_counter()
            texts = model.generate_from_waveforms(waves, prompts, args.batch_size, generate_kwargs={"num_beams": 1})
            sync(device)
        except (RuntimeError, NotImplementedError) as err:
            print(f"{name:9s} cannot run on {device}: {str(err).splitlines()[0]}", flush=True)
            continue
        rate = len(waves) / (time.perf_counter() - start)
        results[name] = texts
        exact = sum(t.strip().lower() == a.strip().lower() for t, a in zip(texts, answers)) / len(texts)
        line = f"{name:9s} {rate:8.1f} answers/s   exact match {exact:6.1%}"
        if name != "float32":
            reference = results["float32"]
            differ = sum(a != b for a, b in zip(reference, texts))
            total, tokens = token_differences(proc.tokenizer, reference, texts)
            line += (f"   differ from float32: {differ} of {len(texts)} answers ({differ / len(texts):.1%}), "
                     f"{tokens} of {total} tokens ({tokens / max(total, 1):.2%})")
        alone = min(args.alone, len(waves))
        if alone:
            single = [model.generate_from_waveforms([w], [p], 1, generate_kwargs={"num_beams": 1})[0]
                      for w, p in zip(waves[:alone], prompts[:alone])]
            line += f"   batched vs alone: {sum(a != b for a, b in zip(single, texts))} of {alone} differ"
        print(line, flush=True)
        del model


if __name__ == "__main__":
    main()
