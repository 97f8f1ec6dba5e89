"""pengi: audio-language models (Pengi, CLAP) on transformers."""

from transformers import AutoConfig, AutoModel

from .audio import load_audio
from .configuration_pengi import PengiConfig
from .errors import PengiInputError
from .modeling_pengi import Pengi
from .processing_pengi import PengiProcessor

AutoConfig.register("pengi", PengiConfig, exist_ok=True)
AutoModel.register(PengiConfig, Pengi, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["Pengi", "PengiConfig", "PengiProcessor", "PengiInputError", "load_audio"]
