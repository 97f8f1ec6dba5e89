"""pengi: audio-language models (Pengi, CLAP, SLAP) on transformers."""

from transformers import AutoConfig, AutoModel

from .audio import load_audio
from .cnn14 import Cnn14Config
from .configuration_clap import CLAPConfig
from .configuration_pengi import PengiConfig
from .configuration_slap import SLAPConfig
from .errors import PengiInputError
from .modeling_clap import CLAP
from .modeling_pengi import Pengi
from .modeling_slap import SLAP
from .processing_clap import CLAPProcessor
from .processing_pengi import PengiProcessor
from .processing_slap import SLAPProcessor
from .slap_audio import SlapAudioConfig

AutoConfig.register("pengi", PengiConfig, exist_ok=True)
AutoModel.register(PengiConfig, Pengi, exist_ok=True)
AutoConfig.register("pengi_clap", CLAPConfig, exist_ok=True)
AutoModel.register(CLAPConfig, CLAP, exist_ok=True)
AutoConfig.register("pengi_slap", SLAPConfig, exist_ok=True)
AutoModel.register(SLAPConfig, SLAP, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["CLAP", "CLAPConfig", "CLAPProcessor", "Cnn14Config", "Pengi", "PengiConfig", "PengiProcessor",
           "PengiInputError", "SLAP", "SLAPConfig", "SLAPProcessor", "SlapAudioConfig", "load_audio"]
