"""TempScale and token-group sparse attention for existing Hugging Face checkpoints.

    from hf_sparse_tempscale import patch_model
    patch_model(model, temperature=0.9, window=4, pattern="independent_query")
"""

from .attention import ATTENTION_NAME
from .config import PATTERNS, SparseTempScaleConfig
from .loading import from_pretrained, load_cross_encoder, load_sentence_transformer
from .patch import get_patch_config, is_patched, patch_model, patched, unpatch_model
from .segments import MissingSegmentsError
from .support import SUPPORTED, UNSUPPORTED

__version__ = "0.1.0"

__all__ = [
    "ATTENTION_NAME",
    "PATTERNS",
    "SUPPORTED",
    "UNSUPPORTED",
    "MissingSegmentsError",
    "SparseTempScaleConfig",
    "from_pretrained",
    "get_patch_config",
    "is_patched",
    "load_cross_encoder",
    "load_sentence_transformer",
    "patch_model",
    "patched",
    "unpatch_model",
]
