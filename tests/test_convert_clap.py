"""Converting msclap (2022, 2023, clapcap) and LAION-CLAP checkpoints, with numerical parity.

msclap's own model code (the PyPI package, installed with ``--no-deps``: see README) builds each release's model
with random weights, which is saved in the published file format ({"model": state_dict} via torch.save) and
converted; our model must then give msclap's embeddings, logits and greedy captions. The text towers are small
(saved locally and loaded by msclap with ``from_pretrained``, as it loads "bert-base-uncased" or "gpt2"); the
audio towers are the published full-size CNN14 and HTSAT, which msclap hard-codes. LAION-CLAP is compared with
transformers' ``ClapModel`` and ``ClapFeatureExtractor`` on a small random model.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    BertConfig,
    BertModel,
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    RobertaTokenizerFast,
)

from pengi import Pengi
from pengi.cli import main as cli_main
from pengi.conversion import ConversionError
from pengi.models.clap.convert_laion import convert_laion
from pengi.models.clap.convert_msclap import convert_msclap
from pengi.models.clap.modeling_clap import CLAP
from pengi.models.clap.processing_clap import CLAPProcessor
from pengi.presets import clap_tiny, tiny

from .conftest import GPT2_DATA, make_tiny

try:  # the reference: msclap's own model code
    from msclap.CLAPWrapper import CLAPWrapper
    from msclap.models.clap import CLAP as MsClap
    from msclap.models.mapper import ClapCaptionModel
except ModuleNotFoundError as err:  # not skipped: the parity tests must run wherever the suite runs
    raise ModuleNotFoundError(f"{err}: the msclap parity tests need `pip install --no-deps msclap==1.3.4` "
                              "(its transformers<5 pin cannot be resolved with pengi's; see README)") from err

TOL = 1e-4
SR = 44100
TEXTS = ["a dog barks", "rain falls on a metal roof while thunder rumbles", "people talk!"]
MSCLAP_CONFIGS = Path(__import__("msclap").__file__).parent / "configs"


# ------------------------------------------------------------------------------------------ msclap side
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Move every trained weight off its initial value (so a swapped or missed tensor shows) and give the batch
    norms non-trivial running statistics, as trained weights have. The front ends' fixed STFT kernels and mel
    filterbanks stay as built."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "spectrogram_extractor" not in name and "logmel_extractor" not in name:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1000)


def gpt2_tokenizer_with_pad() -> GPT2TokenizerFast:
    """GPT-2's real BPE with "!" as the pad token, as msclap's wrapper sets it up."""
    tok = GPT2TokenizerFast(vocab=f"{GPT2_DATA}/encoder.json", merges=f"{GPT2_DATA}/vocab.bpe")
    tok.add_special_tokens({"pad_token": "!"})
    return tok


@pytest.fixture(scope="module")
def text_models(tmp_path_factory, bert_tokenizer) -> dict[str, Path]:
    """Small BERT and GPT-2 folders that msclap loads with from_pretrained (it picks GPT-2 pooling when the name
    contains "gpt", [CLS] pooling otherwise)."""
    torch.manual_seed(0)
    bert_dir = tmp_path_factory.mktemp("bert")
    BertModel(BertConfig(vocab_size=len(bert_tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=256, max_position_embeddings=128)).save_pretrained(bert_dir)
    gpt_dir = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(n_embd=128, n_layer=2, n_head=2, n_positions=256)).save_pretrained(gpt_dir)
    assert "gpt" not in str(bert_dir) and "clip" not in str(bert_dir) and "gpt" in gpt_dir.name
    return {"bert": bert_dir, "gpt2": gpt_dir}


def msclap_model(version: str, text_dir: Path) -> MsClap:
    """msclap's CLAP as its wrapper builds it from the release's yml, with our small text model."""
    args = yaml.safe_load((MSCLAP_CONFIGS / f"config_{'2023' if version == 'clapcap' else version}.yml").read_text())
    return MsClap(audioenc_name=args["audioenc_name"], sample_rate=args["sampling_rate"],
                  window_size=args["window_size"], hop_size=args["hop_size"], mel_bins=args["mel_bins"],
                  fmin=args["fmin"], fmax=args["fmax"], classes_num=args["num_classes"], out_emb=args["out_emb"],
                  text_model=str(text_dir), transformer_embed_dim=128, d_proj=args["d_proj"])


def wrapper(version: str, model: torch.nn.Module, tokenizer) -> CLAPWrapper:
    """msclap's CLAPWrapper around a model built here (its __init__ would download the weights)."""
    w = CLAPWrapper.__new__(CLAPWrapper)
    w.args = argparse.Namespace(**yaml.safe_load((MSCLAP_CONFIGS / f"config_{version}.yml").read_text()))
    # msclap calls tokenizer.encode_plus (transformers 4); in transformers 5 that is the tokenizer's __call__.
    tokenizer.encode_plus = tokenizer.__call__
    w.use_cuda, w.tokenizer = False, tokenizer
    w.np_str_obj_array_pattern = re.compile(r"[SaUO]")
    w.default_collate_err_msg_format = "default_collate: {}"
    if version == "clapcap":
        w.clapcap = model
    else:
        w.clap = model
        w.token_keys = (["input_ids", "attention_mask"] if "gpt" in w.args.text_model
                        else ["input_ids", "token_type_ids", "attention_mask"])
    return w


