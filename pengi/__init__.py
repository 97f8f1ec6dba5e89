"""pengi: audio-language models (Pengi, CLAP, SLAP) on transformers."""

from transformers import AutoConfig, AutoModel

from pengi.audio import load_audio
from pengi.errors import PengiInputError
from pengi.models.clap.configuration_clap import CLAPConfig
from pengi.models.clap.modeling_clap import CLAP
from pengi.models.clap.processing_clap import CLAPProcessor
from pengi.models.pengi.configuration_pengi import PengiConfig
from pengi.models.pengi.modeling_pengi import Pengi
from pengi.models.pengi.processing_pengi import PengiProcessor
from pengi.models.slap.configuration_slap import SLAPConfig
from pengi.models.slap.modeling_slap import SLAP
from pengi.models.slap.processing_slap import SLAPProcessor
from pengi.modules.configuration_cnn14 import Cnn14Config
from pengi.modules.configuration_slap_tower import SlapAudioConfig

AutoConfig.register("pengi", PengiConfig, exist_ok=True)
AutoModel.register(PengiConfig, Pengi, exist_ok=True)
AutoConfig.register("pengi_clap", CLAPConfig, exist_ok=True)
AutoModel.register(CLAPConfig, CLAP, exist_ok=True)
AutoConfig.register("pengi_slap", SLAPConfig, exist_ok=True)
AutoModel.register(SLAPConfig, SLAP, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["CLAP", "CLAPConfig", "CLAPProcessor", "Cnn14Config", "Pengi", "PengiConfig", "PengiProcessor",
           "PengiInputError", "SLAP", "SLAPConfig", "SLAPProcessor", "SlapAudioConfig", "load_audio"]
