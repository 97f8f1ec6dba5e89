"""Stage 1 of a Pengi model trained from scratch: a tokenizer and a small GPT-2 pretrained on the corpus text.

    python recipes/pretrain_lm.py --manifests data/scenes/train.jsonl --out runs/demo/lm

Each example is the token sequence the LM reads inside Pengi: the prompt's tokens, then the answer's tokens
(encoded on its own, as `PengiProcessor.answers` encodes it) and end-of-text. With ``append_prompt_tokens`` the
frozen LM then meets, after the audio and text prefixes, exactly what it was pretrained on.

``--context-slots N`` (N = the Pengi model's audio + text prefix lengths) also puts, in the N positions that the
prefixes will take, a text about the clip (``--context-task``, by default its metadata: every event with its
loudness, length, pitch and order), left-padded; prompts are left-padded to ``--prompt-length`` as Pengi pads
them, and the loss covers the answer only. The frozen LM so learns to answer from whatever fills the prefix
positions, and stage 2 only has to teach the mappers to fill them from the audio. Without it the frozen LM has
never read anything in those positions, and the mappers must learn that too, which they do not (docs/demo-model.md).

Stage 2 (`recipes/train_pengi.py` with ``model.lm_from`` and ``model.tokenizer`` pointing here) keeps it frozen, as the
paper keeps GPT-2 frozen. The tokenizer is a byte-level BPE trained with
`tokenizers`; training is transformers' `Trainer` on a causal-LM objective.
"""

from __future__ import annotations

import argparse

import datasets
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    set_seed,
)

from pengi.data.manifest import load_manifest

EOS, PAD = "<|endoftext|>", "<pad>"  # a pad of its own: the LM collator masks pad ids, and EOS must be learned


def context_examples(manifests: list[str], task: str) -> list[tuple[str, str, str]]:
    """(context, prompt, answer) for every row whose clip has a ``task`` row, the context being that row's answer."""
    rows = [row for path in manifests for row in load_manifest(path)]
    context = {row["audio"]: row["answer"] for row in rows if row["task"] == task}
    return [(context[row["audio"]], row["prompt"], row["answer"]) for row in rows if row["audio"] in context]


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
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-positions", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-slots", type=int, default=0,
                        help="positions before the prompt holding a text about the clip (Pengi's prefix length)")
    parser.add_argument("--context-task", default="metadata", help="the manifest task whose answer is the context")
    parser.add_argument("--prompt-length", type=int, default=24, help="Pengi's prompt_max_length (with contexts)")
    args = parser.parse_args(argv)
    set_seed(args.seed)

    pairs = corpus_pairs(args.manifests)
    tokenizer = train_tokenizer([text for pair in pairs for text in pair], args.vocab_size)
    print(f"{len(pairs):,} distinct prompt/answer pairs, vocabulary {len(tokenizer)}")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    def encode(row: dict) -> dict:
        ids = (tokenizer(row["prompt"])["input_ids"] + tokenizer(row["answer"])["input_ids"]
               + [tokenizer.eos_token_id])[: args.n_positions]
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    def encode_in_context(row: dict) -> dict:
        pad = tokenizer.pad_token_id
        context = tokenizer(row["context"])["input_ids"][-args.context_slots:]
        prompt = tokenizer(row["prompt"])["input_ids"][: args.prompt_length]
        answer = tokenizer(row["answer"])["input_ids"] + [tokenizer.eos_token_id]
        ids = ([pad] * (args.context_slots - len(context)) + context
               + [pad] * (args.prompt_length - len(prompt)) + prompt + answer)[: args.n_positions]
        labels = ([-100] * (args.context_slots + args.prompt_length) + answer)[: args.n_positions]
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


if __name__ == "__main__":
    main()
