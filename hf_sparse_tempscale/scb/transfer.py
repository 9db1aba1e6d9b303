"""Transfer: fine-tune a model pretrained on one SCB instance on a correlated one (same q and mu, perturbed P)."""

from __future__ import annotations

import copy
from typing import Callable

from .data import SCBInstance
from .models import SCBAttentionModel
from .train import EvalSet, TrainConfig, TrainCurve, train

TRANSFER_MODES = ("scratch", "finetune", "finetune_attention")


def run_transfer(
    pretrained: SCBAttentionModel,
    make_model: Callable[[], SCBAttentionModel],
    target: SCBInstance,
    config: TrainConfig,
    *,
    eval_set: EvalSet | None = None,
    progress: bool = True,
    desc: str = "",
) -> dict[str, TrainCurve]:
    """Curves on `target` for the three starts, each trained with `config`:

    - scratch: a fresh model (`make_model()`);
    - finetune: a copy of `pretrained` (attention and values);
    - finetune_attention: a copy of `pretrained` with its value table reset to uniform, so only the attention
      (which is what the two instances share) is transferred.
    The pretrained model is not modified. Sample draws use the same seed for every start, so the starts see the
    same training stream.
    """
    eval_set = eval_set or EvalSet.draw(target)
    curves: dict[str, TrainCurve] = {}
    for mode in TRANSFER_MODES:
        if mode == "scratch":
            model = make_model()
        else:
            model = copy.deepcopy(pretrained)
            if mode == "finetune_attention":
                model.reset_values()
        curves[mode] = train(model, target, config, eval_set, progress=progress, desc=f"{desc}{mode}")
    return curves
