"""SLAP folders saved before the teacher was torch's AveragedModel and the caption decoder transformers' GPT-2.

The old layout is written here from a model of today's: the same config.json (its fields did not change), the
teacher's tensors under their old names without the update count, and the old decoder's tensor names and
shapes (pengi's own RoPE decoder: embedding, context projection, pre-norm blocks with cross-attention, norm).
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from pengi import SLAP
from pengi.errors import PengiInputError
from pengi.models.slap.legacy_layout import legacy_key_mapping, saved_keys

from .test_slap import SR, TOL, chirp, make_slap

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained("pengi/default_model/tokenizer")


def old_decoder_tensors(vocab: int, dim: int, context: int, mlp: int, layers: int) -> dict[str, torch.Tensor]:
    """The tensors of the hand-written caption decoder SLAP had before GPT-2, by their old names."""
    shapes = {"embed.weight": (vocab, dim), "context.weight": (dim, context), "context.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(layers):
        for norm in ("norm1", "norm_cross", "norm2"):
            shapes.update({f"blocks.{i}.{norm}.weight": (dim,), f"blocks.{i}.{norm}.bias": (dim,)})
        for attn in ("attn", "cross"):
            shapes.update({f"blocks.{i}.{attn}.q.weight": (dim, dim), f"blocks.{i}.{attn}.q.bias": (dim,),
                           f"blocks.{i}.{attn}.kv.weight": (2 * dim, dim), f"blocks.{i}.{attn}.kv.bias": (2 * dim,),
                           f"blocks.{i}.{attn}.proj.weight": (dim, dim), f"blocks.{i}.{attn}.proj.bias": (dim,)})
        shapes.update({f"blocks.{i}.mlp.fc1.weight": (mlp, dim), f"blocks.{i}.mlp.fc1.bias": (mlp,),
                       f"blocks.{i}.mlp.fc2.weight": (dim, mlp), f"blocks.{i}.mlp.fc2.bias": (dim,)})
    return {f"decoder.{k}": torch.randn(shape) for k, shape in shapes.items()}


def save_in_old_layout(model: SLAP, folder) -> None:
    model.save_pretrained(folder)
    new = load_file(os.path.join(folder, WEIGHTS))
    old = {k.replace("teacher.module.", "teacher."): v for k, v in new.items()
           if k != "teacher.n_averaged" and not k.startswith("decoder.")}
    if model.decoder is not None:
        c = model.config
        old.update(old_decoder_tensors(c.vocab_size, c.caption_hidden_size, c.audio_config.hidden_size,
                                       int(c.caption_hidden_size * c.audio_config.mlp_ratio), c.caption_layers))
    save_file(old, os.path.join(folder, WEIGHTS), metadata={"format": "pt"})


def trained_a_little(tokenizer, **overrides) -> SLAP:
    """A model whose teacher is an average, not a copy, of its student."""
    model = make_slap(tokenizer, ema_decay=0.5, **overrides)
    with torch.no_grad():
        for p in model.tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.ema_step()
    return model


AUDIO = [(chirp(0.7), SR), (chirp(2.1, seed=1), SR)]


def test_old_teacher_layout_loads_exactly_and_resaves_in_todays(tokenizer, tmp_path):
    model = trained_a_little(tokenizer, caption_weight=0)
    save_in_old_layout(model, tmp_path / "old")
    assert "teacher.blocks.0.mlp.fc1.weight" in saved_keys(tmp_path / "old")
    loaded = SLAP.from_pretrained(tmp_path / "old").eval()
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k != "teacher.n_averaged")
    assert int(loaded.teacher.n_averaged) == 1  # an average already: the next step averages, it does not copy
    assert torch.allclose(loaded.embed_audio(AUDIO), model.embed_audio(AUDIO), atol=TOL)
    before = loaded.teacher.module.patch_embed.weight.clone()
    loaded.ema_step()
    expected = 0.5 * before + 0.5 * loaded.tower.patch_embed.weight
    assert torch.allclose(loaded.teacher.module.patch_embed.weight, expected)

    loaded.save_pretrained(tmp_path / "resaved")
    keys = saved_keys(tmp_path / "resaved")
    assert "teacher.n_averaged" in keys and not any(k.startswith("teacher.blocks") for k in keys)
    assert legacy_key_mapping(tmp_path / "resaved") is None
    again = SLAP.from_pretrained(tmp_path / "resaved")
    assert int(again.teacher.n_averaged) == 2
    assert torch.equal(again.teacher.module.patch_embed.weight, loaded.teacher.module.patch_embed.weight)


def test_old_caption_decoder_is_refused_and_the_rest_loads(tokenizer, tmp_path):
    model = trained_a_little(tokenizer)
    save_in_old_layout(model, tmp_path / "old")
    with pytest.raises(PengiInputError, match="GPT-2.*caption_weight=0"):
        SLAP.from_pretrained(tmp_path / "old")
    towers = SLAP.from_pretrained(tmp_path / "old", caption_weight=0).eval()
    assert towers.decoder is None and towers.config.caption_weight == 0
    assert torch.allclose(towers.embed_audio(AUDIO), model.embed_audio(AUDIO), atol=TOL)
    assert torch.equal(towers.teacher.module.norm.weight, model.teacher.module.norm.weight)

    # docs/slap.md: a new decoder on the old towers, to train with the recipe's model.init_from
    config = towers.config
    config.caption_weight = 1.0
    fresh = SLAP(config)
    result = fresh.load_state_dict(towers.state_dict(), strict=False)
    assert result.missing_keys and all(k.startswith("decoder.") for k in result.missing_keys)
    assert not result.unexpected_keys
    fresh.processor = towers.processor
    fresh.save_pretrained(tmp_path / "new-decoder")
    assert isinstance(SLAP.from_pretrained(tmp_path / "new-decoder").caption(AUDIO[0], max_length=3)[0], str)


def test_todays_folders_need_no_mapping(tokenizer, tmp_path):
    make_slap(tokenizer).save_pretrained(tmp_path / "new")
    assert legacy_key_mapping(tmp_path / "new") is None
    assert legacy_key_mapping(tmp_path / "nothing-here") is None
