"""Diffuser models: config, encoder and task heads, saving and loading, a task model started
from a pretrained encoder, RoBERTa conversion."""

from graphdiff.models.config import MODEL_PRESETS, DiffuserConfig, preset_config
from graphdiff.models.diffuser import (
    Diffuser,
    DiffuserForMaskedLM,
    DiffuserForRetrieval,
    DiffuserForSequenceClassification,
    DiffuserLayer,
    PreparedBatch,
    count_parameters,
)
from graphdiff.models.initialize import extend_positions, init_config, initialize_encoder
from graphdiff.models.roberta import from_roberta

__all__ = [
    "DiffuserConfig",
    "MODEL_PRESETS",
    "preset_config",
    "Diffuser",
    "DiffuserLayer",
    "DiffuserForSequenceClassification",
    "DiffuserForMaskedLM",
    "DiffuserForRetrieval",
    "PreparedBatch",
    "count_parameters",
    "from_roberta",
    "init_config",
    "initialize_encoder",
    "extend_positions",
]
