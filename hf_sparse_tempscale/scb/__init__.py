"""Sparse contextual bigram (SCB) benchmark after Ren, Wang and Lee (arXiv 2410.23438): synthetic data with known
sparse dependencies, one-layer attention models, Adam / proximal training, support recall, TV and transfer."""

from .data import SCBInstance, SCBSample, make_instance, perturb_transition
from .metrics import off_support_mass, support_recall, total_variation
from .models import LinearAttentionSCB, SoftmaxAttentionSCB, window_key_mask
from .train import EvalSet, PreconditionedProximal, TrainConfig, TrainCurve, train
from .transfer import run_transfer

__all__ = [
    "EvalSet", "LinearAttentionSCB", "PreconditionedProximal", "SCBInstance", "SCBSample", "SoftmaxAttentionSCB",
    "TrainConfig", "TrainCurve", "make_instance", "off_support_mass", "perturb_transition", "run_transfer",
    "support_recall", "total_variation", "train", "window_key_mask",
]
