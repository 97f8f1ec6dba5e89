"""Converting the published Pengi checkpoints.

The release's weights cannot be downloaded here, so each test builds a random state dict with exactly the
published keys, shapes and dtypes (tests/data/*.keys.tsv, copied from the reference key lists), with the
buffers the release holds set to their true values, saves it in the published file format, converts it and
checks the converted model against computations written here from the raw tensors and the description of the
release (plain torch ops; our modules are not called for the part being checked).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from safetensors import safe_open
from transformers import ClapAudioConfig, GPT2TokenizerFast
from transformers.models.clap.modeling_clap import ClapAudioLayer, ClapAudioSelfAttention

from pengi import Pengi
from pengi.cli import build_parser
from pengi.cli import main as cli_main
from pengi.models.pengi.convert_pengi import (
    ConversionError,
    convert,
    convert_state_dict,
    load_release_state_dict,
    release_config,
)

from .clip_tokenizer import clip_tokenizer_from_bpe
from .conftest import GPT2_DATA

DATA = Path(__file__).parent / "data"
SHARED_REFERENCE = [Path(__file__).resolve().parents[1] / "shared" / "reference",
                    Path(__file__).resolve().parents[2] / "shared" / "reference"]
BASE_TSV, NO_TEXT_TSV = "pengi-base.keys.tsv", "pengi-base_no_text_enc.keys.tsv"
SR, CLIP_SECONDS, HEADS = 44100, 7.0, 8
PROMPT = "generate audio caption"


# ------------------------------------------------------------------------------------------ building the release
def read_tsv(name: str) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    rows = []
    for line in (DATA / name).read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
        rows.append((key, dims, getattr(torch, dtype)))
    return rows


def hann_dft_kernels_numpy(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """torchlibrosa-style STFT kernels: rows of the DFT matrix exp(-2 pi i k n / N) times a periodic Hann window."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    dft = np.exp(-2j * np.pi * np.outer(n, np.arange(n_fft // 2 + 1)) / n_fft) * window[:, None]
    return dft.real.T[:, None, :].astype(np.float32), dft.imag.T[:, None, :].astype(np.float32)


