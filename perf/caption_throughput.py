"""Batch captioning throughput at pengi-base size: KV-cached batched `generate` vs the published decoder's method.

    python -m perf.caption_throughput --clips 8 --batch-size 8 --device cpu

The baseline decodes one clip at a time and re-runs GPT-2 over the whole sequence at every step (no KV cache),
as the released Pengi code does. Both paths decode greedily from the same prefixes; the script checks that
they produce identical tokens and prints clips/s for each and the ratio. The model has pengi-base's shapes
(HTSAT, two 40-token mappers of 4 layers, GPT-2 base) with random weights, since weights cannot be
downloaded here; prompts go through GPT-2's embedding (the release's base_no_text_enc layout) because no CLIP
vocabulary ships offline. Both decoders stop at EOS or after --max-new-tokens; the script reports the
tokens decoded so that runs can be compared.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import transformers

from pengi import Pengi, PengiProcessor
from pengi.presets import pengi_base_no_text_enc
from perf.timing import timed
from perf.tokenizer_files import add_arguments, gpt2_tokenizer
from tests.naive_decoding import greedy_decode_without_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the dtype the whole model is cast to")
    add_arguments(parser)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    torch.manual_seed(0)
    tok = gpt2_tokenizer(args.gpt2_bpe)
    config = pengi_base_no_text_enc(max_new_tokens=args.max_new_tokens)
    model = Pengi(config).eval().to(device=device, dtype=dtype)
    model.processor = PengiProcessor(config, tok)
    n_params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    audio = [(rng.normal(0, 0.1, int(44100 * rng.uniform(3, 9))).astype(np.float32), 44100) for _ in range(args.clips)]
    prompt = "generate audio caption"
    greedy = dict(max_new_tokens=args.max_new_tokens, num_beams=1)

    model.generate(audio[:1], prompt, **greedy)  # warm-up: one clip (the naive path's shapes) and one batch
    model.generate(audio[: args.batch_size], prompt, batch_size=args.batch_size, **greedy)
    cached, t_cached = timed(lambda: model.generate(audio, prompt, batch_size=args.batch_size, **greedy), device)

    def naive():
        texts = []
        for clip in audio:
            batch = model.processor(audio=[clip], prompts=[prompt])
            with torch.inference_mode():
                prefix = model.prefix(**{k: v.to(device) for k, v in batch.items()})
            ids = greedy_decode_without_cache(model.lm, prefix, args.max_new_tokens, tok.eos_token_id)
            texts += [model.processor.tokenizer.decode(t).strip() for t in ids]
        return texts

    baseline, t_naive = timed(naive, device)
    identical = cached == baseline
    n_tokens = sum(len(tok(t)["input_ids"]) for t in cached)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}"
          + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"model: pengi-base shapes (no text encoder), {n_params / 1e6:.0f}M parameters, {args.dtype} on {device}")
    print(f"clips: {args.clips}, batch size {args.batch_size}, greedy, at most {args.max_new_tokens} new tokens "
          f"each ({n_tokens} decoded in all)")
    print(f"naive decoder (no KV cache, one clip at a time): {args.clips / t_naive:8.3f} clips/s  ({t_naive:.1f} s)")
    print(f"pengi generate (KV cache, batched):              {args.clips / t_cached:8.3f} clips/s  ({t_cached:.1f} s)")
    differ = sum(a != b for a, b in zip(cached, baseline))
    print(f"speed-up: {t_naive / t_cached:.2f}x   greedy outputs identical: {identical}"
          + ("" if identical else f" ({differ} of {args.clips} clips differ)"))
    if not identical:
        raise SystemExit("outputs differ between the cached and the naive decoder")


if __name__ == "__main__":
    main()
