"""Diffuser models: config, encoder and task heads."""
from graphdiff.models.config import PRESETS, DiffuserConfig, preset_config
from graphdiff.models.diffuser import (
    Diffuser, DiffuserForMaskedLM, DiffuserForSequenceClassification, DiffuserLayer, count_parameters,
)

__all__ = [
    "DiffuserConfig", "PRESETS", "preset_config",
    "Diffuser", "DiffuserLayer", "DiffuserForSequenceClassification", "DiffuserForMaskedLM", "count_parameters",
]