def save_release(model: torch.nn.Module, path: Path, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """The published file format: a pickle whose "model" entry is the state dict."""
    sd = dict(model.state_dict())
    sd.update(extra or {})
    torch.save({"model": sd}, path)
    return path


def noise(seconds: float, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(n, int(seconds * SR), generator=g)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory, bert_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    bert_tokenizer.save_pretrained(root / "bert")
    GPT2TokenizerFast(vocab=f"{GPT2_DATA}/encoder.json", merges=f"{GPT2_DATA}/vocab.bpe").save_pretrained(root / "gpt2")
    return {"2022": root / "bert", "2023": root / "gpt2", "clapcap": root / "gpt2"}


# ------------------------------------------------------------------------------------------ msclap 2022
@pytest.fixture(scope="module")
def msclap_2022(text_models, tokenizer_dirs, bert_tokenizer, tmp_path_factory):
    torch.manual_seed(1)
    theirs = msclap_model("2022", text_models["bert"]).eval()
    randomize(theirs, 1)
    with torch.no_grad():
        theirs.logit_scale.fill_(math.log(1 / 0.03))
    tmp = tmp_path_factory.mktemp("msclap2022")
    obsolete = {"caption_encoder.base.embeddings.position_ids": torch.arange(128)[None]}  # transformers 4.x wrote it
    path = save_release(theirs, tmp / "CLAP_weights_2022.pth", obsolete)
    report = convert_msclap("2022", path, tmp / "converted", tokenizer_dirs["2022"])
    ours = CLAP.from_pretrained(tmp / "converted").eval()
    return theirs, ours, report, wrapper("2022", theirs, bert_tokenizer)


def test_2022_cnn14_bert_parity(msclap_2022):
    theirs, ours, report, w = msclap_2022
    assert ours.config.audio_config.model_type == "pengi_cnn14" and ours.config.text_pooling == "cls"
    dropped = {k for keys in report.dropped.values() for k in keys}
    assert {"audio_encoder.base.fc_audioset.weight", "caption_encoder.base.embeddings.position_ids",
            "audio_encoder.base.spectrogram_extractor.stft.conv_real.weight"} <= dropped
    torch.testing.assert_close(ours.audio_encoder.frontend.mel_filters,
                               theirs.audio_encoder.base.logmel_extractor.melW, rtol=0, atol=0)
    waves = noise(5.0)
    with torch.no_grad():
        ref_audio = w._get_audio_embeddings(waves[:, None, :])
        got_audio = ours.audio_encoder(waves)
        ref_text = w.get_text_embeddings(TEXTS)
        got_text = ours.text_encoder(**ours.processor.texts(TEXTS))
        ref_logits = w.compute_similarity(ref_audio, ref_text)
    assert max_diff(got_audio, ref_audio) < TOL
    assert max_diff(got_text, ref_text) < TOL
    assert max_diff(ours.logits(got_audio, got_text), ref_logits) < 1e-3 * ref_logits.abs().max()
    # Zero-shot from user inputs ((array, rate) pairs through our processor) = msclap's softmax over its logits.
    probs = ours.zero_shot([(w.numpy(), SR) for w in waves], TEXTS, template="{label}")
    assert max_diff(probs, ref_logits.softmax(dim=-1)) < TOL


# ------------------------------------------------------------------------------------------ msclap 2023
@pytest.fixture(scope="module")
def msclap_2023(text_models, tokenizer_dirs, tmp_path_factory):
    torch.manual_seed(2)
    theirs = msclap_model("2023", text_models["gpt2"]).eval()
    randomize(theirs, 2)
    tmp = tmp_path_factory.mktemp("msclap2023")
    obsolete = {f"caption_encoder.base.h.{i}.attn.{name}": torch.ones(1) for i in range(2)
                for name in ("bias", "masked_bias")}
    path = save_release(theirs, tmp / "CLAP_weights_2023.pth", obsolete)
    assert cli_main(["convert", "msclap", "2023", str(path), str(tmp / "converted"),
                     "--tokenizer-dir", str(tokenizer_dirs["2023"])]) == 0
    ours = CLAP.from_pretrained(tmp / "converted").eval()
    return theirs, ours, wrapper("2023", theirs, gpt2_tokenizer_with_pad()), tmp / "converted"


def test_2023_htsat_gpt2_parity(msclap_2023):
    theirs, ours, w, _ = msclap_2023
    assert ours.config.compat == "msclap" and ours.processor.tokenizer.pad_token == "!"
    waves = noise(7.0, seed=3)
    with torch.no_grad():
        ref_audio = w._get_audio_embeddings(waves[:, None, :])
        got_audio = ours.audio_encoder(waves)
        ref_text = w.get_text_embeddings(TEXTS)  # " <|endoftext|>" appended, padded to 77 with "!"
        got_text = ours.text_encoder(**ours.processor.texts(TEXTS))
        ref_logits = w.compute_similarity(ref_audio, ref_text)
    assert max_diff(got_audio, ref_audio) < TOL
    assert max_diff(got_text, ref_text) < TOL
    assert max_diff(ours.embed_text(TEXTS), torch.nn.functional.normalize(ref_text, dim=-1)) < TOL
    assert max_diff(ours.logits(got_audio, got_text), ref_logits) < 1e-3 * ref_logits.abs().max()


def test_2023_corrected_pooling_differs_only_for_texts_with_the_pad_character(msclap_2023):
    """msclap pools at (number of non-zero ids - 1): for "people talk!" that is not the end-of-text token.
    compat=None pools at the true last token."""
    _, _, w, folder = msclap_2023
    fixed = CLAP.from_pretrained(folder, compat=None).eval()
    with torch.no_grad():
        ref = w.get_text_embeddings(TEXTS)
        got = fixed.text_encoder(**fixed.processor.texts(TEXTS))
    assert max_diff(got[:2], ref[:2]) < TOL
    assert max_diff(got[2:], ref[2:]) > 1e-2


# ------------------------------------------------------------------------------------------ clapcap
@pytest.fixture(scope="module")
def clapcap(text_models, tokenizer_dirs, tmp_path_factory):
    torch.manual_seed(4)
    args = yaml.safe_load((MSCLAP_CONFIGS / "config_clapcap.yml").read_text())
    theirs = ClapCaptionModel(msclap_model("clapcap", text_models["gpt2"]), str(text_models["gpt2"]),
                              args["prefix_length"], args["prefix_length_clip"], args["d_proj"], args["num_layers"],
                              args["normalize_prefix"], args["mapping_type"], True, True).eval()
    randomize(theirs, 4)
    theirs.gpt.tie_weights()
    tmp = tmp_path_factory.mktemp("clapcap")
    path = save_release(theirs, tmp / "clapcap_weights_2023.pth")
    report = convert_msclap("clapcap", path, tmp / "converted", tokenizer_dirs["clapcap"])
    ours = Pengi.from_pretrained(tmp / "converted").eval()
    return theirs, ours, report, wrapper("clapcap", theirs, gpt2_tokenizer_with_pad())


def test_clapcap_prefix_and_greedy_captions(clapcap):
    theirs, ours, report, w = clapcap
    assert ours.config.text_prefix_length == 0 and ours.text_mapper is None and ours.prompt_encoder is None
    assert ours.config.mapper_layers == 8 and ours.config.audio_prefix_length == 40
    # msclap's stop token is the first id of " <|endoftext|>": GPT-2's lone space.
    assert w.tokenizer.encode(" <|endoftext|>")[0] in ours.config.stop_token_ids
    waves = noise(7.0, seed=5)
    with torch.no_grad():  # generate_caption's steps, on tensors (its file reading aside)
        ref_embed = theirs.clap(waves)[0]
        ref_prefix = theirs.clap_project(ref_embed / ref_embed.norm(2, -1).reshape(-1, 1)).view(
            -1, w.args.prefix_length, theirs.gpt.transformer.wte.weight.shape[1])
        got_embed = ours.audio_embedding(waves)
        got_prefix = ours.prefix(waves, **ours.processor.prompts(["ignored"] * 2))
    assert max_diff(got_embed, ref_embed) < TOL
    assert max_diff(got_prefix, ref_prefix) < TOL
    n = 12
    ids, _ = ours.generate_from_prefix(got_prefix, num_beams=1, max_new_tokens=n)
    ours_text = ours.processor.decode(ids)
    theirs_text = [w._generate_beam(embed=ref_prefix[i:i + 1], beam_size=1, entry_length=n)[0] for i in range(2)]
    assert [t.strip() for t in theirs_text] == ours_text
    assert all(len(t) > 0 for t in ours_text)
    with pytest.warns(UserWarning, match="reads no prompt"):
        captions = ours.generate([(w, SR) for w in waves], "question: what is it?", num_beams=1, max_new_tokens=n)
    assert captions == ours_text  # the prompt is ignored: the same captions


def test_clapcap_key_errors_are_named(clapcap, tmp_path, tokenizer_dirs):
    theirs = clapcap[0]
    sd = dict(theirs.state_dict())
    del sd["clap_project.transformer.layers.7.mlp.fc2.bias"]
    sd["clap.base.htsat.mystery.weight"] = torch.zeros(2)
    torch.save({"model": sd}, tmp_path / "broken.pth")
    with pytest.raises(ConversionError) as err:
        convert_msclap("clapcap", tmp_path / "broken.pth", tmp_path / "out", tokenizer_dirs["clapcap"])
    assert "clap.base.htsat.mystery.weight" in str(err.value)
    assert "audio_mapper.transformer.layers.7.mlp.fc2.bias" in str(err.value)
    with pytest.raises(ConversionError, match="not an msclap 2022 checkpoint.*looks like msclap clapcap"):
        convert_msclap("2022", tmp_path / "broken.pth", tmp_path / "out", tokenizer_dirs["2022"])


# ------------------------------------------------------------------------------------------ LAION-CLAP
@pytest.fixture(scope="module")
def laion(tmp_path_factory):
    """A small random transformers ClapModel folder with a RoBERTa-style byte-level BPE trained here."""
    folder = tmp_path_factory.mktemp("laion")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barks", "rain on a roof", "this is a sound of a siren", "people talk"] * 5,
                            vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tok = RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    assert tok.pad_token_id == 1 and len(tok("a dog barks", add_special_tokens=False)["input_ids"]) == 3
    torch.manual_seed(6)
    text = ClapTextConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=80, projection_dim=24, pad_token_id=1)
    audio = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                            patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
                            enable_fusion=False, projection_dim=24)
    hf = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=24)).eval()
    randomize(hf, 6)
    with torch.no_grad():
        hf.logit_scale_a.fill_(math.log(30.0))
        hf.logit_scale_t.fill_(math.log(20.0))
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                              fft_window_size=512, frequency_min=50, frequency_max=8000, truncation="rand_trunc",
                              padding="repeatpad")
    hf.save_pretrained(folder)
    fe.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert cli_main(["convert", "laion-clap", str(folder), str(folder / "converted")]) == 0
    return hf, fe, tok, CLAP.from_pretrained(folder / "converted").eval()


