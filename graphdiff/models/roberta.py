"""Hugging Face RoBERTa checkpoints as Diffuser models (needs the ``hf`` extra: transformers).

A Diffuser layer is a RoBERTa layer (post-LayerNorm, GELU) whose self-attention is attention
diffusion on a sparse pattern, so a pretrained RoBERTa fills every weight; with one hop, no
teleport (``hops=1, alpha=0.0``) and the ``Full()`` pattern the converted model computes what
RoBERTa computes.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor, nn

from graphdiff.models.config import DiffuserConfig
from graphdiff.models.diffuser import (
    Diffuser,
    DiffuserForMaskedLM,
    DiffuserForSequenceClassification,
)
from graphdiff.models.initialize import extend_positions
from graphdiff.models.pretrained import WEIGHT_FIELDS, check_overrides

ACCEPTED = ("RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification")
# From the checkpoint: every field the weights fix, except max_len (the positions are tiled).
CHECKPOINT_FIELDS = tuple(name for name in WEIGHT_FIELDS if name != "max_len")


def _roberta_classes() -> Dict[str, type]:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "from_roberta needs the transformers package: pip install 'graphdiff[hf]'"
        ) from error
    return {name: getattr(transformers, name) for name in ACCEPTED}


def _check_roberta_config(config: Any) -> None:
    """ValueError for a RoBERTa configuration that a Diffuser cannot compute exactly."""
    if config.hidden_act != "gelu":
        raise ValueError(
            f"from_roberta needs hidden_act='gelu' (the Diffuser layer's exact "
            f"GELU), got {config.hidden_act!r}"
        )
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"from_roberta needs position_embedding_type='absolute' (learned "
            f"positions), got {position_type!r}"
        )
    if config.is_decoder:
        raise ValueError(
            "from_roberta needs an encoder (is_decoder=False): Diffuser attention is bidirectional"
        )
    pad = config.pad_token_id
    if not isinstance(pad, int) or not 0 <= pad < config.vocab_size:
        raise ValueError(
            f"from_roberta needs pad_token_id in [0, vocab_size) = "
            f"[0, {config.vocab_size}), got {pad!r}"
        )
    if config.max_position_embeddings <= pad + 1:
        raise ValueError(
            f"max_position_embeddings={config.max_position_embeddings} leaves no "
            f"position after RoBERTa's offset pad_token_id + 1 = {pad + 1}"
        )


def _linear(state: Dict[str, Tensor], name: str, module: nn.Module) -> None:
    state[f"{name}.weight"] = module.weight
    state[f"{name}.bias"] = module.bias


def _positions(embeddings: nn.Module, pad: int, max_len: int) -> Tensor:
    """graphdiff's position table ``[max_len, D]``: RoBERTa's rows from ``pad + 1`` on (its
    first real token sits there), each plus token type 0's embedding, tiled to ``max_len``."""
    type_zero = embeddings.token_type_embeddings.weight[0]
    return extend_positions(embeddings.position_embeddings.weight[pad + 1 :] + type_zero, max_len)


def _encoder_state(roberta: nn.Module, max_len: int) -> Dict[str, Tensor]:
    """A :class:`~graphdiff.models.Diffuser` state dict from a ``RobertaModel``."""
    embeddings = roberta.embeddings
    positions = _positions(embeddings, roberta.config.pad_token_id, max_len)
    state = {
        "embeddings.tokens.weight": embeddings.word_embeddings.weight,
        "embeddings.positions.weight": positions,
    }
    _linear(state, "embeddings.norm", embeddings.LayerNorm)
    for index, layer in enumerate(roberta.encoder.layer):
        attention = layer.attention
        for name, module in (
            ("attention.lin_query", attention.self.query),
            ("attention.lin_key", attention.self.key),
            ("attention.lin_value", attention.self.value),
            ("output", attention.output.dense),
            ("norm1", attention.output.LayerNorm),
            ("ffn.0", layer.intermediate.dense),
            ("ffn.2", layer.output.dense),
            ("norm2", layer.output.LayerNorm),
        ):
            _linear(state, f"layers.{index}.{name}", module)
    return state


