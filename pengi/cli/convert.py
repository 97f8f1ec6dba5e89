"""`pengi convert`: published checkpoints (Pengi, msclap, LAION-CLAP) into pengi model folders."""

from __future__ import annotations

import argparse
import os

from pengi.conversion import run_conversion
from pengi.models.clap.convert_laion import convert_laion
from pengi.models.clap.convert_msclap import MSCLAP_VERSIONS, convert_msclap
from pengi.models.pengi.convert_pengi import HUB_CLIP_TOKENIZER, HUB_GPT2_TOKENIZER, convert


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert published checkpoints into a pengi model folder")
    sources = p.add_subparsers(dest="source", required=True)

    p = sources.add_parser("pengi-original", help="a published Pengi checkpoint (base.pth, base_no_text_enc.pth)",
                           description="Convert a published Pengi checkpoint into a Pengi folder.")
    p.add_argument("checkpoint", help="the release's .pth file")
    p.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizers)")
    p.add_argument("--tokenizers", default=None, metavar="DIR",
                   help="folder with gpt2/ and (for base) clip/ tokenizers loadable by AutoTokenizer; "
                        f"default: the hub names {HUB_GPT2_TOKENIZER!r} and {HUB_CLIP_TOKENIZER!r}")
    p.set_defaults(func=lambda a: run_conversion(lambda: convert(a.checkpoint, a.out_dir, a.tokenizers),
                                                 a.checkpoint, a.out_dir, "Pengi"))

    p = sources.add_parser("msclap", help="an msclap checkpoint (CLAP 2022, 2023, clapcap)",
                           description="Convert CLAP_weights_2022.pth / CLAP_weights_2023.pth (-> a CLAP folder) "
                                       "or clapcap_weights_2023.pth (-> a Pengi folder).")
    p.add_argument("version", choices=MSCLAP_VERSIONS)
    p.add_argument("checkpoint", help="the release's .pth file")
    p.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizer/)")
    p.add_argument("--tokenizer-dir", default=None, metavar="DIR",
                   help="a tokenizer folder loadable by AutoTokenizer (BERT for 2022, GPT-2 otherwise); "
                        "default: the hub names 'bert-base-uncased' / 'gpt2' from the local cache")
    p.set_defaults(func=lambda a: run_conversion(
        lambda: convert_msclap(a.version, a.checkpoint, a.out_dir, a.tokenizer_dir), a.checkpoint, a.out_dir,
        "Pengi" if a.version == "clapcap" else "CLAP"))

    p = sources.add_parser("laion-clap", help="a LAION-CLAP transformers ClapModel folder (unfused)",
                           description="Convert a transformers ClapModel folder (save_pretrained output).")
    p.add_argument("folder", help="the ClapModel folder (config.json, weights, preprocessor and tokenizer files)")
    p.add_argument("out_dir", help="folder to write")
    p.set_defaults(func=lambda a: run_conversion(lambda: convert_laion(a.folder, a.out_dir), a.folder, a.out_dir,
                                                 "CLAP", os.path.isdir))