def test_laion_parity_from_the_same_waveform(laion):
    hf, fe, tok, ours = laion
    assert ours.config.projection == "mlp" and ours.config.text_config.model_type == "roberta"
    g = torch.Generator().manual_seed(7)
    waves = [0.3 * torch.randn(16000, generator=g), 0.3 * torch.randn(5000, generator=g)]  # full, short (padded)
    features = fe([w.numpy() for w in waves], sampling_rate=16000, return_tensors="pt")["input_features"]
    clips = torch.stack([ours.processor.clip(w) for w in waves])
    texts = ["a dog barks", "this is a sound of rain on a roof"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours_mel = ours.audio_encoder.frontend(clips)
        ref_audio = hf.get_audio_features(input_features=features).pooler_output
        ref_text = hf.get_text_features(**enc).pooler_output
        ref_logits = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        input_features=features).logits_per_audio
        got_audio = ours.audio_embedding(clips)
    got_text = ours.embed_text(texts)
    assert max_diff(ours_mel, features) < TOL  # dB: torch float32 against transformers' numpy front end
    assert max_diff(got_audio, ref_audio) < TOL
    assert max_diff(got_text, ref_text) < TOL
    assert max_diff(ours.logits(got_audio, got_text), ref_logits) < 1e-3


def test_laion_fused_model_is_refused(tmp_path):
    ClapConfig(audio_config={"enable_fusion": True}).save_pretrained(tmp_path)
    with pytest.raises(ConversionError, match="fused"):
        convert_laion(tmp_path, tmp_path / "out")


