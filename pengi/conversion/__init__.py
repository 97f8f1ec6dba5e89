"""The machinery every checkpoint converter shares: safe reading (`checkpoints`), the key-by-key mapping with its
report (`keymap`), the release HTSAT's keys (`htsat`), recomputed buffers (`buffers`) and tokenizers
(`tokenizers`). Each release's own rules live beside its model family (`pengi.models.*.convert_*`)."""

from pengi.conversion.checkpoints import load_release_state_dict, strip_module_prefix
from pengi.conversion.htsat import SWIN_BLOCK_RENAMES, HTSATKeys
from pengi.conversion.keymap import (
    MEL_FILTERS_KEY,
    OBSOLETE_BUFFER_RULES,
    WINDOW_KEY,
    ConversionError,
    ConversionReport,
    DropRule,
    KeyMapper,
    build_converted,
    names,
    run_conversion,
)
from pengi.conversion.tokenizers import check_tokenizer, load_tokenizer

__all__ = ["MEL_FILTERS_KEY", "OBSOLETE_BUFFER_RULES", "SWIN_BLOCK_RENAMES", "WINDOW_KEY", "ConversionError",
           "ConversionReport", "DropRule", "HTSATKeys", "KeyMapper", "build_converted", "check_tokenizer",
           "load_release_state_dict", "load_tokenizer", "names", "run_conversion", "strip_module_prefix"]
