"""Evaluate a SLAP model on a scene-corpus split: retrieval, zero-shot classification, and locating sounds in time.

    python -m pengi_recipes.evaluate_slap --model runs/slap-tiny/final --split data/scenes-var/test --out results.json

Reads ``{split}.jsonl`` (caption rows) and ``{split}.scenes.jsonl`` (scene graphs). Reports:

* text->audio and audio->text R@1/R@5/R@10 and mAP@10 (`pengi/evaluation/metrics/retrieval`), captions as queries;
* zero-shot classification of the eight source types, each named as the captions name it ("a steady tone",
  "a beeping sound", ...): accuracy on clips whose events are all of one type, and multi-label mAP on all clips;
* localisation: for each clip and each type in it, whether the time step most similar to that type's text falls
  inside an event of that type (the chance rate, the share of the clip that type covers, is given beside it).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pengi import SLAP
from pengi.data.manifest import load_manifest
from pengi.evaluation import load_metric
from pengi.synthetic.scenes import TYPES
from pengi.synthetic.scenes.captions import NOUNS

LABEL_TEXTS = {t: f"a {NOUNS[t][0][0]}" for t in TYPES}


def embed(model: SLAP, paths: list[str], batch_size: int) -> torch.Tensor:
    return torch.cat([model.embed_audio(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)])


def evaluate_split(model: SLAP, split: str, batch_size: int = 32) -> dict:
    rows = [r for r in load_manifest(f"{split}.jsonl") if r["task"] == "caption"]
    scenes = {f"{s['seed']}.wav": s for s in map(json.loads, open(f"{split}.scenes.jsonl"))}
    clips = list(dict.fromkeys(r["audio"] for r in rows))
    index = {c: i for i, c in enumerate(clips)}
    audio = embed(model, clips, batch_size)
    text = model.embed_text([r["answer"] for r in rows])
    results: dict = {"clips": len(clips)}
    retrieval = load_metric("retrieval").compute(predictions=(audio @ text.T).T.numpy(),
                                                 references=[index[r["audio"]] for r in rows])
    results.update({k: v for k, v in retrieval.items() if "@" in k})

    graphs = [scenes[c.rsplit("/", 1)[-1]] for c in clips]
    present = np.array([[any(e["source"] == t for e in g["events"]) for t in TYPES] for g in graphs])
    scores = (audio @ model.embed_text([LABEL_TEXTS[t] for t in TYPES]).T).numpy()
    single = present.sum(axis=1) == 1
    results["zero_shot_accuracy"] = load_metric("classification").compute(
        predictions=scores[single].tolist(), references=present[single].argmax(axis=1).tolist())["accuracy"]
    results["zero_shot_single_type_clips"] = int(single.sum())
    results["zero_shot_mAP"] = load_metric("classification", "multilabel").compute(
        predictions=scores.tolist(), references=present.astype(int).tolist())["mAP"]
    results.update(localisation(model, clips, graphs, batch_size))
    return results


def localisation(model: SLAP, clips: list[str], graphs: list[dict], batch_size: int) -> dict:
    label_text = model.embed_text([LABEL_TEXTS[t] for t in TYPES])
    hits, chance = [], []
    for start in range(0, len(clips), batch_size):
        for (times, frames), g in zip(model.frames(clips[start:start + batch_size]), graphs[start:start + batch_size]):
            sim = frames @ label_text.T
            for k, t in enumerate(TYPES):
                spans = [(e["onset"], e["onset"] + e["length"]) for e in g["events"] if e["source"] == t]
                if not spans:
                    continue
                peak = float(times[sim[:, k].argmax()])
                hits.append(any(a <= peak <= b for a, b in spans))
                inside = [any(a <= float(x) <= b for a, b in spans) for x in times]
                chance.append(float(np.mean(inside)))
    return {"locate_hit_rate": float(np.mean(hits)), "locate_chance": float(np.mean(chance)),
            "locate_queries": len(hits)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", required=True, help="path prefix of {split}.jsonl and {split}.scenes.jsonl")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args(argv)
    model = SLAP.from_pretrained(args.model).eval()
    results = evaluate_split(model, args.split, args.batch_size)
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
