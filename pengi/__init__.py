"""pengi: audio-language models (Pengi, CLAP) on transformers."""

from transformers import AutoConfig, AutoModel

from .audio import load_audio
from .cnn14 import Cnn14Config
from .configuration_clap import CLAPConfig
from .configuration_pengi import PengiConfig
from .errors import PengiInputError
from .modeling_clap import CLAP
from .modeling_pengi import Pengi
from .processing_clap import CLAPProcessor
from .processing_pengi import PengiProcessor

AutoConfig.register("pengi", PengiConfig, exist_ok=True)
AutoModel.register(PengiConfig, Pengi, exist_ok=True)
AutoConfig.register("pengi_clap", CLAPConfig, exist_ok=True)
AutoModel.register(CLAPConfig, CLAP, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["CLAP", "CLAPConfig", "CLAPProcessor", "Cnn14Config", "Pengi", "PengiConfig", "PengiProcessor",
           "PengiInputError", "load_audio"]
