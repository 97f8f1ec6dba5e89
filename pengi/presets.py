"""Every family's named model shapes in one place: the papers' pengi-base, CLAP and SLAP, and small shapes for
tests and CPU demos. Each family's own module (`pengi.models.<family>.presets`) defines them."""

from pengi.models.clap.presets import CLAP_PRESETS, clap_htsat_gpt2, clap_paper, clap_tiny
from pengi.models.pengi.presets import PRESETS, pengi_base, pengi_base_no_text_enc, tiny
from pengi.models.slap.presets import SLAP_PRESETS, slap_base, slap_tiny, slap_tiny_audio

__all__ = ["CLAP_PRESETS", "PRESETS", "SLAP_PRESETS", "clap_htsat_gpt2", "clap_paper", "clap_tiny", "pengi_base",
           "pengi_base_no_text_enc", "slap_base", "slap_tiny", "slap_tiny_audio", "tiny"]
