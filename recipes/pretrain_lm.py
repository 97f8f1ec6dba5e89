"""Stage 1 of a Pengi model trained from scratch: a tokenizer and a small GPT-2 pretrained on the corpus text.

    python recipes/pretrain_lm.py --manifests data/scenes/train.jsonl --out runs/demo/lm

Each example is the token sequence the LM reads inside Pengi: the prompt's tokens, then the answer's tokens
(encoded on its own, as `PengiProcessor.answers` encodes it) and end-of-text. With ``append_prompt_tokens`` the
frozen LM then meets, after the audio and text prefixes, exactly what it was pretrained on. Stage 2
(`recipes/train_pengi.py` with ``model.lm_from`` and ``model.tokenizer`` pointing here) keeps it frozen, as the
paper keeps GPT-2 frozen. The tokenizer is a byte-level BPE trained with
`tokenizers`; training is transformers' `Trainer` on a causal-LM objective.
"""

from __future__ import annotations

import argparse

import datasets
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    set_seed,
)

from pengi.data.manifest import load_manifest

EOS, PAD = "<|endoftext|>", "<pad>"  # a pad of its own: the LM collator masks pad ids, and EOS must be learned


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

    data = datasets.Dataset.from_dict({"prompt": [p for p, _ in pairs], "answer": [a for _, a in pairs]}).map(
        encode, remove_columns=["prompt", "answer"])
    training = TrainingArguments(output_dir=f"{args.out}/trainer", max_steps=args.steps,
                                 per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
                                 lr_scheduler_type="cosine", warmup_steps=args.steps // 20, weight_decay=0.01,
                                 logging_steps=100,
                                 save_strategy="no", report_to=[], seed=args.seed,
                                 dataloader_num_workers=0)
    Trainer(model=model, args=training, train_dataset=data,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved the LM and its tokenizer to {args.out}")


if __name__ == "__main__":
    main()
