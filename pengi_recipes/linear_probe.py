"""Linear-probe evaluation of a CLAP audio encoder, as in the CLAP paper (arXiv 2206.04769, supervised setting).

    python -m pengi_recipes.linear_probe --config clap/linear-probe \\
        --set model=runs/clap/final data.train=data/esc50/folds1-4.jsonl data.test=data/esc50/fold5.jsonl
    python -m pengi_recipes.linear_probe --config clap/linear-probe --finetune     # whole encoder

Frozen (default): every clip is embedded once, with the model's inference crop, and the head (``head.layers``
1 = "Freeze L1", 3 = "Freeze L3") trains on the cached embeddings with Adam at ``optim.lr`` (1e-3) for
``optim.epochs`` (30). ``--finetune`` trains the audio encoder with the head at ``finetune.lr`` (1e-4), long clips
cropped afresh each epoch. The manifests are the training pipeline's: rows of task ``data.task`` (every row if
null) with the label in ``answer``; with ``data.multi_label`` the answer is a comma-separated list of labels.
Unreadable audio is logged and skipped. Prints and writes ``output_dir/results.json`` (test accuracy, or mAP for
multi-label) and saves the head (``head.safetensors``; fine-tuned, the whole model in ``model/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import datasets
import torch
from omegaconf import MISSING
from safetensors.torch import save_file

from pengi import CLAP
from pengi.cli.common import pick_device
from pengi.data.dataset import AudioTextDataset
from pengi.data.manifest import load_manifest
from pengi.evaluation import load_metric
from pengi.models.clap.probe import AudioClassifier, ProbeHead
from pengi_recipes.config import ConfigError, load_config

log = logging.getLogger("pengi")


# ----------------------------------------------------------------------------- data
def labels_of(answer: str, multi_label: bool) -> list[str]:
    return [x.strip() for x in answer.split(",") if x.strip()] if multi_label else [answer.strip()]


def load_rows(path: str, task: str | None) -> datasets.Dataset:
    rows = load_manifest(path)
    if task:
        rows = rows.filter(lambda r: r["task"] == task)
    if len(rows) == 0:
        raise ValueError(f"{path}: no rows" + (f" of task {task!r} (data.task)" if task else ""))
    return rows


def class_names(train: datasets.Dataset, test: datasets.Dataset, multi_label: bool, train_path: str,
                test_path: str) -> list[str]:
    """The labels of the training rows, sorted; a test label never seen in training cannot be learnt: an error."""
    classes = sorted({x for a in train["answer"] for x in labels_of(a, multi_label)})
    unseen = sorted({x for a in test["answer"] for x in labels_of(a, multi_label)} - set(classes))
    if unseen:
        raise ValueError(f"{test_path}: labels not in {train_path}: {', '.join(unseen[:10])}")
    return classes


def make_collate(classes: list[str], multi_label: bool) -> Callable:
    index = {c: i for i, c in enumerate(classes)}

    def collate(items: Sequence[dict | None]) -> dict[str, torch.Tensor] | None:
        items = [x for x in items if x is not None]  # unreadable audio, already logged
        if not items:
            return None
        if multi_label:
            target = torch.zeros(len(items), len(classes))
            for row, x in enumerate(items):
                target[row, [index[c] for c in labels_of(x["answer"], True)]] = 1.0
        else:
            target = torch.tensor([index[x["answer"].strip()] for x in items])
        return {"waveforms": torch.stack([x["waveform"] for x in items]), "target": target}

    return collate


# ----------------------------------------------------------------------------- training
def loss_fn(multi_label: bool) -> torch.nn.Module:
    return torch.nn.BCEWithLogitsLoss() if multi_label else torch.nn.CrossEntropyLoss()


@torch.inference_mode()
def embed_all(model: AudioClassifier, loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and targets of every readable clip, computed once (the frozen encoder gives the same each epoch)."""
    model.eval()
    feats, targets = [], []
    for batch in loader:
        if batch is not None:
            feats.append(model.features(batch["waveforms"]).cpu())
            targets.append(batch["target"])
    return torch.cat(feats), torch.cat(targets)


def train_frozen(model: AudioClassifier, train: torch.utils.data.DataLoader, cfg: dict, multi_label: bool,
                 generator: torch.Generator) -> list[float]:
    """The head alone on cached embeddings; returns the mean training loss of each epoch."""
    feats, targets = embed_all(model, train)
    cached = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(feats, targets), shuffle=True,
                                         batch_size=cfg["data"]["batch_size"], generator=generator)
    opt = torch.optim.Adam(model.head.parameters(), lr=float(cfg["optim"]["lr"]))
    return fit(model.head, cached, opt, cfg["optim"]["epochs"], multi_label, on_epoch=None)


def train_finetuned(model: AudioClassifier, train: torch.utils.data.DataLoader, cfg: dict,
                    multi_label: bool) -> list[float]:
    """Encoder and head together; the dataset crops long clips afresh each epoch."""
    model.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["finetune"]["lr"]))
    return fit(model, train, opt, cfg["optim"]["epochs"], multi_label, on_epoch=train.dataset.set_epoch,
               unpack=lambda batch: (batch["waveforms"], batch["target"]))


