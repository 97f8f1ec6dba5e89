"""A saved set of audio embeddings and the files they came from: `pengi embed` writes one, `pengi retrieve`
searches it.

Two files, so that each is readable by other tools: ``NAME.safetensors`` holds ``embeddings`` (float32,
``(n, d)``, L2-normalised; the model folder in its metadata) and ``NAME.jsonl`` beside it has one line per row,
``{"audio": path}``, in row order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from pengi.errors import PengiInputError


def paths_file(path: str) -> str:
    """The JSONL file that names the audio of each row of the embeddings file ``path``."""
    return os.path.splitext(path)[0] + ".jsonl"


def top_matches(queries: torch.Tensor, candidates: torch.Tensor, names: list[str], k: int,
                key: str = "match") -> list[list[dict]]:
    """For each query embedding, the ``k`` candidates of highest cosine similarity, best first, as
    ``{key: name, "score": cosine}``."""
    scores = queries.float().to(candidates.device) @ candidates.float().T
    best = scores.topk(min(k, len(names)), dim=-1)
    return [[{key: names[i], "score": round(s, 4)} for s, i in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(best.values, best.indices)]


@dataclass
class EmbeddingIndex:
    """Embeddings ``(n, d)`` with the audio path of each row, and the model that made them."""

    model: str
    paths: list[str] = field(default_factory=list)
    embeddings: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, paths: list[str], embeddings: torch.Tensor) -> None:
        embeddings = embeddings.detach().float().cpu()
        self.embeddings = embeddings if self.embeddings is None else torch.cat([self.embeddings, embeddings])
        self.paths += paths

    def search(self, queries: torch.Tensor, k: int) -> list[list[dict]]:
        """The ``k`` clips most similar to each query embedding (text or audio, from the same model)."""
        if self.embeddings is None or not self.paths:
            raise PengiInputError("index", "the index is empty")
        if queries.shape[-1] != self.embeddings.shape[-1]:
            raise PengiInputError("index", f"holds {self.embeddings.shape[-1]}-d embeddings but the model makes "
                                           f"{queries.shape[-1]}-d ones: it was made with another model")
        return top_matches(queries, self.embeddings, self.paths, k, key="audio")

    def save(self, path: str) -> None:
        """Write both files, each under a temporary name first; the embeddings go first, so a run killed in
        between leaves extra rows that `load` drops, never rows without a name."""
        if self.embeddings is None:
            raise ValueError("nothing to save: no embeddings")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous()}, path + ".tmp",
                  metadata={"format": "pengi-embeddings", "model": self.model})
        os.replace(path + ".tmp", path)
        names = paths_file(path)
        with open(names + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"audio": p}, ensure_ascii=False) + "\n" for p in self.paths)
        os.replace(names + ".tmp", names)

    @classmethod
    def load(cls, path: str) -> EmbeddingIndex:
        names = paths_file(path)
        for needed in (path, names):
            if not os.path.isfile(needed):
                raise PengiInputError(needed, "not found (written by `pengi embed ... --out NAME.safetensors`)")
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                embeddings = f.get_tensor("embeddings")
        except (SafetensorError, OSError, KeyError) as err:
            raise PengiInputError(path, f"not an embedding index written by `pengi embed` ({err})") from None
        with open(names, encoding="utf-8") as f:
            try:
                paths = [json.loads(line)["audio"] for line in f if line.strip()]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise PengiInputError(names, f"each line must be {{\"audio\": path}} ({err})") from None
        if len(paths) > len(embeddings):
            raise PengiInputError(names, f"names {len(paths)} clips but {path} holds {len(embeddings)} embeddings")
        return cls(meta.get("model", ""), paths, embeddings[:len(paths)])
