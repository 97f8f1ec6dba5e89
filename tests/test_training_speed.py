"""The training speed levers are the same training: HTSAT's SDPA attention equals its eager attention, a frozen LM
held in bf16 gives the autocast path's loss and gradients, a compiled step gives the eager loss."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import ClapAudioConfig, ClapAudioModel

from pengi.modules.htsat_attention import SdpaClapAudioSelfAttention, htsat_attention, set_htsat_attention
from pengi.synthetic import example
from tests.conftest import make_tiny

# Two stages of two layers: the second layer of each uses shifted windows (the shift mask); 16x16 patches in
# windows of 4, then 8x8.
HTSAT_SMALL = dict(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                   patch_embeds_hidden_size=16, depths=[2, 2], num_attention_heads=[2, 4], hidden_size=32,
                   enable_fusion=False)


def htsat() -> ClapAudioModel:
    torch.manual_seed(0)
    model = ClapAudioModel(ClapAudioConfig(**HTSAT_SMALL))
    for name, p in model.named_parameters():
        if "relative_position_bias_table" in name:  # zeros at initialisation: give the bias something to do
            torch.nn.init.normal_(p, std=1.0)
    return model


def forward_backward(model: ClapAudioModel, mel: torch.Tensor):
    model.zero_grad()
    torch.manual_seed(1)  # the same stochastic depth draws in train mode
    out = model(input_features=mel).last_hidden_state
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("train", [False, True])
def test_htsat_sdpa_attention_equals_eager(train):
    model = htsat().train(train)
    mel = torch.randn(3, 1, 101, 16)
    assert htsat_attention(model) == "eager"
    eager = forward_backward(model, mel)
    assert set_htsat_attention(model, "sdpa") == 4 and htsat_attention(model) == "sdpa"
    sdpa = forward_backward(model, mel)
    torch.testing.assert_close(sdpa[0], eager[0], rtol=1e-5, atol=1e-5)
    assert eager[1].keys() == sdpa[1].keys()
    scale = max(g.abs().max() for g in eager[1].values())
    for key, grad in eager[1].items():
        if key.endswith("key.bias"):
            continue  # softmax ignores a bias added to every key: its gradient is zero, in rounding noise
        torch.testing.assert_close(sdpa[1][key], grad, rtol=1e-4, atol=1e-5 * scale, msg=key)


def test_htsat_sdpa_keeps_weights_keys_and_attention_outputs():
    model = htsat().eval()
    keys = list(model.state_dict())
    set_htsat_attention(model, "sdpa")
    assert list(model.state_dict()) == keys  # converted checkpoints load as before
    mel = torch.randn(2, 1, 101, 16)
    with torch.no_grad():
        out = model(input_features=mel, output_attentions=True)
    assert out.attentions is not None and out.attentions[0].shape[-1] == 16  # computed eagerly when asked for
    with pytest.raises(ValueError, match="must be one of sdpa, eager"):
        set_htsat_attention(model, "flash")


def test_pengi_uses_sdpa_in_htsat(gpt2_tokenizer):
    model = make_tiny(gpt2_tokenizer)
    assert any(isinstance(m, SdpaClapAudioSelfAttention) for m in model.modules())


def trainable_tiny(gpt2_tokenizer, bert_tokenizer=None):
    """A tiny Pengi as pengi-base trains: LM (and prompt encoder) frozen, encoders' projections and mappers
    trained; no dropout, so two runs differ only by their arithmetic."""
    model = make_tiny(gpt2_tokenizer, bert_tokenizer, projection_dropout=0.0)
    model.requires_grad_(False)
    names = ["audio_encoder", "audio_mapper", "text_mapper"] + (["prompt_encoder.projection"] if bert_tokenizer else [])
    for name in names:
        model.get_submodule(name).requires_grad_(True)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.train()


def batch_of(model, n=4):
    examples = [example(s) for s in range(n)]
    prompts = ["generate audio caption", "this is a sound of", "generate metadata", "question: is the sound loud?"]
    return model.processor(audio=[(e.audio, e.sample_rate) for e in examples], prompts=prompts[:n],
                           answers=[e.caption for e in examples])


def loss_and_grads(model, batch, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach().float(), {k: p.grad.float() for k, p in model.named_parameters() if p.requires_grad}


def relative_difference(a: dict, b: dict) -> float:
    num = sum((a[k] - b[k]).square().sum() for k in a)
    return float((num / sum(v.square().sum() for v in a.values())).sqrt())


def test_frozen_parts_in_bf16_train_as_autocast_does(gpt2_tokenizer, bert_tokenizer):
    model = trainable_tiny(gpt2_tokenizer, bert_tokenizer)
    model.prompt_encoder.enable_cache()
    batch = batch_of(model)
    reference = loss_and_grads(model, batch, autocast=True)  # every weight fp32, cast by autocast at each step

    held = copy.deepcopy(model)
    assert held.hold_frozen_in(torch.bfloat16) == ["lm", "prompt_encoder.base"]
    assert held.lm.dtype == torch.bfloat16 and held.prompt_encoder.base.dtype == torch.bfloat16
    assert {p.dtype for p in held.parameters() if p.requires_grad} == {torch.float32}
    got = loss_and_grads(held, batch, autocast=True)
    torch.testing.assert_close(got[0], reference[0], rtol=1e-2, atol=1e-2)
    assert got[1].keys() == reference[1].keys()
    assert relative_difference(reference[1], got[1]) < 0.02  # gradients reach the prefix through the bf16 LM
    assert all(g.abs().sum() > 0 for k, g in got[1].items() if k.startswith("audio_mapper"))

    # Without autocast the trainable parts run in fp32 and the LM in bf16.
    fp32 = loss_and_grads(model, batch, autocast=False)
    plain = loss_and_grads(held, batch, autocast=False)
    torch.testing.assert_close(plain[0], fp32[0], rtol=1e-2, atol=1e-2)
    assert relative_difference(fp32[1], plain[1]) < 0.05

    # Generation (the recipe's validation) from fp32 mappers into the bf16 LM.
    with torch.no_grad():
        texts = held.eval().generate([(example(0).audio, 16000)], "generate audio caption", max_new_tokens=3)
    assert isinstance(texts[0], str)


def test_training_with_frozen_parts_in_bf16_lowers_the_loss(default_model):
    # The shipped model's trained LM, frozen in bf16, with freshly initialised encoders and mappers to train.
    torch.manual_seed(0)
    model = type(default_model)(default_model.config)
    model.processor = default_model.processor
    model.lm.load_state_dict(default_model.lm.state_dict())
    model.requires_grad_(False)
    for name in ("audio_encoder", "audio_mapper", "text_mapper"):
        model.get_submodule(name).requires_grad_(True)
    assert model.hold_frozen_in(torch.bfloat16) == ["lm"]
    model.train()
    batch = batch_of(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.4 * losses[0], losses


def test_hold_frozen_in_leaves_parts_that_train(gpt2_tokenizer):
    model = trainable_tiny(gpt2_tokenizer)
    model.lm.transformer.h[0].attn.c_attn.weight.requires_grad_(True)  # e.g. LoRA or partial fine-tuning
    assert model.hold_frozen_in(torch.bfloat16) == []
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.slow  # torch.compile takes minutes on two cores
def test_compiled_step_matches_eager(gpt2_tokenizer):
    from pengi_recipes.training_loop import compile_modules

    model = trainable_tiny(gpt2_tokenizer)
    batch = batch_of(model)
    eager = loss_and_grads(model, batch, autocast=False)
    compiled = copy.deepcopy(model)
    compile_modules(compiled, ["audio_encoder", "audio_mapper", "text_mapper"])
    assert list(compiled.state_dict()) == list(model.state_dict())
    for _ in range(2):  # compiles, then runs the compiled graphs
        got = loss_and_grads(compiled, batch, autocast=False)
    torch.testing.assert_close(got[0], eager[0], rtol=1e-5, atol=1e-5)
    assert relative_difference(eager[1], got[1]) < 1e-4
