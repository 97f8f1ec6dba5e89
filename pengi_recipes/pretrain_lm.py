"""Stage 1 of a Pengi model trained from scratch: a tokenizer and a small GPT-2 pretrained on the corpus text.

    python -m pengi_recipes.pretrain_lm --manifests data/scenes/train.jsonl --out runs/demo/lm

Each example is the token sequence the LM reads inside Pengi: the prompt's tokens, then the answer's tokens
(encoded on its own, as `PengiProcessor.answers` encodes it) and end-of-text. With ``append_prompt_tokens`` the
frozen LM then meets, after the audio and text prefixes, exactly what it was pretrained on.

``--context-slots N`` (N = the Pengi model's audio prefix length) also puts, in the N positions that the audio
prefix will take, a text about the clip (``--context-task``, by default its metadata: every event with its
loudness, length, pitch and order), left-padded; ``--text-slots M`` (the text prefix length) of padding follow,
where the text prefix goes (it is made from the prompt alone, so it cannot carry what the clip holds); prompts are
left-padded to ``--prompt-length`` as Pengi pads them, and the loss covers the answer only. The frozen LM so learns
to answer from whatever fills the audio prefix positions, and stage 2 only has to teach the mappers to fill them
from the audio. Without it the frozen LM has never read anything in those positions, and the mappers must learn
that too, which they do not (docs/demo-model.md). ``--validation`` then scores the LM reading the true contexts of
held-out clips, per question type (``context_report.json``): the most the audio path can give. ``--loss all``
also scores the context and prompt tokens: predicting a question's words teaches the LM to look them up in the
context, which the answer alone (one token, often yes or no) teaches slowly (docs/demo-model.md).

Stage 2 (`pengi_recipes.train_pengi` with ``model.lm_from`` and ``model.tokenizer`` pointing here) keeps it frozen,
as the paper keeps GPT-2 frozen. The tokenizer is a byte-level BPE trained with
`tokenizers`; training is transformers' `Trainer` on a causal-LM objective.
"""

from __future__ import annotations

import argparse
import json
import os

import datasets
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    set_seed,
)

from pengi.data.manifest import load_manifest
from pengi.evaluation import load_metric

EOS, PAD = "<|endoftext|>", "<pad>"  # a pad of its own: the LM collator masks pad ids, and EOS must be learned


def context_examples(manifests: list[str], task: str) -> list[tuple[str, str, str]]:
    """(context, prompt, answer) for every row whose clip has a ``task`` row, the context being that row's answer."""
    rows = [row for path in manifests for row in load_manifest(path)]
    context = {row["audio"]: row["answer"] for row in rows if row["task"] == task}
    return [(context[row["audio"]], row["prompt"], row["answer"]) for row in rows if row["audio"] in context]


def context_input_ids(tokenizer: PreTrainedTokenizerFast, context: str, prompt: str, context_slots: int,
                      text_slots: int, prompt_length: int) -> list[int]:
    """The ids the LM reads before the answer, laid out as inside Pengi: the context left-padded to the audio
    prefix's positions, padding where the text prefix goes, the prompt left-padded to Pengi's prompt length."""
    pad = tokenizer.pad_token_id
    context_ids = tokenizer(context)["input_ids"][-context_slots:]
    prompt_ids = tokenizer(prompt)["input_ids"][:prompt_length]
    return ([pad] * (context_slots - len(context_ids)) + context_ids + [pad] * text_slots
            + [pad] * (prompt_length - len(prompt_ids)) + prompt_ids)


def answer_from_context(lm: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, examples: list[tuple[str, str, str]],
                        layout: dict[str, int], batch_size: int = 64, max_new_tokens: int = 48) -> list[str]:
    """Greedy answers of ``lm`` to (context, prompt, _) examples, each laid out by `context_input_ids`."""
    answers = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        ids = torch.tensor([context_input_ids(tokenizer, c, p, **layout) for c, p, _ in chunk], device=lm.device)
        with torch.inference_mode():
            out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                              max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
        answers += [text.strip() for text in tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]
    return answers


def context_report(lm: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, rows: list[dict], task: str,
                   layout: dict[str, int], batch_size: int = 64) -> dict[str, float]:
    """QA accuracy per question type of ``lm`` reading each clip's true ``task`` text as its context."""
    context = {row["audio"]: row["answer"] for row in rows if row["task"] == task}
    qa = [row for row in rows if row["task"] == "aqa" and row["audio"] in context]
    examples = [(context[r["audio"]], r["prompt"], r["answer"]) for r in qa]
    preds = answer_from_context(lm, tokenizer, examples, layout, batch_size)
    result = load_metric("audio_qa").compute(predictions=preds, references=[[r["answer"]] for r in qa],
                                             question_types=[r["question_type"] or "other" for r in qa])
    return {"accuracy": result["accuracy"], **{t: v["accuracy"] for t, v in result["per_type"].items()}}


