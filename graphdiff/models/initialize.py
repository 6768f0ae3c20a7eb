"""A task model started from a pretrained encoder: pretrain, then fine-tune.

The encoder's weights (every graphdiff model keeps its :class:`~graphdiff.models.Diffuser` as
``diffuser``) fix its architecture; the pattern, the diffusion, the dropouts, the pooling and
the task head do not, and neither does ``max_len``: learned positions grow by copying, as
Longformer's conversion of RoBERTa does (Beltagy et al. 2020, section 5). The head keeps its
fresh initialisation.

Example::

    pretrained, state = graphdiff.train.load_encoder("runs/mlm/best.pt")
    config = init_config(pretrained, num_classes=2, max_len=4096, vocab_size=258)
    model = DiffuserForSequenceClassification(config)
    initialize_encoder(model, pretrained, state)
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor, nn

from graphdiff.checks import is_integer
from graphdiff.models.config import DiffuserConfig
from graphdiff.models.diffuser import Diffuser
from graphdiff.models.pretrained import WEIGHT_FIELDS, check_overrides

# The fields the encoder's weights fix, but for those a task sets: the vocabulary may shrink (a
# task's ids are a prefix of the pretrained ones), max_len changes the positions only and
# num_classes the head only.
ARCHITECTURE_FIELDS = tuple(
    name for name in WEIGHT_FIELDS if name not in ("vocab_size", "max_len", "num_classes")
)
POSITIONS_KEY = "embeddings.positions.weight"


def extend_positions(table: Tensor, max_len: int) -> Tensor:
    """A learned position table grown or cut to ``max_len`` rows: row ``p`` is ``table``'s row
    ``p mod P`` (the pretrained positions copied over and over, as Longformer's conversion
    does), so a shorter ``max_len`` keeps the first rows.

    Args:
        table (torch.Tensor): The pretrained positions ``[P, D]``.
        max_len (int): The rows wanted.

    Shapes:
        - **input:** ``[P, D]``
        - **output:** ``[max_len, D]``, a new tensor (no view of ``table``)
    """
    if table.dim() != 2 or table.size(0) == 0:
        raise ValueError(f"table must be a [P, D] position table, got {list(table.shape)}")
    if not is_integer(max_len) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    copies = -(-max_len // table.size(0))
    return table.repeat(copies, 1)[:max_len]


def check_architecture(pretrained: DiffuserConfig, config: DiffuserConfig) -> None:
    """Raise ValueError unless ``config`` has the architecture of the ``pretrained`` encoder
    (every field of :data:`ARCHITECTURE_FIELDS` equal, the vocabulary no larger)."""
    for name in ARCHITECTURE_FIELDS:
        ours, theirs = getattr(config, name), getattr(pretrained, name)
        if ours != theirs:
            raise ValueError(
                f"{name}={ours!r} differs from the pretrained encoder's {name}={theirs!r}; "
                f"the encoder's weights fix {', '.join(ARCHITECTURE_FIELDS)}"
            )
    if config.vocab_size > pretrained.vocab_size:
        raise ValueError(
            f"vocab_size={config.vocab_size} exceeds the pretrained encoder's vocabulary of "
            f"{pretrained.vocab_size} tokens: the task has token ids the encoder never saw"
        )


def init_config(pretrained: DiffuserConfig, **overrides: Any) -> DiffuserConfig:
    """The configuration of a task model started from a ``pretrained`` encoder.

    Every field comes from ``pretrained`` but for ``overrides``. The encoder's architecture
    (``hidden``, ``layers``, ``heads``, ``ffn``, ``positional``, ``layer_norm_eps``,
    ``pad_token_id``) cannot change: an override of it must equal the pretrained value. A
    ``vocab_size`` up to the pretrained one keeps the pretrained vocabulary (its ids are the
    first ones: a byte task of 258 tokens under a masked-LM encoder of 259); a larger one is
    refused. ``max_len`` (positions grown or cut, :func:`extend_positions`), the pattern, the
    diffusion (``hops``, ``alpha``, ``kernel``, ``t``: no weights), the dropouts,
    ``pooling``, ``num_classes`` and ``gradient_checkpointing`` may be anything.

    Args:
        pretrained: the encoder's configuration (:func:`graphdiff.train.load_encoder`).
        **overrides: :class:`~graphdiff.models.DiffuserConfig` fields.

    Raises:
        ValueError: naming the field and both values for an architecture field that differs,
            or a vocabulary larger than the pretrained one; for an unknown field.
    """
    check_overrides(overrides, (), "the pretrained encoder")
    values = {**pretrained.to_dict(), **overrides}
    if values["vocab_size"] < pretrained.vocab_size:
        values["vocab_size"] = pretrained.vocab_size  # the task's ids are the first ones
    config = DiffuserConfig.from_dict(values)
    check_architecture(pretrained, config)
    return config


def initialize_encoder(
    model: nn.Module, pretrained: DiffuserConfig, state: Dict[str, Tensor]
) -> None:
    """Copy a pretrained encoder into ``model.diffuser``, in place; every weight outside it
    (the task head) keeps its initialisation.

    Learned positions are grown or cut to ``model.config.max_len`` with
    :func:`extend_positions`; every other tensor must fit exactly: the load is strict, so a
    missing, extra or misshapen weight is an error, never skipped.

    Args:
        model: a model whose encoder is ``model.diffuser`` (a
            :class:`~graphdiff.models.Diffuser`), built from :func:`init_config`'s
            configuration (or any with the encoder's architecture).
        pretrained: the encoder's configuration.
        state: the encoder's state dict (keys without ``diffuser.``).

    Raises:
        TypeError: when ``model`` has no ``diffuser`` encoder.
        ValueError: when ``model``'s architecture differs from the pretrained one, or
            ``state`` does not fit it.
    """
    encoder = getattr(model, "diffuser", None)
    if not isinstance(encoder, Diffuser):
        raise TypeError(
            f"model must keep its encoder as model.diffuser (a Diffuser), got "
            f"{type(model).__name__}"
        )
    check_architecture(pretrained, encoder.config)
    state = dict(state)
    if POSITIONS_KEY in state and encoder.config.positional == "learned":
        state[POSITIONS_KEY] = extend_positions(state[POSITIONS_KEY], encoder.config.max_len)
    try:
        with torch.no_grad():
            encoder.load_state_dict(state)
    except RuntimeError as error:
        # One line (torch's message has tabs and newlines): graphdiff train prints one.
        reason = " ".join(str(error).split())
        raise ValueError(f"the pretrained encoder does not fit model.diffuser: {reason}") from None