# ------------------------------------------------------------------------------------------ options they need
def test_stop_token_ids_end_generation(gpt2_tokenizer):
    model = make_tiny(gpt2_tokenizer)
    prefix = model.prefix(torch.zeros(1, model.config.clip_samples), **model.processor.prompts(["generate"]))
    ids, _ = model.generate_from_prefix(prefix, num_beams=1, max_new_tokens=8)
    stop = int(ids[0, 2])
    first = ids[0].tolist().index(stop)
    model.config.stop_token_ids = [stop]
    stopped, _ = model.generate_from_prefix(prefix, num_beams=1, max_new_tokens=8)
    assert stopped[0].tolist() == ids[0, :first + 1].tolist()


def test_config_options_are_checked(gpt2_tokenizer):
    with pytest.raises(ValueError, match="reads no prompt"):
        tiny(text_prefix_length=0, prompt_encoder_config=BertConfig(hidden_size=32, num_hidden_layers=1,
                                                                   num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="projection"):
        clap_tiny(100, projection="linear")
    with pytest.raises(ValueError, match="compat"):
        clap_tiny(100, compat="laion")
    with pytest.raises(ValueError, match="pad with id 0"):
        CLAPProcessor(clap_tiny(100, compat="msclap", text_pooling="last"), gpt2_tokenizer)  # pads with 50256
