"""Is a clip's SLAP embedding the same alone, padded and packed on this device and dtype? And what do padding
and packing cost in time?

    python -m perf.slap_exactness --device cuda --dtype float32 bfloat16

Uses the default `SlapAudioConfig` (ViT-S width, 16x16 patches, 64 mel bins) with random weights on random
log-mel clips of 1-30 s, and prints the largest difference of the pooled outputs from each clip's own pass, and
the time of one forward pass over the batch in each layout.
"""

from __future__ import annotations

import argparse

import torch

from pengi.modules.slap_tower import SlapAudioConfig, SlapAudioModel
from perf.timing import timed


def mean_time(fn, device: str, repeats: int = 5) -> float:
    """Seconds per call over ``repeats`` calls run back to back, after one that warms up."""
    fn()
    return timed(lambda: [fn() for _ in range(repeats)], device)[1] / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="*", default=["float32"])
    parser.add_argument("--clips", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    lengths = torch.randint(100, 3001, (args.clips,)).tolist()  # 1-30 s of 10 ms frames
    mels = [(torch.randn(n, 64) * 15 - 50).to(args.device) for n in lengths]
    print(f"{args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), "
          f"{args.clips} clips of {min(lengths) / 100:.1f}-{max(lengths) / 100:.1f} s")
    for name in args.dtype:
        dtype = getattr(torch, name)
        model = SlapAudioModel(SlapAudioConfig()).to(args.device, dtype).eval()
        with torch.inference_mode():
            alone = torch.cat([model([m]).pooled for m in mels]).float()
            padded = model(mels).pooled.float()
            packed = model(mels, pack=True).pooled.float()
            scale = alone.abs().max().item()
            t_pad = mean_time(lambda m=model: m(mels), args.device)
            t_pack = mean_time(lambda m=model: m(mels, pack=True), args.device)
        print(f"{name:>9}: max |padded - alone| {(padded - alone).abs().max().item():.2e}, "
              f"max |packed - alone| {(packed - alone).abs().max().item():.2e} (outputs up to {scale:.2f}); "
              f"forward {t_pad * 1e3:.1f} ms padded, {t_pack * 1e3:.1f} ms packed")


if __name__ == "__main__":
    main()