def _prefixed(state: Dict[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    return {prefix + name: tensor for name, tensor in state.items()}


def from_roberta(model: nn.Module, **overrides: Any) -> nn.Module:
    """Convert a Hugging Face RoBERTa into the matching Diffuser model, every weight copied.

    ``RobertaModel`` becomes a :class:`~graphdiff.models.Diffuser`, ``RobertaForMaskedLM`` a
    :class:`~graphdiff.models.DiffuserForMaskedLM` and ``RobertaForSequenceClassification`` a
    :class:`~graphdiff.models.DiffuserForSequenceClassification`. The widths, depth, heads,
    vocabulary, classes, LayerNorm epsilon and padding id come from ``model.config``, the
    dropouts from its ``hidden_dropout_prob`` and ``attention_probs_dropout_prob`` (the
    classification head uses the former, also where RoBERTa sets ``classifier_dropout``); the
    pattern and the diffusion default to
    :meth:`~graphdiff.models.DiffuserConfig.paper_base`'s (K = 5, alpha = 0.1, window 64,
    64 global, 64 random), ``max_len`` to the pretrained positions
    (``max_position_embeddings - pad_token_id - 1``: 512 for ``roberta-base``).

    How the weights map:

    - RoBERTa gives its first real token the position ``pad_token_id + 1`` (padding before it
      does not count); graphdiff counts positions from 0, so row ``p`` of the position table is
      RoBERTa's row ``p + pad_token_id + 1``.
    - The token type embedding (all types 0) is folded into the position table: row ``p`` is
      RoBERTa's position plus type-0 vector, and the token table stays RoBERTa's word
      embeddings, which the masked-LM decoder is tied to.
    - A longer ``max_len`` tiles the pretrained positions (row ``p`` is pretrained row
      ``p mod 512`` for ``roberta-base``), as Longformer's conversion does; a shorter one keeps
      the first rows.
    - Query, key and value become the attention's ``lin_query``, ``lin_key``, ``lin_value``;
      the attention output, the feed-forward and their LayerNorms, the masked-LM head
      (dense, GELU, LayerNorm, tied decoder and its bias) and the classification head (dense,
      tanh, ``out_proj``) copy one to one. ``RobertaModel``'s pooler, which no Diffuser model
      has, is left out.

    With ``pattern="Full()", hops=1, alpha=0.0`` the converted model gives RoBERTa's outputs
    to float32 rounding (1e-6 on small random models) on padded input whose mask marks the
    tokens that are not ``pad_token_id``, right or left padded. One difference: RoBERTa's
    classification head reads the first position of the padded input, the Diffuser the first
    real token of each sequence (the same with right padding).

    Args:
        model: a ``transformers`` ``RobertaModel``, ``RobertaForMaskedLM`` or
            ``RobertaForSequenceClassification`` (a pretrained one or one built from a
            ``RobertaConfig``).
        **overrides: :class:`~graphdiff.models.DiffuserConfig` fields that the checkpoint does
            not fix: ``pattern``, ``hops``, ``alpha``, ``kernel``, ``t``, the dropouts,
            ``pooling`` and ``max_len``.

    Returns:
        The Diffuser model, on the CPU in float32, in ``model``'s train or eval mode.

    Raises:
        TypeError: when ``model`` is none of the three accepted classes.
        ValueError: when its configuration is one a Diffuser cannot compute (``hidden_act``
            other than ``"gelu"``, relative position embeddings, a decoder), when the
            masked-LM decoder is not tied to the word embeddings, or when an override is no
            configuration field or one the checkpoint fixes.

    Example::

        from transformers import RobertaForMaskedLM
        from graphdiff.models import from_roberta

        roberta = RobertaForMaskedLM.from_pretrained("roberta-base")
        model = from_roberta(roberta, max_len=4096)  # positions tiled 8 times
        model.save_pretrained("diffuser-base-4096")  # DiffuserForMaskedLM.from_pretrained reads it
    """
    classes = _roberta_classes()
    kind = next((name for name, cls in classes.items() if isinstance(model, cls)), None)
    if kind is None:
        raise TypeError(
            f"from_roberta converts a transformers {', '.join(ACCEPTED[:-1])} or "
            f"{ACCEPTED[-1]}, got {type(model).__module__}.{type(model).__qualname__}"
        )
    check_overrides(overrides, CHECKPOINT_FIELDS, f"the {kind}")
    hf_config = model.config
    _check_roberta_config(hf_config)
    pad = hf_config.pad_token_id
    derived = dict(
        vocab_size=hf_config.vocab_size,
        hidden=hf_config.hidden_size,
        layers=hf_config.num_hidden_layers,
        heads=hf_config.num_attention_heads,
        ffn=hf_config.intermediate_size,
        layer_norm_eps=hf_config.layer_norm_eps,
        pad_token_id=pad,
        positional="learned",
        max_len=hf_config.max_position_embeddings - pad - 1,
        dropout=hf_config.hidden_dropout_prob,
        attention_dropout=hf_config.attention_probs_dropout_prob,
    )
    if kind == "RobertaForSequenceClassification":
        derived["num_classes"] = hf_config.num_labels
    config = DiffuserConfig.paper_base(**{**derived, **overrides})

    if kind == "RobertaModel":
        converted, state = Diffuser(config), _encoder_state(model, config.max_len)
    elif kind == "RobertaForMaskedLM":
        head = model.lm_head
        words = model.roberta.embeddings.word_embeddings.weight
        if not torch.equal(head.decoder.weight, words):
            raise ValueError(
                "from_roberta needs the masked-LM decoder tied to the word "
                "embeddings (DiffuserForMaskedLM ties them); this "
                "RobertaForMaskedLM has a decoder of its own"
            )
        converted = DiffuserForMaskedLM(config)
        state = _prefixed(_encoder_state(model.roberta, config.max_len), "diffuser.")
        _linear(state, "dense", head.dense)
        _linear(state, "norm", head.layer_norm)
        bias = head.decoder.bias  # the bias the decoder applies (RoBERTa ties it to head.bias)
        state["bias"] = bias if bias is not None else torch.zeros_like(head.bias)
    else:
        converted = DiffuserForSequenceClassification(config)
        state = _prefixed(_encoder_state(model.roberta, config.max_len), "diffuser.")
        _linear(state, "dense", model.classifier.dense)
        _linear(state, "classifier", model.classifier.out_proj)
    with torch.no_grad():
        converted.load_state_dict(state)  # strict: every Diffuser weight is filled
    return converted.train(model.training)
