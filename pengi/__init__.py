"""pengi: audio-language models (Pengi, CLAP, SLAP) on transformers."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

from pengi.audio import AudioClipFeatureExtractor, load_audio
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

# After `import pengi`, the Auto classes load pengi's folders: AutoConfig, AutoModel, AutoProcessor (either folder
# layout, see pengi.models.processing) and AutoFeatureExtractor (folders with a saved feature extractor).
for _config, _model, _processor in ((PengiConfig, Pengi, PengiProcessor), (CLAPConfig, CLAP, CLAPProcessor),
                                    (SLAPConfig, SLAP, SLAPProcessor)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoProcessor.register(_config, _processor, exist_ok=True)
    AutoFeatureExtractor.register(_config, AudioClipFeatureExtractor, exist_ok=True)
del _config, _model, _processor

__version__ = "0.1.0"
__all__ = ["AudioClipFeatureExtractor", "CLAP", "CLAPConfig", "CLAPProcessor", "Cnn14Config", "Pengi", "PengiConfig",
           "PengiProcessor", "PengiInputError", "SLAP", "SLAPConfig", "SLAPProcessor", "SlapAudioConfig", "load_audio"]
