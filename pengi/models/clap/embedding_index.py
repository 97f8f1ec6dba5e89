"""A saved set of audio embeddings and the files they came from: `pengi embed` writes one, `pengi retrieve`
searches it.

Two files, so that each is readable by other tools: ``NAME.safetensors`` holds ``embeddings`` (float32,
``(n, d)``, L2-normalised; the model folder in its metadata) and ``NAME.jsonl`` beside it has one line per row,
``{"audio": path}``, in row order. A large index is sharded: more such pairs beside the first, listed in
``NAME.shards.json`` (`open_index` reads either kind; a sharded one is searched shard by shard).
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


# ----------------------------------------------------------------------------- sharded indexes
# A large index is kept in several file pairs, so that no file has to be rewritten whole as it grows: NAME.safetensors
# (+ NAME.jsonl) is the first, NAME.00002.safetensors (+ NAME.00002.jsonl) the next, ..., and NAME.shards.json lists
# them, in order, once there is more than one. `pengi embed --rows-per-file` sets their size.
SHARDS_FORMAT = "pengi-embedding-shards"


def shards_file(path: str) -> str:
    """The file listing the shards of the index ``path`` (NAME.shards.json)."""
    return os.path.splitext(path)[0] + ".shards.json"


def shard_file(path: str, number: int) -> str:
    """The embeddings file of shard ``number`` (from 1) of the index ``path``."""
    stem, ext = os.path.splitext(path)
    return path if number == 1 else f"{stem}.{number:05d}{ext}"


def read_shards(path: str) -> tuple[str, list[str]] | None:
    """``(model, shard files)`` of a sharded index, or None if ``path`` is not sharded."""
    listing = shards_file(path)
    if not os.path.isfile(listing):
        return None
    try:
        with open(listing, encoding="utf-8") as f:
            data = json.load(f)
        names = data["files"] if data.get("format") == SHARDS_FORMAT else None
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
        names = None
    if not isinstance(names, list):
        raise PengiInputError(listing, "is not a shard list written by `pengi embed`")
    folder = os.path.dirname(os.path.abspath(path))
    return str(data.get("model", "")), [os.path.join(folder, name) for name in names]


def write_shards(path: str, model: str, files: list[str]) -> None:
    """List the shards of ``path`` (written after the shards themselves, under a temporary name, renamed)."""
    listing = shards_file(path)
    with open(listing + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"format": SHARDS_FORMAT, "model": model, "files": [os.path.basename(p) for p in files]}, f,
                  indent=1)
    os.replace(listing + ".tmp", listing)


def read_paths(path: str) -> list[str]:
    """The audio paths of one embeddings file, from its JSONL (without loading the embeddings)."""
    names = paths_file(path)
    if not os.path.isfile(names):
        return []
    with open(names, encoding="utf-8") as f:
        try:
            return [json.loads(line)["audio"] for line in f if line.strip()]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PengiInputError(names, f"each line must be {{\"audio\": path}} ({err})") from None


@dataclass
class ShardedIndex:
    """An index in several files, read one shard at a time: searching never holds more than one shard."""

    model: str
    files: list[str]

    @property
    def paths(self) -> list[str]:
        return [p for file in self.files for p in read_paths(file)]

    def __len__(self) -> int:
        return len(self.paths)

    def shards(self):
        for file in self.files:
            yield EmbeddingIndex.load(file)

    def search(self, queries: torch.Tensor, k: int) -> list[list[dict]]:
        """The ``k`` clips most similar to each query, over every shard (as `EmbeddingIndex.search`)."""
        best_scores, best_names = None, [[] for _ in range(len(queries))]
        for shard in self.shards():
            if not len(shard):
                continue
            if queries.shape[-1] != shard.embeddings.shape[-1]:
                shard.search(queries, k)  # raises the dimension error
            scores = queries.float() @ shard.embeddings.float().T
            top = scores.topk(min(k, len(shard)), dim=-1)
            names = [[shard.paths[i] for i in row] for row in top.indices.tolist()]
            if best_scores is None:
                best_scores, best_names = top.values, names
                continue
            merged = torch.cat([best_scores, top.values], dim=-1)
            keep = merged.topk(min(k, merged.shape[-1]), dim=-1)
            pool = [a + b for a, b in zip(best_names, names)]
            best_scores = keep.values
            best_names = [[row[i] for i in idx] for row, idx in zip(pool, keep.indices.tolist())]
        if best_scores is None:
            raise PengiInputError("index", "the index is empty")
        return [[{"audio": name, "score": round(s, 4)} for name, s in zip(names, row.tolist())]
                for names, row in zip(best_names, best_scores)]


def open_index(path: str) -> EmbeddingIndex | ShardedIndex:
    """The index ``path`` names, whole (one file pair) or sharded (NAME.shards.json beside it)."""
    sharded = read_shards(path)
    if sharded is None:
        return EmbeddingIndex.load(path)
    model, files = sharded
    for file in files:
        if not os.path.isfile(file):
            raise PengiInputError(file, f"a shard listed in {shards_file(path)} is missing")
    return ShardedIndex(model, files)