def build_lm(architecture: str, vocab_size: int, n_positions: int, n_embd: int, n_layer: int, n_head: int,
             tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A small causal LM: GPT-2 (learned absolute positions) or a Llama-style decoder (rotary positions, RMSNorm,
    SwiGLU; about 1.7x faster a step on CPU at these sizes, docs/demo-model.md), tied input/output embeddings."""
    ids = dict(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                                          n_layer=n_layer, n_head=n_head, **ids))
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, max_position_embeddings=n_positions,
                                            hidden_size=n_embd, intermediate_size=8 * n_embd // 3,
                                            num_hidden_layers=n_layer, num_attention_heads=n_head,
                                            num_key_value_heads=n_head, tie_word_embeddings=True, **ids))
    raise ValueError(f"unknown architecture {architecture!r}: gpt2 or llama")


def corpus_pairs(manifests: list[str]) -> list[tuple[str, str]]:
    """Distinct (prompt, answer) pairs, in a stable order."""
    pairs = {(row["prompt"], row["answer"]): None for path in manifests for row in load_manifest(path)}
    return list(pairs)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS,
                                   pad_token=PAD)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifests", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--architecture", choices=("gpt2", "llama"), default="gpt2")
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-positions", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-slots", type=int, default=0,
                        help="positions holding a text about the clip (Pengi's audio prefix length)")
    parser.add_argument("--text-slots", type=int, default=0,
                        help="padding after the context, where Pengi's text prefix goes (its text prefix length)")
    parser.add_argument("--context-task", default="metadata", help="the manifest task whose answer is the context")
    parser.add_argument("--prompt-length", type=int, default=24, help="Pengi's prompt_max_length (with contexts)")
    parser.add_argument("--loss", choices=("answer", "all"), default="answer",
                        help="with contexts: score the answer only, or the context and prompt tokens too (all)")
    parser.add_argument("--validation", help="with contexts: a held-out manifest to score the LM reading them")
    args = parser.parse_args(argv)
    set_seed(args.seed)

    pairs = corpus_pairs(args.manifests)
    tokenizer = train_tokenizer([text for pair in pairs for text in pair], args.vocab_size)
    print(f"{len(pairs):,} distinct prompt/answer pairs, vocabulary {len(tokenizer)}")
    model = build_lm(args.architecture, len(tokenizer), args.n_positions, args.n_embd, args.n_layer, args.n_head,
                     tokenizer)
    def encode(row: dict) -> dict:
        ids = (tokenizer(row["prompt"])["input_ids"] + tokenizer(row["answer"])["input_ids"]
               + [tokenizer.eos_token_id])[: args.n_positions]
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    layout = dict(context_slots=args.context_slots, text_slots=args.text_slots, prompt_length=args.prompt_length)

    def encode_in_context(row: dict) -> dict:
        head = context_input_ids(tokenizer, row["context"], row["prompt"], **layout)
        answer = tokenizer(row["answer"])["input_ids"] + [tokenizer.eos_token_id]
        ids = (head + answer)[: args.n_positions]
        pad = tokenizer.pad_token_id
        scored = [-100 if args.loss == "answer" or t == pad else t for t in head]
        labels = (scored + answer)[: args.n_positions]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    if args.context_slots:
        examples = context_examples(args.manifests, args.context_task)
        columns = dict(zip(("context", "prompt", "answer"), map(list, zip(*examples))))
        data = datasets.Dataset.from_dict(columns).map(encode_in_context, remove_columns=list(columns))
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        print(f"{len(data):,} examples with a {args.context_slots}-position context")
    else:
        data = datasets.Dataset.from_dict({"prompt": [p for p, _ in pairs], "answer": [a for _, a in pairs]}).map(
            encode, remove_columns=["prompt", "answer"])
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    training = TrainingArguments(output_dir=f"{args.out}/trainer", max_steps=args.steps,
                                 per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                                 lr_scheduler_type="cosine", warmup_steps=args.steps // 20, weight_decay=0.01,
                                 logging_steps=100,
                                 save_strategy="no", report_to=[], seed=args.seed,
                                 dataloader_num_workers=0)
    Trainer(model=model, args=training, train_dataset=data,
            data_collator=collator).train()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved the LM and its tokenizer to {args.out}")
    if args.context_slots and args.validation:
        report = context_report(model.eval(), tokenizer, list(load_manifest(args.validation)), args.context_task,
                                layout)
        with open(os.path.join(args.out, "context_report.json"), "w") as f:
            json.dump(report, f, indent=2)
        print("QA accuracy reading the true context: " + ", ".join(f"{k} {v:.3f}" for k, v in report.items()))


if __name__ == "__main__":
    main()
