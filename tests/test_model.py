"""The Pengi model: shapes, loss masking, freezing, save/load, batching, determinism and decoding options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoConfig, AutoModel

from pengi import Pengi, PengiConfig, PengiInputError
from pengi.synthetic import example

from .conftest import GPT2_DATA, make_tiny
from .naive_decoding import greedy_decode_without_cache

PROMPTS = ["generate audio caption", "this is a sound of", "question: is the sound loud?", "generate metadata"]


def clips(seeds):
    return [(example(s).audio, 16000) for s in seeds]


def test_gpt2_tokenizer_matches_reference_bpe(gpt2_tokenizer):
    reference = ByteLevelBPETokenizer(f"{GPT2_DATA}/encoder.json", f"{GPT2_DATA}/vocab.bpe")
    text = "A dog barks while cars pass by; question: is it raining? 12345 naïve café <tag>"
    assert gpt2_tokenizer(text)["input_ids"] == reference.encode(text).ids
    assert len(gpt2_tokenizer) == 50257 and gpt2_tokenizer.eos_token_id == 50256


def test_shapes(tiny_model):
    cfg = tiny_model.config
    audio = clips([0, 1, 2])
    assert tiny_model.embed_audio(audio).shape == (3, cfg.d_proj)
    assert tiny_model.embed_prompts(["a b", "c"]).shape[0] == 2
    audio_prefix, text_prefix = tiny_model.prefixes(audio, PROMPTS[:3])
    assert audio_prefix.shape == (3, cfg.audio_prefix_length, cfg.lm_config.hidden_size)
    assert text_prefix.shape == (3, cfg.text_prefix_length, cfg.lm_config.hidden_size)


def test_shapes_with_prompt_encoder(tiny_model_with_encoder):
    m = tiny_model_with_encoder
    assert m.embed_prompts(["generate audio caption", "question: is it raining?"]).shape == (2, m.config.d_proj)
    assert m.prefixes(clips([0]), "generate metadata")[1].shape == (1, 4, 32)


def test_loss_covers_answer_tokens_only(tiny_model):
    m = tiny_model.train()
    batch = m.processor(audio=clips([0, 1]), prompts=["generate audio caption", "question: is it loud?"],
                        answers=["a dog barks loudly near a road", "yes"])
    loss = m(**batch).loss
    # Recompute by hand: logits at position t predict token t+1; only answer tokens (and their EOS) count.
    with torch.no_grad():
        prefix = m.prefix(batch["waveforms"], batch["prompt_input_ids"], batch["prompt_attention_mask"])
    torch.manual_seed(0)
    m.eval()
    with torch.no_grad():
        full = m(**batch)
        embeds = torch.cat([prefix, m.lm.get_input_embeddings()(batch["input_ids"])], dim=1)
        mask = torch.cat([torch.ones(2, prefix.shape[1], dtype=torch.long), batch["attention_mask"]], dim=1)
        logits = m.lm(inputs_embeds=embeds, attention_mask=mask).logits
    p = prefix.shape[1]
    terms = []
    for i in range(2):
        n = int(batch["attention_mask"][i].sum())
        terms.append(F.cross_entropy(logits[i, p - 1:p - 1 + n], batch["input_ids"][i, :n], reduction="sum"))
    expected = sum(terms) / batch["attention_mask"].sum()
    assert torch.allclose(full.loss, expected, atol=1e-5)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Whatever sits in padded positions does not change the loss.
    padded = dict(batch)
    padded["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7)
    with torch.no_grad():
        assert torch.allclose(m(**padded).loss, full.loss, atol=1e-6)


def test_frozen_lm_gets_no_gradient(tiny_model_with_encoder):
    m = tiny_model_with_encoder.train()
    batch = m.processor(audio=clips([0, 1]), prompts=["a", "b"], answers=["x y", "z"])
    m(**batch).loss.backward()
    assert all(p.grad is None for p in m.lm.parameters())
    assert all(p.grad is None for p in m.prompt_encoder.base.parameters())
    for part in (m.audio_mapper, m.text_mapper, m.audio_encoder, m.prompt_encoder.projection):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_save_load_round_trip(tmp_path, tiny_model_with_encoder):
    m = tiny_model_with_encoder
    audio, prompts = clips([3, 4]), ["generate audio caption", "question: is it raining?"]
    before = m.prefixes(audio, prompts)
    texts = m.generate(audio, prompts, max_new_tokens=6)
    m.save_pretrained(tmp_path)
    loaded = Pengi.from_pretrained(tmp_path).eval()
    for a, b in zip(before, loaded.prefixes(audio, prompts)):
        assert torch.equal(a, b)
    assert loaded.generate(audio, prompts, max_new_tokens=6) == texts
    assert set(m.state_dict()) == set(loaded.state_dict())
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in m.state_dict().items())
    assert not any(p.requires_grad for p in loaded.lm.parameters())
    assert AutoConfig.from_pretrained(tmp_path).model_type == "pengi"
    assert isinstance(AutoModel.from_pretrained(tmp_path), Pengi)


def test_stored_filterbank_is_used(tmp_path, tiny_model):
    m = tiny_model
    audio = clips([5])
    before = m.embed_audio(audio)
    m.audio_encoder.frontend.mel_filters.mul_(2.0)  # as a converted checkpoint would overwrite it
    m.save_pretrained(tmp_path)
    loaded = Pengi.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.audio_encoder.frontend.mel_filters, m.audio_encoder.frontend.mel_filters)
    assert not torch.allclose(loaded.embed_audio(audio), before)


def test_default_model_generates_what_it_learned(default_model):
    seeds = list(range(16))
    out = default_model.generate(clips(seeds), "generate audio caption", num_beams=1)
    truth = [example(s).caption for s in seeds]
    assert sum(o == t for o, t in zip(out, truth)) >= 12, list(zip(out, truth))


@pytest.mark.parametrize("options", [dict(num_beams=1), dict(num_beams=3)])
def test_batch_equals_one_by_one(default_model, options):
    seeds = [0, 5, 10, 15, 20]
    prompts = [PROMPTS[i % 4] for i in range(5)]
    batched = default_model.generate(clips(seeds), prompts, return_scores=True, **options)
    single = [default_model.generate(clips([s]), p, return_scores=True, **options)[0] for s, p in zip(seeds, prompts)]
    assert [t for t, _ in batched] == [t for t, _ in single]
    assert len({t for t, _ in batched}) >= 4
    assert np.allclose([s for _, s in batched], [s for _, s in single], atol=1e-4)


def test_batch_equals_one_by_one_with_prompts_of_different_lengths(tiny_model):
    prompts = ["a", "generate audio caption for this very long recording please", "question: is it raining?"]
    audio = clips([1, 2, 3])
    batched = tiny_model.prefixes(audio, prompts)[1]
    single = torch.cat([tiny_model.prefixes([a], p)[1] for a, p in zip(audio, prompts)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_cached_generate_matches_naive_decoder(default_model):
    proc = default_model.processor
    audio, prompts = clips([3, 8, 13]), PROMPTS[:3]
    batch = proc(audio=audio, prompts=prompts)
    with torch.no_grad():
        prefix = default_model.prefix(**batch)
    naive = greedy_decode_without_cache(default_model.lm, prefix, default_model.config.max_new_tokens,
                                        proc.tokenizer.eos_token_id)
    assert [proc.tokenizer.decode(t).strip() for t in naive] == default_model.generate(audio, prompts, num_beams=1)


def test_greedy_score_is_mean_token_log_prob(default_model):
    audio = clips([6])
    text, score = default_model.generate(audio, "generate audio caption", num_beams=1, return_scores=True)[0]
    proc = default_model.processor
    batch = proc(audio=audio, prompts=["generate audio caption"], answers=[text])
    with torch.no_grad():
        loss = default_model(**batch).loss  # mean negative log-likelihood of the answer tokens and EOS
    assert score == pytest.approx(-loss.item(), abs=1e-4)
    assert score <= 0


def test_decoding_options(default_model):
    audio = clips([1, 2])
    nested = default_model.generate(audio, "generate audio caption", num_beams=4, num_return_sequences=3)
    assert len(nested) == 2 and all(len(x) == 3 and all(isinstance(t, str) for t in x) for x in nested)
    torch.manual_seed(0)
    a = default_model.generate(audio, "generate audio caption", do_sample=True, temperature=1.5, top_k=20, top_p=0.9)
    torch.manual_seed(0)
    b = default_model.generate(audio, "generate audio caption", do_sample=True, temperature=1.5, top_k=20, top_p=0.9)
    assert a == b and len(a) == 2
    short = default_model.generate(audio, "generate audio caption", max_new_tokens=2, num_beams=1)
    assert all(len(default_model.processor.tokenizer(t)["input_ids"]) <= 2 for t in short)
    assert all("<|endoftext|>" not in t for t in default_model.generate(audio, "generate audio caption"))


def test_same_audio_same_output_and_long_clips_are_deterministic(default_model):
    long = np.concatenate([example(s).audio for s in range(4)])  # 4 s: cropped to the central 1 s
    first = default_model.generate([(long, 16000)] * 2, "generate audio caption")
    again = default_model.generate((long, 16000), "generate audio caption")
    assert first[0] == first[1] == again[0]


def test_windows_give_one_output_per_window(default_model):
    parts = [example(s) for s in (0, 3, 6)]
    long = np.concatenate([p.audio for p in parts] + [parts[0].audio[:8000]])
    (windows,) = default_model.generate_windows((long, 16000), "this is a sound of", num_beams=1)
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 3.5)]
    assert [w["text"] for w in windows[:3]] == [p.source for p in parts]


def test_describe(default_model):
    (result,) = default_model.describe(clips([9]))
    e = example(9)
    assert set(result) == {"caption", "metadata", "sound_events"}
    assert result["sound_events"] == e.source and result["metadata"] == e.metadata


def test_bad_prompts(tiny_model):
    with pytest.raises(PengiInputError, match="prompt #1: prompt is empty"):
        tiny_model.generate(clips([0, 1]), ["ok", "  "])
    with pytest.raises(PengiInputError, match="got 2 prompts for 3 audio inputs"):
        tiny_model.generate(clips([0, 1, 2]), ["a", "b"])
    with pytest.raises(PengiInputError, match="prompts must be strings"):
        tiny_model.generate(clips([0]), [None])


def test_long_prompt_is_truncated_with_a_warning(tiny_model_with_encoder):
    long_prompt = "question: " + "is it raining " * 30
    with pytest.warns(UserWarning, match="prompt #0 .* truncated"):
        out = tiny_model_with_encoder.generate(clips([0]), long_prompt, max_new_tokens=3)
    assert len(out) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model_with_encoder.generate(clips([0]), "generate audio caption", max_new_tokens=3)


def test_bad_audio_in_generate_names_the_input(tiny_model, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(PengiInputError, match="bad.wav: cannot decode"):
        tiny_model.generate([clips([0])[0], str(tmp_path / "bad.wav")])
    with pytest.raises(PengiInputError, match="array #1: contains 10 NaN"):
        tiny_model.generate([clips([0])[0], (np.full(10, np.nan), 16000)])


def test_config_checks():
    with pytest.raises(ValueError, match="more than the HTSAT input holds"):
        PengiConfig(clip_seconds=30.0)
    with pytest.raises(ValueError, match="compat must be one of"):
        PengiConfig(compat="nope")
    from transformers import ClapAudioConfig

    small = ClapAudioConfig(spec_size=64, window_size=8, num_mel_bins=32, depths=[2, 2, 2],
                            num_attention_heads=[2, 4, 8])
    with pytest.raises(ValueError, match="last stage is 4x4 patches, smaller than its attention window"):
        PengiConfig(audio_config=small, n_mels=32, clip_seconds=1.0)


def test_bfloat16_inference(default_model):
    m = make_tiny(default_model.processor.tokenizer)
    m.to(torch.bfloat16)
    assert m.embed_audio(clips([0])).dtype == torch.bfloat16
    assert isinstance(m.generate(clips([0]), "generate audio caption", max_new_tokens=3)[0], str)


def test_time_segments_keep_when_sounds_happen(gpt2_tokenizer):
    one = make_tiny(gpt2_tokenizer)
    mel = one.audio_encoder.frontend(torch.from_numpy(example(0).audio)[None]).to(one.dtype)
    out = one.audio_encoder.base(input_features=mel)
    # The segment view of HTSAT's output averages back to its own pooled output.
    assert torch.allclose(out.last_hidden_state.mean(dim=(2, 3)), out.pooler_output, atol=1e-5)

    four = make_tiny(gpt2_tokenizer, audio_time_segments=4)
    assert four.audio_encoder.features(torch.zeros(2, 16000)).shape == (2, 4 * 32)
    half = 8000  # half a second at 16 kHz
    beep = torch.from_numpy(example(0).audio[:half])
    silence = torch.zeros(half)
    first, last = torch.cat([beep, silence])[None], torch.cat([silence, beep])[None]
    with torch.no_grad():
        a, b = four.audio_encoder.features(first), four.audio_encoder.features(last)
        pooled_a, pooled_b = one.audio_encoder.features(first), one.audio_encoder.features(last)
    # Moving the sound from the first to the second half changes the segments far more than the global mean.
    seg_change = (a - b).norm() / a.norm()
    pooled_change = (pooled_a - pooled_b).norm() / pooled_a.norm()
    assert seg_change > 3 * pooled_change, (seg_change, pooled_change)


def test_appended_prompt_tokens_keep_batches_equal_to_single_inputs(gpt2_tokenizer):
    m = make_tiny(gpt2_tokenizer, append_prompt_tokens=True)
    prompts = ["a", "generate audio caption for this very long recording please", "question: is it raining?"]
    audio = clips([1, 2, 3])
    cfg = m.config
    batch = m.processor(audio=audio, prompts=prompts)
    ids = batch["prompt_input_ids"]
    assert ids.shape == (3, cfg.prompt_max_length) and ids[0, 0] == gpt2_tokenizer.pad_token_id  # left-padded
    assert torch.equal(ids[0, -1:], torch.tensor(gpt2_tokenizer("a")["input_ids"]))
    with torch.no_grad():
        prefix = m.prefix(**batch)
    assert prefix.shape == (3, cfg.audio_prefix_length + cfg.text_prefix_length + cfg.prompt_max_length, 32)
    tokens = m.lm.get_input_embeddings()(ids)
    assert torch.equal(prefix[:, -cfg.prompt_max_length:], tokens)
    batched = m.generate(audio, prompts, num_beams=2, max_new_tokens=5, return_scores=True)
    single = [m.generate([a], p, num_beams=2, max_new_tokens=5, return_scores=True)[0] for a, p in zip(audio, prompts)]
    assert [t for t, _ in batched] == [t for t, _ in single]
    assert np.allclose([s for _, s in batched], [s for _, s in single], atol=1e-4)
    with pytest.raises(ValueError, match="append_prompt_tokens needs prompts in the LM's own tokens"):
        PengiConfig(append_prompt_tokens=True, prompt_encoder_config={"model_type": "clip_text_model"})


def test_any_causal_lm_works_llama_style(tmp_path, gpt2_tokenizer):
    """The frozen LM is any transformers causal LM: a Llama-style decoder (rotary positions, as the demo model's
    stage 1 can train) batches, decodes and round-trips like GPT-2."""
    from transformers import LlamaConfig

    eos = gpt2_tokenizer.eos_token_id
    lm = LlamaConfig(vocab_size=len(gpt2_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, bos_token_id=eos,
                     eos_token_id=eos, tie_word_embeddings=True)
    m = make_tiny(gpt2_tokenizer, lm_config=lm, append_prompt_tokens=True)
    assert type(m.lm).__name__ == "LlamaForCausalLM"
    audio, prompts = clips([1, 2, 3]), ["generate audio caption", "question: is it raining?", "a"]
    batched = m.generate(audio, prompts, max_new_tokens=5)
    assert batched == [m.generate([a], p, max_new_tokens=5)[0] for a, p in zip(audio, prompts)]
    m.save_pretrained(tmp_path)
    loaded = Pengi.from_pretrained(tmp_path).eval()
    assert type(loaded.lm).__name__ == "LlamaForCausalLM"
    assert loaded.generate(audio, prompts, max_new_tokens=5) == batched
