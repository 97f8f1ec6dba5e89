"""SLAP's caption decoder, transformers' GPT-2 with cross-attention: masks exact under batching, KV-cached
`generate` equal to re-running the whole sequence, decoding options, and the configuration it is built from."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from pengi import SLAPProcessor
from pengi.errors import PengiInputError
from pengi.models.slap.decoder import generate_captions, until_end
from pengi.presets import slap_tiny, slap_tiny_audio

from .test_slap import SR, TOL, chirp, make_slap

STEPS = 20


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained("pengi/default_model/tokenizer")


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny SLAP whose decoder has large random weights: at the default initialisation the tied output head
    repeats its input token (the start token, which is also the end token here) and every caption is empty;
    these weights give long captions that depend on the audio, so that wrong masks or caches change them."""
    model = make_slap(tokenizer, ssl_weight=0, contrastive_weight=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.decoder.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5, generator=generator)
    return model


@pytest.fixture(scope="module")
def audio():
    return [(chirp(s, f0=150 * (i + 1), seed=i), SR) for i, s in enumerate((0.5, 2.4, 0.8, 1.6))]  # 4 lengths


def cached_greedy(model, audio, steps: int) -> list[list[int]]:
    """What `SLAP.caption` decodes, as token ids."""
    proc = model.processor
    with torch.no_grad():
        out = model.encode_audio(**proc.audio(audio))
        ids = generate_captions(model.decoder, model.caption_context(out.hidden), out.mask, proc.bos_id, proc.eos_id,
                                proc.tokenizer.pad_token_id, steps)
    return until_end(ids, proc.eos_id)


def stepwise_greedy(model, audio, steps: int) -> list[list[int]]:
    """The old decoding loop on the same model: re-run the whole sequence at every step, no cache."""
    proc = model.processor
    with torch.no_grad():
        out = model.encode_audio(**proc.audio(audio))
        states, mask = model.caption_context(out.hidden), out.mask.long()
        ids = torch.full((len(audio), 1), proc.bos_id)
        for _ in range(steps):
            logits = model.decoder(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=mask,
                                   use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return until_end(ids[:, 1:], proc.eos_id)


def test_decoder_is_gpt2_with_cross_attention_from_the_caption_fields(tokenizer):
    config = slap_tiny(len(tokenizer), caption_hidden_size=48, caption_layers=3, caption_heads=4,
                       caption_max_length=40)
    lm = config.caption_lm_config()
    assert (lm.n_embd, lm.n_layer, lm.n_head, lm.n_positions, lm.vocab_size) == (48, 3, 4, 40, len(tokenizer))
    assert lm.add_cross_attention and lm.n_inner == 48 * config.audio_config.mlp_ratio
    model = make_slap(tokenizer, caption_hidden_size=48, caption_layers=3, caption_heads=4, caption_max_length=40)
    assert isinstance(model.decoder, GPT2LMHeadModel) and len(model.decoder.transformer.h) == 3
    assert model.decoder.lm_head.weight is model.decoder.transformer.wte.weight  # tied, as the old decoder's
    assert isinstance(model.caption_context, torch.nn.Linear)  # tower width 32 -> 48
    assert isinstance(make_slap(tokenizer).caption_context, torch.nn.Identity)  # both 32 wide
    with pytest.raises(ValueError, match="multiple of caption_heads"):
        slap_tiny(len(tokenizer), caption_hidden_size=30, caption_heads=4)


def test_batched_captions_equal_one_by_one(model, audio):
    ids = cached_greedy(model, audio, STEPS)
    assert [len(r) for r in ids] == [STEPS] * len(audio) and len({tuple(r) for r in ids}) == len(audio)
    assert ids == [cached_greedy(model, [a], STEPS)[0] for a in audio]
    texts = model.caption(audio, max_length=STEPS)
    assert texts == model.processor.decode(ids)
    batch = model.processor(audio, texts)
    with torch.no_grad():  # the decoder's logits, teacher-forced, batched vs alone: the padding masks are exact
        out = model.encode_audio(batch["waveforms"], batch["waveform_lengths"])
        together = model.decoder(input_ids=batch["caption_ids"], attention_mask=batch["caption_mask"],
                                 encoder_hidden_states=model.caption_context(out.hidden),
                                 encoder_attention_mask=out.mask.long()).logits
        for i, a in enumerate(audio):
            one = model.processor([a], [texts[i]])
            alone_out = model.encode_audio(one["waveforms"], one["waveform_lengths"])
            alone = model.decoder(input_ids=one["caption_ids"],
                                  encoder_hidden_states=model.caption_context(alone_out.hidden),
                                  encoder_attention_mask=alone_out.mask.long()).logits[0]
            n = int(batch["caption_mask"][i].sum())
            assert torch.allclose(together[i, :n], alone[:n], atol=TOL)


def test_cached_generate_equals_rerunning_the_sequence(model, audio):
    ids = stepwise_greedy(model, audio, STEPS)
    assert [len(r) for r in ids] == [STEPS] * len(audio)  # no early end: every step is compared
    assert ids == cached_greedy(model, audio, STEPS)


def test_decoding_options_come_from_generate(model, audio):
    beams = model.caption(audio[:2], max_length=8, num_beams=3)
    assert len(beams) == 2 and all(isinstance(t, str) for t in beams)
    assert beams[1] == model.caption(audio[1], max_length=8, num_beams=3)[0]
    torch.manual_seed(1)
    sampled = model.caption(audio[:2], max_length=8, do_sample=True, top_k=20, num_return_sequences=3)
    assert [len(s) for s in sampled] == [3, 3]
    torch.manual_seed(1)
    assert model.caption(audio[:2], max_length=8, do_sample=True, top_k=20, num_return_sequences=3) == sampled
    limit = model.config.caption_max_length
    assert len(model.caption(audio[0], max_length=limit)) == 1
    with pytest.raises(PengiInputError, match=f"max_length: must be in 1..{limit}"):
        model.caption(audio[0], max_length=limit + 1)  # GPT-2 has caption_max_length positions
    with pytest.raises(PengiInputError, match="max_length"):
        model.caption(audio[0], max_new_tokens=4)


def test_caption_loss_is_the_lms_own_and_ignores_padding(tokenizer):
    model = make_slap(tokenizer, contrastive_weight=0, ssl_weight=0,
                      audio_config=slap_tiny_audio(hidden_size=64, num_heads=4))  # a projected context
    audio = [(chirp(0.6), SR), (chirp(1.3, seed=1), SR)]
    batch = model.processor(audio, ["a tone", "a rising tone and then a long hiss"])
    with torch.no_grad():
        loss = model(**batch).losses["caption"]
        out = model.encode_audio(batch["waveforms"], batch["waveform_lengths"])
        logits = model.decoder(input_ids=batch["caption_ids"], encoder_hidden_states=model.caption_context(out.hidden),
                               encoder_attention_mask=out.mask.long()).logits
    targets = batch["caption_ids"][:, 1:].masked_fill(batch["caption_mask"][:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_tokenizer_larger_than_the_decoder_vocabulary_is_refused(tokenizer):
    with pytest.raises(ValueError, match="vocab_size is 319"):
        SLAPProcessor(slap_tiny(len(tokenizer) - 1), tokenizer)