def fit(module: torch.nn.Module, loader: torch.utils.data.DataLoader, opt: torch.optim.Optimizer, epochs: int,
        multi_label: bool, on_epoch: Callable[[int], None] | None,
        unpack: Callable = lambda batch: batch) -> list[float]:
    criterion = loss_fn(multi_label)
    device = next(module.parameters()).device
    losses = []
    module.train()
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch)
        total, n = 0.0, 0
        for batch in loader:
            if batch is None:
                continue
            inputs, target = unpack(batch)
            loss = criterion(module(inputs.to(device)), target.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(target), n + len(target)
        losses.append(total / max(n, 1))
        log.info("epoch %d: loss %.4f", epoch + 1, losses[-1])
    return losses


@torch.inference_mode()
def predict(model: AudioClassifier, test: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores (probabilities) and targets of the test clips."""
    feats, targets = embed_all(model, test)
    logits = model.head(feats.to(model.head_device)).float().cpu()
    return logits, targets


def score(logits: torch.Tensor, targets: torch.Tensor, classes: list[str], multi_label: bool) -> dict:
    if multi_label:
        result = load_metric("classification", "multilabel").compute(
            predictions=logits.sigmoid().tolist(), references=targets.long().tolist(), label_names=classes)
        return {"metric": "mAP", "value": result["mAP"], "average_precision": result["average_precision"]}
    result = load_metric("classification").compute(predictions=logits.softmax(-1).tolist(),
                                                   references=targets.tolist())
    return {"metric": "accuracy", "value": result["accuracy"]}


# ----------------------------------------------------------------------------- config
@dataclass
class ProbeData:
    """``task``: only rows of this task (null: every row); ``multi_label``: comma-separated labels, mAP."""

    train: str = MISSING
    test: str = MISSING
    task: str | None = None
    multi_label: bool = False
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class ProbeHeadShape:
    """1 layer: the CLAP paper's Freeze L1; 3: Freeze L3. ``hidden`` defaults to the embedding size."""

    layers: int = 1
    hidden: int | None = None


@dataclass
class ProbeOptim:
    lr: float = 1e-3
    epochs: int = 30


@dataclass
class Finetune:
    lr: float = 1e-4


@dataclass
class ProbeRecipe:
    model: str = MISSING  # a CLAP folder
    output_dir: str = MISSING
    seed: int = 0
    device: str = "auto"
    data: ProbeData = field(default_factory=ProbeData)
    head: ProbeHeadShape = field(default_factory=ProbeHeadShape)
    optim: ProbeOptim = field(default_factory=ProbeOptim)
    finetune: Finetune = field(default_factory=Finetune)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file, or a shipped config (clap/linear-probe)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values")
    parser.add_argument("--finetune", action="store_true", help="train the audio encoder too (at finetune.lr)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set, ProbeRecipe)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.manual_seed(cfg.get("seed", 0))
    data = cfg["data"]
    multi_label = bool(data.get("multi_label", False))

    train_rows, test_rows = load_rows(data["train"], data.get("task")), load_rows(data["test"], data.get("task"))
    classes = class_names(train_rows, test_rows, multi_label, data["train"], data["test"])
    clap = CLAP.from_pretrained(cfg["model"])
    head_cfg = cfg.get("head", {})
    model = AudioClassifier(clap, ProbeHead(clap.config.d_proj, len(classes), head_cfg.get("layers", 1),
                                            head_cfg.get("hidden")))
    model.encoder.requires_grad_(False)
    model.to(pick_device(cfg.get("device", "auto")))

    generator = torch.Generator().manual_seed(cfg.get("seed", 0))
    loader_kwargs = dict(batch_size=data["batch_size"], collate_fn=make_collate(classes, multi_label),
                         num_workers=data.get("num_workers", 0))
    seed = cfg.get("seed", 0)
    test = torch.utils.data.DataLoader(AudioTextDataset(test_rows, clap.processor, train=False), **loader_kwargs)
    if args.finetune:
        train = torch.utils.data.DataLoader(AudioTextDataset(train_rows, clap.processor, train=True, seed=seed),
                                            shuffle=True, generator=generator, **loader_kwargs)
        losses = train_finetuned(model, train, cfg, multi_label)
    else:
        train = torch.utils.data.DataLoader(AudioTextDataset(train_rows, clap.processor, train=False),
                                            **loader_kwargs)
        losses = train_frozen(model, train, cfg, multi_label, generator)
    logits, targets = predict(model, test)

    mode = "finetune" if args.finetune else f"frozen L{head_cfg.get('layers', 1)}"
    results = {"model": cfg["model"], "mode": mode, **score(logits, targets, classes, multi_label),
               "classes": classes, "num_train": len(train_rows), "num_test": len(targets),
               "epochs": cfg["optim"]["epochs"], "train_loss": [round(x, 5) for x in losses]}
    out = cfg["output_dir"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    save_file({k: v.contiguous().cpu() for k, v in model.head.state_dict().items()},
              os.path.join(out, "head.safetensors"), metadata={"classes": json.dumps(classes), "mode": mode})
    if args.finetune:
        clap.save_pretrained(os.path.join(out, "model"))
    print(json.dumps({k: results[k] for k in ("mode", "metric", "value", "num_train", "num_test")}))
    return results


if __name__ == "__main__":
    main()
