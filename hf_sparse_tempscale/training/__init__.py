"""Training tools for patched models: Trainer callbacks, recipes (cross-encoder, embedding) and their CLI."""

from .callbacks import (
    AttentionStatisticsCallback,
    EmbeddingCollapseCallback,
    MetricsCallback,
    ProcessSyncCallback,
    TemperatureScheduleCallback,
    WindowCurriculumCallback,
    attach,
    install_log_hook,
)

__all__ = [
    "AttentionStatisticsCallback",
    "EmbeddingCollapseCallback",
    "MetricsCallback",
    "ProcessSyncCallback",
    "TemperatureScheduleCallback",
    "WindowCurriculumCallback",
    "attach",
    "install_log_hook",
]
