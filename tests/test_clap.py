"""CLAP: the contrastive loss, the model's API, saving and loading, and CNN14."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pengi import CLAP, CLAPConfig, Cnn14Config, PengiInputError
from pengi.modules.contrastive import contrastive_logits, contrastive_loss
from pengi.presets import clap_tiny
from tests.conftest import make_clap, make_tiny, tone


@pytest.fixture
def clap(gpt2_tokenizer) -> CLAP:
    return make_clap(gpt2_tokenizer)


def clips(n: int, seconds: float = 1.0, sr: int = 16000) -> list[tuple[np.ndarray, int]]:
    return [(tone(200 * (i + 1), seconds, sr), sr) for i in range(n)]


# ----------------------------------------------------------------------------- the loss
def test_aligned_pairs_give_low_loss_and_mismatched_pairs_high():
    torch.manual_seed(0)
    audio = torch.randn(16, 32)
    scale = torch.tensor(math.log(1 / 0.07))
    aligned = contrastive_loss(audio, audio + 0.01 * torch.randn(16, 32), scale)
    shuffled = contrastive_loss(audio, audio[torch.randperm(16)], scale)
    assert aligned < 0.01
    assert shuffled > math.log(16)  # worse than knowing nothing (uniform over 16 candidates)


def test_loss_is_symmetric_in_audio_and_text():
    torch.manual_seed(1)
    a, t, s = torch.randn(8, 16), torch.randn(8, 16), torch.tensor(2.0)
    assert torch.allclose(contrastive_loss(a, t, s), contrastive_loss(t, a, s))


def test_scaled_logits_are_clamped_at_100():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    logits = contrastive_logits(a, a, torch.tensor(20.0))  # exp(20) is far above the clamp
    assert torch.allclose(logits.diagonal(), torch.full((4,), 100.0), atol=1e-4)
    assert logits.max() <= 100.0 + 1e-4


def test_temperature_starts_at_the_papers_value(clap):
    assert clap.logit_scale.exp().item() == pytest.approx(1 / 0.007, rel=1e-5)
    with torch.no_grad():
        clap.logit_scale.fill_(10.0)
    emb = clap.embed_audio(clips(2))
    assert clap.logits(emb, emb).max() <= 100.0 + 1e-3


def _gathered_loss_worker(rank: int, world: int, audio: torch.Tensor, text: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    n = audio.shape[0] // world
    mine_a = audio[rank * n:(rank + 1) * n].clone().requires_grad_()
    mine_t = text[rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = contrastive_loss(mine_a, mine_t, torch.tensor(2.0))
    loss.backward()
    torch.save({"loss": loss.detach(), "audio_grad": mine_a.grad, "text_grad": mine_t.grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_batch_spans_every_process(tmp_path):
    """Two processes with half a batch each train exactly as one process with the whole batch: the mean of their
    losses is the global loss, and (after DDP's averaging) each one's gradients are the global gradients."""
    torch.manual_seed(0)
    audio, text = torch.randn(8, 16), torch.randn(8, 16)
    mp.spawn(_gathered_loss_worker, args=(2, audio, text, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    a, t = audio.clone().requires_grad_(), text.clone().requires_grad_()
    loss = contrastive_loss(a, t, torch.tensor(2.0))
    loss.backward()
    assert sum(r["loss"] for r in ranks).item() / 2 == pytest.approx(loss.item(), abs=1e-6)
    assert torch.allclose(torch.cat([r["audio_grad"] for r in ranks]) / 2, a.grad, atol=1e-7)
    assert torch.allclose(torch.cat([r["text_grad"] for r in ranks]) / 2, t.grad, atol=1e-7)
    # A process that saw only its own half would have fewer negatives and a different loss.
    assert contrastive_loss(audio[:4], text[:4], torch.tensor(2.0)).item() != pytest.approx(loss.item(), abs=1e-3)


# ----------------------------------------------------------------------------- the model
def test_forward_gives_loss_logits_and_normalised_embeddings(clap):
    batch = clap.processor(clips(3), ["a low tone", "a middle tone", "a high tone"])
    clap.train()
    out = clap(**batch)
    out.loss.backward()
    assert out.logits_per_audio.shape == (3, 3)
    assert torch.allclose(out.logits_per_text, out.logits_per_audio.T)
    assert torch.allclose(out.audio_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert clap.logit_scale.grad is not None and clap.audio_encoder.base.audio_encoder.patch_embed.proj.weight.grad \
        is not None


def test_embeddings_do_not_depend_on_the_batch(clap):
    waves = clips(4, seconds=1.7)
    together = clap.embed_audio(waves)
    alone = torch.cat([clap.embed_audio(w) for w in waves])
    assert torch.allclose(together, alone, atol=1e-5)
    texts = ["a dog", "rain on a roof falling", "a car"]
    assert torch.allclose(clap.embed_text(texts), torch.cat([clap.embed_text(t) for t in texts]), atol=1e-5)


def test_long_audio_gives_the_same_embedding_every_time(clap):
    rng = np.random.default_rng(0)
    long = (rng.standard_normal(16000 * 5).astype(np.float32) * 0.1, 16000)
    assert torch.equal(clap.embed_audio(long), clap.embed_audio(long))


def test_zero_shot_probabilities(clap):
    labels = ["dog", "cat", "rain"]
    probs = clap.zero_shot(clips(2), labels)
    assert probs.shape == (2, 3)
    assert torch.allclose(probs.sum(dim=-1), torch.ones(2), atol=1e-5)
    multi = clap.zero_shot(clips(2), labels, multi_label=True)
    assert ((multi > 0) & (multi < 1)).all() and not torch.allclose(multi.sum(-1), torch.ones(2))
    # The same as scoring the templated texts by hand (1 / 0.007 = 142.9 is clamped at 100).
    texts = [f"This is a sound of {label}" for label in labels]
    expected = (100.0 * clap.embed_audio(clips(2)) @ clap.embed_text(texts).T).softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-5)
    with pytest.raises(PengiInputError, match="label"):
        clap.zero_shot(clips(1), labels, template="a sound of")
    with pytest.raises(PengiInputError, match="no class labels"):
        clap.zero_shot(clips(1), [])


def test_text_cache_empties_when_training_starts(clap):
    clap.embed_text(["a dog"])
    assert "a dog" in clap._text_cache
    clap.train()
    assert not clap._text_cache
    clap.eval()
    with torch.no_grad():
        clap.text_encoder.projection.linear1.weight.mul_(2)
    fresh = clap.embed_text(["a dog"])
    assert torch.allclose(fresh, clap.text_embedding(**clap.processor.texts(["a dog"])), atol=1e-6)


def test_bad_text_is_reported(clap):
    with pytest.raises(PengiInputError, match="text #1"):
        clap.embed_text(["a dog", ""])


def test_save_and_load_round_trip(clap, tmp_path, gpt2_tokenizer):
    clap.save_pretrained(tmp_path / "clap")
    saved = tmp_path / "clap"
    assert (saved / "model.safetensors").exists() and (saved / "tokenizer_config.json").exists()
    assert (saved / "processor_config.json").exists()
    loaded = CLAP.from_pretrained(tmp_path / "clap").eval()
    assert isinstance(loaded.config, CLAPConfig)
    waves = clips(2)
    assert torch.allclose(loaded.embed_audio(waves), clap.embed_audio(waves), atol=1e-6)
    assert torch.allclose(loaded.embed_text(["a dog"]), clap.embed_text(["a dog"]), atol=1e-6)
    assert loaded.logit_scale.item() == pytest.approx(clap.logit_scale.item())
    with pytest.raises(PengiInputError, match="is a file"):
        CLAP.from_pretrained(tmp_path / "clap" / "config.json")


def test_cnn14_audio_tower(gpt2_tokenizer):
    model = make_clap(gpt2_tokenizer, audio_config=Cnn14Config(num_mel_bins=32, channels=[4, 8, 8, 16, 16, 32]),
                      n_mels=32)
    emb = model.embed_audio(clips(2))
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()
    assert not torch.allclose(emb[0], emb[1])
    with pytest.raises(ValueError, match="n_mels >= 32"):
        clap_tiny(100, audio_config=Cnn14Config(num_mel_bins=16))
    with pytest.raises(ValueError, match="six conv blocks"):
        Cnn14Config(channels=[4, 8])


def test_pengi_starts_from_clap_encoders(gpt2_tokenizer, bert_tokenizer, clap):
    pengi = make_tiny(gpt2_tokenizer, bert_tokenizer, d_proj=32)
    text = pengi.config.prompt_encoder_config.to_dict()
    clap_b = make_clap(bert_tokenizer, text_pooling="cls", text_config=text)
    assert pengi.load_clap_encoders(clap_b) == ["audio_encoder", "prompt_encoder"]
    waves = torch.stack([torch.from_numpy(w) for w, _ in clips(2)])
    assert torch.allclose(pengi.audio_embedding(waves), clap_b.audio_encoder(waves), atol=1e-6)
    wide = make_clap(gpt2_tokenizer, d_proj=16)
    with pytest.raises(ValueError, match="does not match"):
        pengi.load_clap_encoders(wide)


def test_config_checks():
    with pytest.raises(ValueError, match="text_pooling"):
        CLAPConfig(text_pooling="max")
    with pytest.raises(ValueError, match="temperature"):
        CLAPConfig(temperature=2.0)