def swin_shift_mask_loops(size: int, window: int, shift: int) -> torch.Tensor:
    """The shifted-window mask as Swin builds it: label 9 regions by slices, partition, -100 across regions."""
    img = torch.zeros(1, size, size, 1)
    count = 0
    for h in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for w in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, h, w, :] = count
            count += 1
    win = img.view(1, size // window, window, size // window, window, 1).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def release_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random pengi-base weights with the published keys/shapes/dtypes, plus the obsolete keys the files carry."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(48_000_000, generator=g)  # each tensor is a copy from a random offset: distinct and quick

    def randn(shape):
        n = math.prod(shape)
        start = int(torch.randint(0, pool.numel() - n + 1, (1,), generator=g))
        return pool[start:start + n].clone().view(shape)

    real, imag = hann_dft_kernels_numpy(1024)
    window = 8
    rel_index = ClapAudioSelfAttention(ClapAudioConfig(), 8, 1, window).relative_position_index.clone()
    sd: dict[str, torch.Tensor] = {}
    for key, shape, dtype in read_tsv(BASE_TSV):
        if key.endswith("stft.conv_real.weight"):
            value = torch.from_numpy(real)
        elif key.endswith("stft.conv_imag.weight"):
            value = torch.from_numpy(imag)
        elif key.endswith("melW"):
            value = torch.rand(shape, generator=g) * 0.05 + 1e-4  # any positive matrix, unlike any real filterbank
        elif key.endswith("relative_position_index"):
            value = rel_index.clone()
        elif key.endswith("attn_mask"):
            size = window * math.isqrt(shape[0])  # (size / window)^2 windows
            value = swin_shift_mask_loops(size, window, window // 2)
        elif key.endswith("num_batches_tracked"):
            value = torch.tensor(12345)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("lm_head.weight"):
            continue  # tied: the same tensor as wte, set below
        elif key.endswith("prefix_const"):
            value = randn(shape)
        elif len(shape) == 1:
            base = 1.0 if key.endswith("weight") else 0.0  # norm scales near 1, biases near 0
            value = base + 0.05 * randn(shape)
        elif "caption_decoder.gpt." in key or "embedding" in key:
            value = 0.02 * randn(shape)
        else:
            fan_in = math.prod(shape[1:])
            value = randn(shape) / math.sqrt(fan_in)
        assert value.shape == shape, key
        sd[key] = value.to(dtype)
    sd["caption_decoder.gpt.lm_head.weight"] = sd["caption_decoder.gpt.transformer.wte.weight"]
    # Written by transformers 4.28.1 and gone from newer versions (reference README).
    sd["caption_encoder.base.embeddings.position_ids"] = torch.arange(77)[None]
    causal = torch.tril(torch.ones(1024, 1024, dtype=torch.bool)).view(1, 1, 1024, 1024)
    for i in range(12):
        sd[f"caption_decoder.gpt.transformer.h.{i}.attn.bias"] = causal
        sd[f"caption_decoder.gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd


OBSOLETE = re.compile(r"caption_encoder\.base\.embeddings\.position_ids"
                      r"|caption_decoder\.gpt\.transformer\.h\.\d+\.attn\.(bias|masked_bias)")


def is_obsolete(key: str) -> bool:
    return OBSOLETE.fullmatch(key) is not None


def no_text_enc_subset(sd: dict[str, torch.Tensor], keep_obsolete: bool = True) -> dict[str, torch.Tensor]:
    keys = [k for k, _, _ in read_tsv(NO_TEXT_TSV)]
    out = {k: sd[k] for k in keys}
    if keep_obsolete:
        out.update({k: v for k, v in sd.items() if is_obsolete(k) and k.startswith("caption_decoder.")})
    return out


def save_release(sd: dict[str, torch.Tensor], path: Path, module_prefix: bool) -> None:
    model = {("module." + k if module_prefix else k): v for k, v in sd.items()}
    some = next(iter(sd.values()))
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    torch.save({"model": model, "optimizer": optimizer, "epoch": 30, "dtype_probe": some.dtype is torch.float32},
               path)


# ------------------------------------------------------------------------------------------ tokenizers
def real_clip_bpe() -> str:
    """CLIP's merges file as shipped inside the open-clip-torch package (a test dependency; open_clip not imported)."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations, "install the dev extra: open-clip-torch is missing"
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokenizers")
    GPT2TokenizerFast(vocab=f"{GPT2_DATA}/encoder.json", merges=f"{GPT2_DATA}/vocab.bpe").save_pretrained(root / "gpt2")
    bpe = real_clip_bpe()
    clip_tokenizer_from_bpe(bpe).save_pretrained(root / "clip")
    return root


@pytest.fixture(scope="module")
def raw() -> dict[str, torch.Tensor]:
    return release_state_dict()


# ------------------------------------------------------------------------------------------ independent references
def ref_projection(raw: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm(h + linear2(gelu(h))), h = linear1(x): the release's projection, eval mode (no dropout)."""
    h = x.double() @ raw[prefix + "linear1.weight"].double().T
    y = h + F.gelu(h) @ raw[prefix + "linear2.weight"].double().T
    return F.layer_norm(y, y.shape[-1:], raw[prefix + "layer_norm.weight"].double(),
                        raw[prefix + "layer_norm.bias"].double())


def ref_mapper(raw: dict, prefix: str, x: torch.Tensor, heads: int = HEADS) -> torch.Tensor:
    """The release's mapper from its raw tensors: [linear(x) as tokens (or x itself), prefix_const] through
    pre-LayerNorm blocks (bias-free queries; keys = first half of to_keys_values, values = second half;
    ReLU MLP); the output is the last prefix_length positions."""
    t = {k[len(prefix):]: v.double() for k, v in raw.items() if k.startswith(prefix)}
    const = t["prefix_const"]
    length, dim = const.shape
    x = x.double()
    if "linear.weight" in t:
        x = (x @ t["linear.weight"].T + t["linear.bias"]).view(x.shape[0], length, dim)
    h = torch.cat([x, const.expand(x.shape[0], -1, -1)], dim=1)
    b, n, _ = h.shape

    def heads_of(z):
        return z.view(b, n, heads, dim // heads).transpose(1, 2)

    i = 0
    while f"transformer.layers.{i}.norm1.weight" in t:
        p = f"transformer.layers.{i}."
        y = F.layer_norm(h, (dim,), t[p + "norm1.weight"], t[p + "norm1.bias"])
        q = y @ t[p + "attn.to_queries.weight"].T
        kv = y @ t[p + "attn.to_keys_values.weight"].T
        k, v = kv[..., :dim], kv[..., dim:]
        scores = heads_of(q) @ heads_of(k).transpose(-1, -2) / math.sqrt(dim // heads)
        att = (scores.softmax(dim=-1) @ heads_of(v)).transpose(1, 2).reshape(b, n, dim)
        h = h + att @ t[p + "attn.project.weight"].T + t[p + "attn.project.bias"]
        y = F.layer_norm(h, (dim,), t[p + "norm2.weight"], t[p + "norm2.bias"])
        h = h + F.relu(y @ t[p + "mlp.fc1.weight"].T + t[p + "mlp.fc1.bias"]) @ t[p + "mlp.fc2.weight"].T \
            + t[p + "mlp.fc2.bias"]
        i += 1
    assert i == 4
    return h[:, -length:]


def ref_logmel(raw: dict, wave: torch.Tensor, n_fft: int = 1024, hop: int = 320) -> torch.Tensor:
    """torchlibrosa-style front end from the stored kernels and filterbank: (batch, frames, mels) in dB."""
    p = "audio_encoder.base.htsat."
    x = F.pad(wave.double()[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
    re_ = F.conv1d(x, raw[p + "spectrogram_extractor.stft.conv_real.weight"].double(), stride=hop)
    im = F.conv1d(x, raw[p + "spectrogram_extractor.stft.conv_imag.weight"].double(), stride=hop)
    power = (re_ ** 2 + im ** 2).transpose(1, 2)
    mel = power @ raw[p + "logmel_extractor.melW"].double()
    return 10 * torch.log10(mel.clamp(min=1e-10))


def ref_swin_block(raw: dict, p: str, x: torch.Tensor, size: int, heads: int, window: int = 8,
                   shift: int = 0) -> torch.Tensor:
    """One HTSAT Swin block from the release's tensors (fused qkv, its own relative index and attn_mask)."""
    t = {k[len(p):]: v for k, v in raw.items() if k.startswith(p)}
    t = {k: (v.double() if v.is_floating_point() else v) for k, v in t.items()}
    x = x.double()
    b, _, c = x.shape
    n = window * window
    y = F.layer_norm(x, (c,), t["norm1.weight"], t["norm1.bias"]).view(b, size, size, c)
    if shift:
        y = torch.roll(y, (-shift, -shift), dims=(1, 2))
    y = y.view(b, size // window, window, size // window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
    qkv = (y @ t["attn.qkv.weight"].T + t["attn.qkv.bias"]).view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads)
    bias = t["attn.relative_position_bias_table"][t["attn.relative_position_index"].view(-1)]
    scores = scores + bias.view(n, n, heads).permute(2, 0, 1)
    if shift:
        mask = t["attn_mask"]
        scores = (scores.view(b, mask.shape[0], heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c) @ t["attn.proj.weight"].T + t["attn.proj.bias"]
    out = out.view(b, size // window, size // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, size, size, c)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(1, 2))
    x = x + out.reshape(b, size * size, c)
    y = F.layer_norm(x, (c,), t["norm2.weight"], t["norm2.bias"])
    return x + F.gelu(y @ t["mlp.fc1.weight"].T + t["mlp.fc1.bias"]) @ t["mlp.fc2.weight"].T + t["mlp.fc2.bias"]


def fingerprint(t: torch.Tensor) -> tuple:
    """Shape and 257 values spread over the tensor: equal for bit-equal copies, and random data does not collide."""
    flat = t.detach().reshape(-1)
    if flat.numel() == 0:
        return tuple(t.shape), ()
    idx = torch.arange(257) * (flat.numel() - 1) // 256
    return tuple(t.shape), tuple(flat[idx].tolist())


def noisy_tone(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(SR * CLIP_SECONDS)) / SR
    return (0.1 * torch.randn(t.shape, generator=g) + 0.2 * torch.sin(2 * math.pi * 440 * t)).float()




def prefixes_and_features(model: Pengi, wave: torch.Tensor):
    """`model.prefixes` for one 7 s clip, with the HTSAT output and audio embedding seen on the way (one pass)."""
    seen = {}
    hook = model.audio_encoder.projection.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    try:
        audio_prefix, text_prefix = model.prefixes([(wave.numpy(), SR)], [PROMPT])
    finally:
        hook.remove()
    return audio_prefix, text_prefix, seen["x"], seen["y"]


# ------------------------------------------------------------------------------------------ fast tests
def test_key_lists_are_the_published_ones():
    base, no_text = read_tsv(BASE_TSV), read_tsv(NO_TEXT_TSV)
    assert (len(base), len(no_text)) == (656, 453)
    for folder in SHARED_REFERENCE:  # the copies in tests/data must match the reference, where it is at hand
        if (folder / BASE_TSV).exists():
            assert (folder / BASE_TSV).read_text() == (DATA / BASE_TSV).read_text()
            assert (folder / NO_TEXT_TSV).read_text() == (DATA / NO_TEXT_TSV).read_text()


def test_release_state_dict_has_exactly_the_published_keys(raw):
    obsolete = {k for k in raw if is_obsolete(k)}
    assert len(obsolete) == 1 + 24
    got = {k: (tuple(v.shape), v.dtype) for k, v in raw.items() if k not in obsolete}
    assert got == {k: (s, d) for k, s, d in read_tsv(BASE_TSV)}
    sub = no_text_enc_subset(raw, keep_obsolete=False)
    assert {k: (tuple(v.shape), v.dtype) for k, v in sub.items()} == {k: (s, d) for k, s, d in read_tsv(NO_TEXT_TSV)}


def test_release_buffers_are_what_our_model_computes():
    # The masks written with Swin's slicing equal the masks transformers' ClapAudio computes at run time.
    cfg = ClapAudioConfig()
    for size, windows in ((64, 64), (32, 16), (16, 4)):
        layer = ClapAudioLayer(cfg, dim=8, input_resolution=(size, size), num_heads=1, shift_size=4)
        layer.window_size = 8
        mask = swin_shift_mask_loops(size, 8, 4)
        assert mask.shape == (windows, 64, 64)
        assert torch.equal(layer.get_attn_mask(size, size, torch.float32, "cpu"), mask)


def test_release_config_from_shapes(raw):
    base = release_config(raw)
    assert base.compat == "pengi-release" and base.prompt_encoder_config is not None
    assert (base.audio_prefix_length, base.text_prefix_length, base.mapper_layers, base.mapper_mlp_ratio,
            base.d_proj) == (40, 40, 4, 2.0, 1024)
    assert release_config(no_text_enc_subset(raw)).prompt_encoder_config is None
    # The release stops at the first id of " <|endoftext|>" (GPT-2's lone space), as its answers end with it.
    assert base.stop_token_ids == release_config(no_text_enc_subset(raw)).stop_token_ids == [220, 50256]


@pytest.fixture(scope="module")
def no_text_target(raw):
    config = release_config(no_text_enc_subset(raw))
    with torch.device("meta"):
        model = Pengi(config)
    return config, model.state_dict()


def conversion_error(sd, no_text_target) -> str:
    config, target = no_text_target
    with pytest.raises(ConversionError) as err:
        convert_state_dict(sd, config, target)
    return str(err.value)


def test_extra_key_is_reported_by_name(raw, no_text_target):
    sd = no_text_enc_subset(raw)
    sd["audio_encoder.base.htsat.mystery.weight"] = torch.zeros(3)
    sd["caption_decoder.audio_project.transformer.layers.0.attn.mystery.weight"] = torch.zeros(3)
    msg = conversion_error(sd, no_text_target)
    assert "1 release key(s) with no mapping and no drop rule: audio_encoder.base.htsat.mystery.weight" in msg
    assert ("1 key(s) mapped onto names our model does not have: audio_mapper.transformer.layers.0.attn.mystery."
            "weight (from caption_decoder.audio_project.transformer.layers.0.attn.mystery.weight)") in msg


def test_missing_key_is_reported_by_name(raw, no_text_target):
    sd = no_text_enc_subset(raw)
    del sd["caption_decoder.text_project.transformer.layers.3.mlp.fc2.bias"]
    del sd["audio_encoder.base.htsat.layers.2.blocks.4.attn.qkv.weight"]
    msg = conversion_error(sd, no_text_target)
    assert "not filled" in msg
    assert "text_mapper.transformer.layers.3.mlp.fc2.bias" in msg
    for part in ("query", "key", "value"):
        assert f"audio_encoder.base.audio_encoder.layers.2.blocks.4.attention.self.{part}.weight" in msg


def test_base_only_key_in_no_text_enc_is_reported(raw, no_text_target):
    sd = no_text_enc_subset(raw)
    sd["caption_decoder.text_project.linear.weight"] = raw["caption_decoder.text_project.linear.weight"]
    msg = conversion_error(sd, no_text_target)
    assert "text_mapper.linear.weight (from caption_decoder.text_project.linear.weight)" in msg


def test_shape_mismatch_and_wrong_buffers_are_reported(raw, no_text_target):
    sd = no_text_enc_subset(raw)
    sd["caption_decoder.audio_project.prefix_const"] = torch.zeros(10, 768)
    sd["audio_encoder.base.htsat.layers.1.blocks.1.attn_mask"] = torch.zeros(16, 64, 64)
    sd["audio_encoder.base.htsat.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024)
    sd["caption_decoder.gpt.lm_head.weight"] = sd["caption_decoder.gpt.lm_head.weight"] + 1
    msg = conversion_error(sd, no_text_target)
    assert "audio_mapper.prefix_const (from caption_decoder.audio_project.prefix_const): [10, 768]" in msg
    assert "layers.1.blocks.1.attn_mask differs" in msg
    assert "not a periodic-Hann-windowed DFT" in msg
    assert "lm_head.weight differs" in msg


def test_reads_bare_state_dict_and_module_prefix(tmp_path):
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    torch.save(sd, tmp_path / "bare.pth")
    assert load_release_state_dict(tmp_path / "bare.pth").keys() == sd.keys()
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "optimizer": {"state": {}}}, tmp_path / "dp.pth")
    assert load_release_state_dict(tmp_path / "dp.pth").keys() == sd.keys()
    torch.save({"model": {"module.a.weight": torch.ones(2), "a.weight": torch.ones(2)}}, tmp_path / "both.pth")
    with pytest.raises(ConversionError, match="both with and without"):
        load_release_state_dict(tmp_path / "both.pth")


def test_cli_reports_a_broken_checkpoint(tmp_path, tokenizers_dir, caplog):
    torch.save({"model": {"module.caption_decoder.something": torch.ones(1)}}, tmp_path / "bad.pth")
    assert cli_main(["convert", "pengi-original", str(tmp_path / "bad.pth"), str(tmp_path / "out"),
                     "--tokenizers", str(tokenizers_dir)]) == 1
    assert "caption_decoder.something" in caplog.text
    assert not (tmp_path / "out").exists()
    assert cli_main(["convert", "pengi-original", str(tmp_path / "missing.pth"), str(tmp_path / "out")]) == 2
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert cli_main(["convert", "pengi-original", str(tmp_path / "junk.pth"), str(tmp_path / "out")]) == 1
    assert "cannot be read as a torch checkpoint" in caplog.text


def test_convert_subcommand_wiring():
    args = build_parser().parse_args(["convert", "pengi-original", "base.pth", "out", "--tokenizers", "tok"])
    assert (args.source, args.checkpoint, args.out_dir, args.tokenizers) == ("pengi-original", "base.pth", "out", "tok")


def test_clip_tokenizer_from_real_bpe():
    bpe = real_clip_bpe()
    tok = clip_tokenizer_from_bpe(bpe)
    assert len(tok) == 49408 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]  # known CLIP ids
    # open_clip's own SimpleTokenizer, loaded from its file without importing the open_clip package.
    spec = importlib.util.spec_from_file_location("open_clip_simple_tokenizer",
                                                  os.path.join(os.path.dirname(bpe), "tokenizer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.SimpleTokenizer(bpe)
    for text in ["generate audio caption", "Question: what animal is making this sound?", "this is a sound of",
                 "generate metadata", "Naïve café  12345 <tag> don't   stop", "dog-bark; rain... & thunder!!"]:
        want = [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]
        assert tok(text)["input_ids"] == want, text


# ------------------------------------------------------------------------------------------ whole conversions
def check_loaded_tensors(model: Pengi, raw: dict, out_dir: Path) -> None:
    """No missing or unexpected keys in the saved file, and every tensor of the loaded model holds release data."""
    with safe_open(str(out_dir / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    with torch.device("meta"):
        expected = set(Pengi(model.config).state_dict()) - {"lm.lm_head.weight"}  # tied to lm.transformer.wte
    assert saved == expected
    prints = {fingerprint(v) for v in raw.values()}
    prints |= {fingerprint(c) for k, v in raw.items() if k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias")
               for c in v.chunk(3)}
    state = model.state_dict()
    assert torch.equal(state["audio_encoder.frontend.window"], torch.hann_window(1024, periodic=True))
    strangers = [k for k, v in state.items() if k != "audio_encoder.frontend.window" and fingerprint(v) not in prints]
    assert not strangers, f"tensors not taken from the checkpoint: {strangers[:10]}"
    # A few correspondences by name (the functional checks below cover the Swin blocks, projections, mappers).
    a, r = "audio_encoder.base.audio_encoder.", "audio_encoder.base.htsat."
    same = {a + "batch_norm.running_var": r + "bn0.running_var", a + "norm.weight": r + "norm.weight",
            a + "patch_embed.proj.weight": r + "patch_embed.proj.weight",
            a + "layers.2.downsample.reduction.weight": r + "layers.2.downsample.reduction.weight",
            a + "layers.2.blocks.5.attention.self.value.bias": None,
            "audio_encoder.frontend.mel_filters": r + "logmel_extractor.melW",
            "lm.transformer.h.7.attn.c_attn.weight": "caption_decoder.gpt.transformer.h.7.attn.c_attn.weight",
            "lm.lm_head.weight": "caption_decoder.gpt.transformer.wte.weight"}
    same[a + "layers.2.blocks.5.attention.self.value.bias"] = r + "layers.2.blocks.5.attn.qkv.bias"
    for ours, theirs in same.items():
        want = raw[theirs].chunk(3)[2] if ours.endswith("value.bias") else raw[theirs]
        assert torch.equal(state[ours], want), ours


@pytest.fixture(scope="class")
def base_model(raw, tokenizers_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    save_release(raw, tmp / "base.pth", module_prefix=True)
    report = convert(tmp / "base.pth", tmp / "converted", tokenizers_dir)
    (tmp / "base.pth").unlink()
    model = Pengi.from_pretrained(tmp / "converted").eval()
    return model, tmp / "converted", report


class TestBase:
    """base.pth (CLIP text encoder), saved as DataParallel wrote it (``module.`` on every key)."""

    def test_loads_with_every_key_from_the_checkpoint(self, base_model, raw):
        model, out_dir, report = base_model
        check_loaded_tensors(model, raw, out_dir)
        dropped = {k for keys in report.dropped.values() for k in keys}
        assert {k for k in raw if is_obsolete(k) or ".tscam_conv." in k or ".head." in k
                or "attn_mask" in k or "stft" in k} == dropped
        assert model.config.compat == "pengi-release"
        assert (out_dir / "tokenizer_config.json").exists() and (out_dir / "prompt_tokenizer").is_dir()

    def test_front_end_uses_the_stored_filterbank(self, base_model, raw):
        model = base_model[0]
        wave = noisy_tone()[None]
        ours = model.audio_encoder.frontend(wave)[:, 0]
        assert ours.shape == (1, 965, 64)
        torch.testing.assert_close(ours.double(), ref_logmel(raw, wave), atol=2e-3, rtol=0)
        cfg = model.config
        default = AF.melscale_fbanks(513, cfg.f_min, cfg.f_max, 64, cfg.sample_rate, norm="slaney", mel_scale="slaney")
        assert not torch.allclose(model.audio_encoder.frontend.mel_filters, default)

    def test_swin_blocks_match_the_release_tensors(self, base_model, raw):
        model = base_model[0]
        blocks = model.audio_encoder.base.audio_encoder.layers[0].blocks
        seen = {}
        hooks = [blocks[0].register_forward_hook(lambda m, a, o: seen.update(x0=a[0], y0=o[0])),
                 blocks[1].register_forward_hook(lambda m, a, o: seen.update(y1=o[0]))]
        with torch.inference_mode():
            model.audio_embedding(noisy_tone()[None])
        for h in hooks:
            h.remove()
        p = "audio_encoder.base.htsat.layers.0.blocks."
        y0 = ref_swin_block(raw, p + "0.", seen["x0"], size=64, heads=4)
        torch.testing.assert_close(seen["y0"].double(), y0, atol=1e-4, rtol=1e-4)
        y1 = ref_swin_block(raw, p + "1.", seen["y0"], size=64, heads=4, shift=4)  # shifted, with the stored mask
        torch.testing.assert_close(seen["y1"].double(), y1, atol=1e-4, rtol=1e-4)

    def test_prefixes_follow_the_release(self, base_model, raw):
        model = base_model[0]
        audio_prefix, text_prefix, features, embedding = prefixes_and_features(model, noisy_tone())
        # audio: projection from the raw tensors, L2-normalised, then the mapper
        ref_embedding = ref_projection(raw, "audio_encoder.projection.", features)
        torch.testing.assert_close(embedding.double(), ref_embedding, atol=1e-5, rtol=1e-5)
        ref_audio = ref_mapper(raw, "caption_decoder.audio_project.", F.normalize(ref_embedding, dim=-1))
        torch.testing.assert_close(audio_prefix.double(), ref_audio, atol=1e-5, rtol=1e-5)
        # text: CLIP tokens padded to 40, pooled, clip_text_projection, projection, NOT normalised, mapper
        enc = model.processor.prompts([PROMPT])
        ids = enc["prompt_input_ids"]
        assert ids.shape == (1, 40)
        with torch.inference_mode():
            pooled = model.prompt_encoder.pool(ids, enc["prompt_attention_mask"])
        text = ref_projection(raw, "caption_encoder.projection.",
                              pooled.double() @ raw["caption_encoder.clip_text_projection.weight"].double().T)
        assert not torch.allclose(text.norm(dim=-1), torch.ones(1, dtype=torch.float64), atol=1e-2)
        ref_text = ref_mapper(raw, "caption_decoder.text_project.", text)
        torch.testing.assert_close(text_prefix.double(), ref_text, atol=1e-5, rtol=1e-5)
        normalised = ref_mapper(raw, "caption_decoder.text_project.", F.normalize(text, dim=-1))
        assert not torch.allclose(text_prefix.double(), normalised, atol=1e-3)
        # the release's training forward normalised it: so does ours on the training path (`forward`)
        with torch.inference_mode():
            trained = model.text_prefix(text.float(), enc["prompt_attention_mask"], training_path=True)
        torch.testing.assert_close(trained.double(), normalised, atol=1e-5, rtol=1e-5)

    def test_generates_strings(self, base_model):
        model = base_model[0]
        out = model.generate([(noisy_tone().numpy(), SR)], PROMPT, max_new_tokens=3)
        assert len(out) == 1 and isinstance(out[0], str)


@pytest.fixture(scope="class")
def no_text_model(raw, tokenizers_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("no_text_enc")
    save_release(no_text_enc_subset(raw), tmp / "base_no_text_enc.pth", module_prefix=False)
    assert cli_main(["convert", "pengi-original", str(tmp / "base_no_text_enc.pth"), str(tmp / "converted"),
                     "--tokenizers", str(tokenizers_dir)]) == 0
    (tmp / "base_no_text_enc.pth").unlink()
    return Pengi.from_pretrained(tmp / "converted").eval(), tmp / "converted"


class TestNoTextEnc:
    """base_no_text_enc.pth (prompts embedded by GPT-2), no ``module.`` prefix, converted through the CLI entry."""

    def test_loads_with_every_key_from_the_checkpoint(self, no_text_model, raw):
        model, out_dir = no_text_model
        check_loaded_tensors(model, no_text_enc_subset(raw), out_dir)
        assert model.prompt_encoder is None and not (out_dir / "prompt_tokenizer").exists()

    def test_prefixes_follow_the_release(self, no_text_model, raw):
        model = no_text_model[0]
        audio_prefix, text_prefix, features, _ = prefixes_and_features(model, noisy_tone(1))
        ref_audio = ref_mapper(raw, "caption_decoder.audio_project.",
                               F.normalize(ref_projection(raw, "audio_encoder.projection.", features), dim=-1))
        torch.testing.assert_close(audio_prefix.double(), ref_audio, atol=1e-5, rtol=1e-5)
        # prompt + " <|endoftext|>" in GPT-2 ids, padded with 0 ("!") to 40, embedded by wte, mapped token-wise
        gpt2 = GPT2TokenizerFast(vocab=f"{GPT2_DATA}/encoder.json", merges=f"{GPT2_DATA}/vocab.bpe")
        ids = gpt2(PROMPT + " <|endoftext|>")["input_ids"]
        assert ids[-1] == 50256 and len(ids) < 40
        ids = torch.tensor([ids + [0] * (40 - len(ids))])
        assert torch.equal(model.processor.prompts([PROMPT])["prompt_input_ids"], ids)
        tokens = raw["caption_decoder.gpt.transformer.wte.weight"][ids]
        ref_text = ref_mapper(no_text_enc_subset(raw), "caption_decoder.text_project.", tokens)  # no linear
        torch.testing.assert_close(text_prefix.double(), ref_text, atol=1e-5, rtol=1e-5)

    def test_generates_strings(self, no_text_model):
        out = no_text_model[0].generate([(noisy_tone().numpy(), SR)], "generate metadata", max_new_tokens=3,
                                        num_beams=2)
        assert len(out) == 1 and isinstance(out[0], str)
