"""What `PengiProcessor`, `CLAPProcessor` and `SLAPProcessor` share: transformers' `ProcessorMixin` with an
`AudioClipFeatureExtractor` for the audio and the model's tokenizer(s), and the model config for the text settings.

The model config is the one source of the settings: the feature extractor is built from it (each family says how,
in `feature_extractor_for`), and the text settings (prompt and text lengths, suffixes, release modes) are read
from it, as the model reads them.

`save_pretrained` writes `ProcessorMixin`'s layout into the model folder:

    processor_config.json    the processor class and the feature extractor's settings
    tokenizer files          the main tokenizer, at the top of the folder
    prompt_tokenizer/        a further tokenizer, in a folder named after its attribute

`from_pretrained` reads that layout, and the layout of earlier pengi versions (the main tokenizer in
``tokenizer/``, no processor_config.json), whose feature extractor it builds from config.json.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerBase, ProcessorMixin
from transformers.utils import FEATURE_EXTRACTOR_NAME, PROCESSOR_NAME

from pengi.audio import AudioClipFeatureExtractor, AudioSource, Window
from pengi.models.pretrained import check_model_type

HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "revision", "token")
LEGACY_TOKENIZER_DIR = "tokenizer"
TOKENIZER_CONFIG = "tokenizer_config.json"


class AudioTextProcessor(ProcessorMixin):
    """A model's feature extractor and tokenizer(s), with its config; see the module docstring.

    The audio calls (`load`, `clip`, `windows`, `batch`, `waveforms`, `audio`, and `sample_rate`,
    `clip_samples`, `variable_length`, `crops_at_random`) are the feature extractor's.
    """

    config_class: type[PreTrainedConfig]
    feature_extractor: AudioClipFeatureExtractor
    tokenizer: PreTrainedTokenizerBase

    @classmethod
    def feature_extractor_for(cls, config: PreTrainedConfig) -> AudioClipFeatureExtractor:
        """The feature extractor a model of ``config`` takes its audio from."""
        raise NotImplementedError

    @classmethod
    def tokenizer_names(cls, config: PreTrainedConfig) -> list[str]:
        """The tokenizer attributes that a model of ``config`` needs."""
        return ["tokenizer"]

    def _attach(self, config: PreTrainedConfig, feature_extractor: AudioClipFeatureExtractor | None,
                **tokenizers: PreTrainedTokenizerBase | None) -> None:
        """`ProcessorMixin.__init__`'s checks and attributes, with optional tokenizers allowed to be None."""
        expected = self.feature_extractor_for(config)
        if feature_extractor is None:
            feature_extractor = expected
        elif diff := _differences(feature_extractor.settings(), expected):
            raise ValueError(f"the feature extractor's settings ({diff}) do not match the model config; build it "
                             f"with {type(self).__name__}.feature_extractor_for(config), or leave it out")
        self.config = config
        self.chat_template = None
        for name, value in {"feature_extractor": feature_extractor, **tokenizers}.items():
            if value is not None:
                self.check_argument_for_proper_class(name, value)
            setattr(self, name, value)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ------------------------------------------------------------------ audio: the feature extractor's
    @property
    def sample_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @property
    def clip_samples(self) -> int:
        return self.feature_extractor.clip_samples

    @property
    def variable_length(self) -> bool:
        return self.feature_extractor.variable_length

    @property
    def crops_at_random(self) -> bool:
        return self.feature_extractor.crops_at_random

    def load(self, source: AudioSource, name: str | None = None, offset: float = 0.0,
             duration: float | None = None) -> torch.Tensor:
        return self.feature_extractor.load(source, name, offset, duration)

    def clip(self, wave: torch.Tensor, crop: str | None = None, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        return self.feature_extractor.clip(wave, crop, generator)

    def windows(self, wave: torch.Tensor, hop_seconds: float | None = None) -> list[Window]:
        return self.feature_extractor.windows(wave, hop_seconds)

    def batch(self, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.feature_extractor.batch(waves)

    def waveforms(self, sources: list[AudioSource]) -> torch.Tensor:
        return self.feature_extractor.waveforms(sources)

    def audio(self, sources: list[AudioSource]) -> dict[str, torch.Tensor]:
        return self.feature_extractor.audio(sources)

    # ------------------------------------------------------------------ saving and loading
    def to_dict(self) -> dict[str, Any]:
        """processor_config.json: the class and the feature extractor (the config is saved as config.json)."""
        return {"processor_class": type(self).__name__, "feature_extractor": self.feature_extractor.to_dict()}

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """`ProcessorMixin.save_pretrained`'s layout; a tokenizer that is None (no prompt encoder) is not saved."""
        if kwargs.get("push_to_hub"):
            raise NotImplementedError("push_to_hub: save the folder, then upload it with huggingface_hub")
        os.makedirs(save_directory, exist_ok=True)
        files = []
        for name in self.get_attributes():
            value = getattr(self, name)
            if value is None or name == "feature_extractor":
                continue
            value._set_processor_class(type(self).__name__)
            folder = save_directory if name == "tokenizer" else os.path.join(save_directory, name)
            files += value.save_pretrained(folder)
        self.to_json_file(os.path.join(save_directory, PROCESSOR_NAME))
        return [*files, os.path.join(save_directory, PROCESSOR_NAME)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, config: PreTrainedConfig | None = None,
                        **kwargs: Any) -> AudioTextProcessor:
        """The processor of a model folder in either layout (module docstring), for ``config`` (the model's, with
        any overrides it was loaded with) or else the folder's config.json. The feature extractor always comes from
        the config; a processor_config.json that disagrees with the folder's config.json is said, and not used."""
        path = pretrained_model_name_or_path
        hub = {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}
        folder_config = None
        if config is None:
            check_model_type(path, cls.config_class, cls.__name__)
            config = folder_config = cls.config_class.from_pretrained(path, **hub)
        tokenizers = {name: load_tokenizer(path, name, **hub) for name in cls.tokenizer_names(config)}
        processor = cls(config, **tokenizers)
        saved = saved_feature_extractor(path)
        if saved is not None and _differences(saved[1], processor.feature_extractor):
            # Overrides given when loading (compat=None, ...) change the config on purpose: compare with the file.
            folder_config = folder_config or cls.config_class.from_pretrained(path, **hub)
            if diff := _differences(saved[1], cls.feature_extractor_for(folder_config)):
                warnings.warn(f"{saved[0]}: the feature extractor saved there ({diff}) differs from what "
                              "config.json gives; using config.json's (save the folder again to update it)",
                              stacklevel=2)
        return processor


def load_tokenizer(path: str | os.PathLike, name: str, **hub: Any) -> PreTrainedTokenizerBase:
    """Tokenizer ``name`` of a model folder: the main one at the top (or in ``tokenizer/``, in folders of earlier
    versions), any other in the subfolder of its name."""
    if name != "tokenizer":
        return AutoTokenizer.from_pretrained(path, subfolder=name, **hub)
    if os.path.isdir(path):
        legacy = not os.path.isfile(os.path.join(path, TOKENIZER_CONFIG)) and \
            os.path.isfile(os.path.join(path, LEGACY_TOKENIZER_DIR, TOKENIZER_CONFIG))
        if not legacy and not os.path.isfile(os.path.join(path, TOKENIZER_CONFIG)):
            raise OSError(f"{path}: no tokenizer ({TOKENIZER_CONFIG} neither in the folder nor in "
                          f"{LEGACY_TOKENIZER_DIR}/)")
        return AutoTokenizer.from_pretrained(path, subfolder=LEGACY_TOKENIZER_DIR if legacy else "", **hub)
    try:
        return AutoTokenizer.from_pretrained(path, **hub)
    except (OSError, ValueError):
        return AutoTokenizer.from_pretrained(path, subfolder=LEGACY_TOKENIZER_DIR, **hub)


def saved_feature_extractor(path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """The feature extractor settings saved in a local folder (processor_config.json first, as transformers reads
    them, then preprocessor_config.json), with the file they came from; None when there are none."""
    for name, key in ((PROCESSOR_NAME, "feature_extractor"), (FEATURE_EXTRACTOR_NAME, None)):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
            data = data.get(key) if key else data
            if isinstance(data, dict):
                return file, data
    return None


def _differences(found: dict[str, Any], expected: AudioClipFeatureExtractor) -> str:
    """The settings in ``found`` that differ from ``expected``'s, as text ("" when none do)."""
    return ", ".join(f"{k} {found.get(k)!r} instead of {v!r}" for k, v in expected.settings().items()
                     if found.get(k) != v)


__all__ = ["AudioTextProcessor", "load_tokenizer", "saved_feature_extractor"]
