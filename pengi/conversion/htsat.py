"""The HTSAT of the Pengi and msclap releases (``htsat.*``, the code of the HTS-AT paper) onto transformers'
``ClapAudioModel``: key renames, the fused qkv split, and the stored Swin buffers checked against ours."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedConfig

from pengi.conversion.buffers import swin_relative_position_index, swin_shift_mask

if TYPE_CHECKING:
    from pengi.conversion.keymap import KeyMapper

# Inside a Swin block: release name -> ClapAudioLayer name.
SWIN_BLOCK_RENAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


class HTSATKeys:
    """Keys of the releases' HTSAT (``SRC`` = e.g. ``audio_encoder.base.htsat.``) -> ``ClapAudioModel``'s.

    ``bn0`` -> ``batch_norm``; in each Swin block ``norm1``/``norm2`` -> ``layernorm_before``/``layernorm_after``,
    the fused ``attn.qkv`` -> ``attention.self.{query,key,value}``, ``attn.proj`` -> ``attention.output.dense``,
    ``mlp.fc1``/``mlp.fc2`` -> ``intermediate.dense``/``output.dense``; ``patch_embed``, ``downsample`` and
    ``norm`` keep their names. The stored ``attn_mask`` buffers are checked and dropped, the relative position
    indices checked and kept, the TSCAM classification head (``tscam_conv``, ``head``) dropped.
    """

    def __init__(self, src: str, dst: str, audio_config: PreTrainedConfig):
        self.src, self.dst = src, dst
        s = re.escape(src)
        self.block_re = re.compile(s + r"layers\.(\d+)\.blocks\.(\d+)\.(.+)")
        self.buffer_re = re.compile(s + r"layers\.(\d+)\.blocks\.(\d+)\.(attn_mask|attn\.relative_position_index)")
        self.downsample_re = re.compile(s + r"layers\.(\d+)\.downsample\.((?:reduction|norm)\.(?:weight|bias))")
        self.head_re = re.compile(s + r"(tscam_conv|head)\.(weight|bias)")
        self.renames = ((src + "bn0.", dst + "batch_norm."), (src + "patch_embed.", dst + "patch_embed."),
                        (src + "norm.", dst + "norm."))
        self.window = audio_config.window_size
        stride = audio_config.patch_stride
        grid = audio_config.spec_size // (stride[0] if isinstance(stride, (list, tuple)) else stride)
        self.resolutions = [grid // 2 ** i for i in range(len(audio_config.depths))]

    def map(self, m: KeyMapper, key: str, value: torch.Tensor) -> bool:
        """Map or drop ``key`` if it belongs to the HTSAT; False if it does not."""
        if not key.startswith(self.src):
            return False
        if self.head_re.fullmatch(key):
            m.drop(key, "TSCAM classification head, unused for the embedding")
            return True
        if match := self.buffer_re.fullmatch(key):
            self._buffer(m, key, value, int(match.group(1)), int(match.group(2)), match.group(3))
            return True
        if match := self.block_re.fullmatch(key):
            stage, block, name = match.groups()
            dst = f"{self.dst}layers.{stage}.blocks.{block}."
            if name in ("attn.qkv.weight", "attn.qkv.bias"):
                if value.shape[0] % 3:
                    m.problems.append(f"{key}: shape {list(value.shape)} does not split into query/key/value")
                    return True
                kind = name.rsplit(".", 1)[1]
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    m.put(f"{dst}attention.self.{part}.{kind}", chunk.clone(), key)
                return True
            module, _, leaf = name.rpartition(".")
            if module in SWIN_BLOCK_RENAMES and leaf in ("weight", "bias"):
                m.put(f"{dst}{SWIN_BLOCK_RENAMES[module]}.{leaf}", value, key)
                return True
            if name == "attn.relative_position_bias_table":
                m.put(f"{dst}attention.self.relative_position_bias_table", value, key)
                return True
        if match := self.downsample_re.fullmatch(key):
            m.put(f"{self.dst}layers.{match.group(1)}.downsample.{match.group(2)}", value, key)
            return True
        return m.rename(key, value, self.renames)

    def _buffer(self, m: KeyMapper, key: str, value: torch.Tensor, stage: int, block: int, name: str) -> None:
        if name == "attn.relative_position_index":
            expected = swin_relative_position_index(self.window)
            if value.shape != expected.shape or not torch.equal(value.long(), expected):
                m.problems.append(f"{key} is not the Swin relative position index of a {self.window}x"
                                  f"{self.window} window")
                return
            m.put(f"{self.dst}layers.{stage}.blocks.{block}.attention.self.relative_position_index", value, key)
            m.checked.add("stored relative position indices = our model's")
            return
        # attn_mask: our model builds the same mask at run time, so the stored one is checked and dropped.
        if stage >= len(self.resolutions):
            m.unknown.append(key)
            return
        size = self.resolutions[stage]
        shift = self.window // 2 if block % 2 else 0
        if size <= self.window or shift == 0:
            m.problems.append(f"{key}: no shifted-window mask is expected in stage {stage} block {block}")
            return
        expected = swin_shift_mask(size, size, self.window, shift)
        if value.shape != expected.shape or not torch.equal(value.float(), expected):
            m.problems.append(f"{key} differs from the shifted-window mask our model computes")
            return
        m.drop(key, "shifted-window attention mask, equal to the one our model computes at run time")
        m.checked.add("stored shifted-window attention masks = our model's")
