"""The training recipe as users run it: overfitting, kill-and-resume, two processes, in real subprocesses."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from pengi import Pengi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = ("-m", "pengi_recipes.train_pengi")
TINY = "pengi/tiny"  # a shipped config, by name


def load_recipe_module(name: str):
    return importlib.import_module(f"pengi_recipes.{name}")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    load_recipe_module("make_synthetic_data").main(["--out", str(out), "--train", "16", "--validation", "4"])
    return out


def train_cmd(out, data, *overrides, launcher=(sys.executable,), train_manifest=None, workers=0):
    train_manifest = train_manifest or data / "train.jsonl"
    return [*launcher, *RECIPE, "--config", TINY, "--set", f"output_dir={out}",
            f"data.train=[{{manifest: {train_manifest}}}]", f"data.validation={data / 'validation.jsonl'}",
            f"data.num_workers={workers}", "log.tracker=tensorboard", *overrides]


def run_training(cmd, timeout=600):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(folder):
    return load_file(os.path.join(folder, "final", "model.safetensors"))


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_tiny_model_memorises_examples_and_generates_them(tmp_path, synthetic):
    manifest = synthetic / "four.jsonl"
    rows = open(synthetic / "train.jsonl").read().splitlines()
    manifest.write_text("\n".join(rows[i] for i in (0, 6, 12, 18)) + "\n")  # four clips, four different tasks
    out = tmp_path / "run"
    cmd = train_cmd(out, synthetic, "optim.max_steps=150", "optim.warmup_steps=10", "optim.lr=3e-3",
                    "data.batch_size=4", "checkpoint.every=1000", "eval.every=1000",
                    "model.config.projection_dropout=0",
                    "model.config.lm_config.resid_pdrop=0", "model.config.lm_config.embd_pdrop=0",
                    "model.config.lm_config.attn_pdrop=0", train_manifest=manifest)
    result = run_training(cmd)
    assert "val/exact_match" in result.stdout and "val/CIDEr-D" in result.stdout  # metrics at the last step
    model = Pengi.from_pretrained(out / "final").eval()
    examples = [json.loads(rows[i]) for i in (0, 6, 12, 18)]
    audio = [str(synthetic / e["audio"]) for e in examples]
    batch = model.processor(audio=audio, prompts=[e["prompt"] for e in examples],
                            answers=[e["answer"] for e in examples])
    with torch.no_grad():
        assert model(**batch).loss.item() < 0.05
    assert model.generate(audio, [e["prompt"] for e in examples], num_beams=1) == [e["answer"] for e in examples]


# Map-style data with workers also keeps them between epochs (their crops are seeded by the epoch the main process
# sets) and prefetches more, with the fused AdamW.
FAST_LOADER = ("data.persistent_workers=true", "data.prefetch_factor=4", "optim.fused=true")


@pytest.mark.parametrize(("streaming", "workers", "options"), [(False, 0, ()), (False, 2, FAST_LOADER), (True, 2, ())])
def test_killed_run_resumes_to_the_same_weights(tmp_path, synthetic, streaming, workers, options):
    # 10 batches an epoch: the checkpoint at step 15 is in the middle of the second epoch.
    common = ("optim.max_steps=30", "data.batch_size=8", "checkpoint.every=15", "eval.every=1000",
              "checkpoint.keep_last=2", "eval.caption_metrics=false", f"data.streaming={str(streaming).lower()}",
              "data.shuffle_buffer=32", *options)
    straight = tmp_path / "straight"
    run_training(train_cmd(straight, synthetic, *common, workers=workers))

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(train_cmd(resumed, synthetic, *common, workers=workers), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = resumed / "checkpoints" / "checkpoint_0" / "trainer_state.json"  # written last: the step-15 one is whole
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (resumed / "final").exists(), "the run should be killed part-way"
    result = run_training(train_cmd(resumed, synthetic, *common, workers=workers))
    assert "resumed from" in result.stdout + result.stderr and "(step 15)" in result.stdout
    assert "Removed shared tensor" not in result.stderr  # GPT-2's tied output layer is not a problem to report
    assert max_difference(weights(straight), weights(resumed)) < 1e-5
    kept = sorted(os.listdir(resumed / "checkpoints"))
    assert kept == ["checkpoint_0", "checkpoint_1"]  # keep_last=2, no incomplete folders left


def test_two_processes_match_one(tmp_path, synthetic):
    common = ("optim.max_steps=6", "data.batch_size=8", "checkpoint.every=1000", "eval.every=1000",
              "eval.caption_metrics=false",
              "model.config.lm_config.resid_pdrop=0", "model.config.lm_config.embd_pdrop=0",
              "model.config.lm_config.attn_pdrop=0")
    one = tmp_path / "one"
    run_training(train_cmd(one, synthetic, *common))
    two = tmp_path / "two"
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    run_training(train_cmd(two, synthetic, *common, launcher=launcher))
    # Each process normalises its half batch in HTSAT's batch norm, so the runs agree closely, not exactly.
    assert max_difference(weights(one), weights(two)) < 5e-3


def test_lora_on_the_lm_trains_and_saves_a_merged_model(tmp_path, synthetic):
    from accelerate.utils import set_seed

    out = tmp_path / "lora"
    run_training(train_cmd(out, synthetic, "optim.max_steps=5", "data.batch_size=8", "checkpoint.every=1000",
                           "eval.every=1000", "eval.metrics=false", "train.trainable=[audio_mapper, text_mapper]",
                           "train.lora={r: 4, lora_alpha: 8, target_modules: [c_attn]}"))
    saved = weights(out)
    assert not any("lora" in k for k in saved)  # adapters merged into a plain Pengi
    set_seed(0)  # the recipe's seed: rebuild the weights the run started from
    initial = Pengi(Pengi.from_pretrained(out / "final").config).state_dict()
    for layer in range(2):
        attn, mlp = f"lm.transformer.h.{layer}.attn.c_attn.weight", f"lm.transformer.h.{layer}.mlp.c_fc.weight"
        assert not torch.allclose(saved[attn], initial[attn])  # LoRA-adapted, then merged
        assert torch.equal(saved[mlp], initial[mlp])  # frozen and not adapted
    encoder = "audio_encoder.projection.linear1.weight"
    assert torch.equal(saved[encoder], initial[encoder])  # not in train.trainable


def test_frozen_lm_held_in_bf16_trains_and_saves_fp32(tmp_path, synthetic):
    out = tmp_path / "held"
    result = run_training(train_cmd(out, synthetic, "optim.max_steps=20", "data.batch_size=8", "log.every=5",
                                    "checkpoint.every=1000", "eval.every=20", "eval.max_batches=1",
                                    "eval.caption_metrics=false", "train.trainable=[audio_encoder, audio_mapper, "
                                    "text_mapper]", "train.frozen_dtype=bfloat16", "optim.fused=true"))
    assert "held in bfloat16 (frozen): lm" in result.stdout and "fused AdamW: True" in result.stdout
    logged = [float(x) for x in re.findall(r"train/loss ([0-9.]+)  samples/s ([0-9.]+)", result.stdout)
              for x in x]
    assert len(logged) == 8 and all(math.isfinite(x) and x > 0 for x in logged)  # loss and rate, every 5 steps
    assert "val/exact_match" in result.stdout  # generation from the fp32 mappers through the bf16 LM
    saved = weights(out)
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.float32}


def test_launcher_mixed_precision_reaches_the_recipe(tmp_path, synthetic):
    # pengi-tiny.yaml leaves precision to the launcher: `accelerate launch --mixed_precision bf16` trains in bf16
    # (a config value of "no" used to override it silently, and GPU runs trained in fp32).
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
                "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no")
    common = ("optim.max_steps=2", "data.batch_size=8", "checkpoint.every=1000", "eval.every=1000",
              "eval.metrics=false")
    result = run_training(train_cmd(tmp_path / "bf16", synthetic, *common, launcher=launcher))
    assert "mixed precision: bf16" in result.stdout
    # A config value still wins, with a note; a bare `no` (YAML's false) means no mixed precision.
    result = run_training(train_cmd(tmp_path / "no", synthetic, *common, "precision=no", launcher=launcher))
    assert "mixed precision: no" in result.stdout and "overrides the launcher's 'bf16'" in result.stdout


def test_accelerate_launch_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = os.path.join(ROOT, "pengi_recipes", "accelerate")
    kinds = {name: load_config_from_file(os.path.join(folder, name)).distributed_type.value
             for name in sorted(os.listdir(folder))}
    assert kinds == {"cpu.yaml": "NO", "deepspeed_zero2.yaml": "DEEPSPEED", "fsdp.yaml": "FSDP",
                     "multi_gpu.yaml": "MULTI_GPU", "multi_node.yaml": "MULTI_GPU", "single_gpu.yaml": "NO"}


def test_lm_pretraining_learns_the_sequence_pengi_feeds_it(tmp_path, synthetic):
    out = tmp_path / "lm"
    result = subprocess.run([sys.executable, "-m", "pengi_recipes.pretrain_lm", "--manifests",
                             str(synthetic / "train.jsonl"), "--out", str(out), "--vocab-size", "300",
                             "--n-embd", "32", "--n-layer", "1", "--n-head", "2", "--steps", "150", "--lr", "1e-2"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, lm = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out).eval()
    assert tok.pad_token != tok.eos_token  # the LM collator masks pad ids, and EOS must be learned
    row = json.loads(open(synthetic / "train.jsonl").readline())
    prompt = tok(row["prompt"])["input_ids"]

    def answer_loss(answer: str) -> float:
        ids = prompt + tok(answer)["input_ids"] + [tok.eos_token_id]
        labels = [-100] * len(prompt) + ids[len(prompt):]  # score the answer and its EOS only
        with torch.no_grad():
            return lm(torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()

    assert answer_loss(row["answer"]) < 1.5  # the training format is learned, EOS included
    assert answer_loss(row["answer"]) < answer_loss("zz qq xx") - 2


def test_lm_pretrained_with_a_context_answers_from_it(tmp_path, synthetic):
    """With --context-slots the LM reads a text about the clip in the positions Pengi's audio prefix takes (then
    padding where the text prefix goes); the same prompt then gets the answer its context says, not the corpus'
    most frequent one. --validation scores it reading held-out contexts."""
    out = tmp_path / "lm"
    result = subprocess.run([sys.executable, "-m", "pengi_recipes.pretrain_lm", "--manifests",
                             str(synthetic / "train.jsonl"), "--out", str(out), "--vocab-size", "300",
                             "--n-embd", "32", "--n-layer", "2", "--n-head", "2", "--steps", "250", "--lr", "1e-2",
                             "--batch-size", "16", "--context-slots", "8", "--text-slots", "2", "--prompt-length", "8",
                             "--loss", "all", "--architecture", "llama",
                             "--validation", str(synthetic / "validation.jsonl")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layout_ids = load_recipe_module("pretrain_lm").context_input_ids
    tok, lm = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(lm).__name__ == "LlamaForCausalLM"
    head = layout_ids(tok, "3 events: a, b", "question: which?", context_slots=8, text_slots=2, prompt_length=8)
    assert len(head) == 18 and head[8:10] == [tok.pad_token_id] * 2  # context, text-prefix slots, prompt
    rows = [json.loads(line) for line in open(synthetic / "train.jsonl")]
    metadata = {r["audio"]: r["answer"] for r in rows if r["task"] == "metadata"}
    labelled = [r for r in rows if r["task"] == "sound_event"]

    def answer_loss(context: str, prompt: str, answer: str) -> float:
        head = layout_ids(tok, context, prompt, context_slots=8, text_slots=2, prompt_length=8)
        tail = tok(answer)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            return lm(torch.tensor([head + tail]), labels=torch.tensor([[-100] * len(head) + tail])).loss.item()

    wins = 0
    for row in labelled:
        other = next(r for r in labelled if r["answer"] != row["answer"])
        own = answer_loss(metadata[row["audio"]], row["prompt"], row["answer"])
        wins += own < answer_loss(metadata[other["audio"]], row["prompt"], row["answer"]) - 1
    assert wins >= 0.75 * len(labelled)  # an LM that ignored the context would win none
    report = json.loads((out / "context_report.json").read_text())
    assert 0 <= report["accuracy"] <= 1 and "QA accuracy reading the true context" in result.stdout
