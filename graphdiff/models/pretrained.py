"""Models saved as a directory, Hugging Face's layout: ``config.json`` and ``model.safetensors``.

``config.json`` holds the :class:`~graphdiff.models.DiffuserConfig` fields, the model's class
name (``model_class``) and the graphdiff version that wrote it; ``model.safetensors`` holds the
weights as bare tensors (no pickle: loading runs no code). The masked-LM head is tied to the
token embeddings by construction (it multiplies by their weight, it has no decoder matrix of its
own), so no tensor is stored twice. Needs the ``safetensors`` package (the ``hf`` extra).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple, Type, TypeVar

from torch import Tensor

from graphdiff import __version__
from graphdiff.io import PathLike, atomic_write, atomic_write_text
from graphdiff.models.config import DiffuserConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# The weights fix these fields: a loaded or converted model keeps them. The others (the pattern,
# the diffusion, the dropouts, the pooling) may be overridden.
WEIGHT_FIELDS = (
    "vocab_size",
    "hidden",
    "layers",
    "heads",
    "ffn",
    "max_len",
    "num_classes",
    "positional",
    "layer_norm_eps",
    "pad_token_id",
)
# Where a task model keeps its encoder, a Diffuser.
ENCODER_PREFIX = "diffuser."

Model = TypeVar("Model", bound="PretrainedMixin")


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError as error:
        raise ImportError(
            "save_pretrained and from_pretrained need the safetensors package: "
            "pip install 'graphdiff[hf]'"
        ) from error
    return safetensors.torch


def check_overrides(overrides: Dict[str, Any], fixed: tuple, source: str) -> None:
    """Raise ValueError for an override that is no DiffuserConfig field, or one of ``fixed``."""
    known = DiffuserConfig.__dataclass_fields__
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown DiffuserConfig fields {unknown}; valid: {sorted(known)}")
    clash = sorted(set(overrides) & set(fixed))
    if clash:
        allowed = sorted(set(known) - set(fixed))
        raise ValueError(
            f"{clash} are fixed by the weights of {source}; the overrides allowed are {allowed}"
        )


class PretrainedMixin:
    """``save_pretrained(directory)`` and ``from_pretrained(directory)`` for a model built as
    ``cls(config)`` from a :class:`~graphdiff.models.DiffuserConfig` kept in ``self.config``."""

    config: DiffuserConfig

    def save_pretrained(self, directory: PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created when
        missing; each file is written atomically, the weights first)."""
        safetensors_torch = _safetensors_torch()
        directory = os.fspath(directory)
        state: Dict[str, Tensor] = {
            name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()
        }
        weights = safetensors_torch.save(state, metadata={"format": "pt"})
        atomic_write(os.path.join(directory, WEIGHTS_NAME), lambda handle: handle.write(weights))
        values = {
            "model_class": type(self).__name__,
            "graphdiff_version": __version__,
            **self.config.to_dict(),
        }
        atomic_write_text(os.path.join(directory, CONFIG_NAME), json.dumps(values, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls: Type[Model], directory: PathLike, **overrides: Any) -> Model:
        """The model that :meth:`save_pretrained` wrote into ``directory``, in eval mode, on
        the CPU.

        A :class:`~graphdiff.models.Diffuser` also loads from the directory of a task model
        (sequence classification or masked LM): it takes that model's encoder and leaves the
        head, as Hugging Face's base models do. A task model loads only from a directory of its
        own class: to put a fresh head on a pretrained encoder, see
        :func:`~graphdiff.models.initialize_encoder`.

        Args:
            directory: a directory holding ``config.json`` and ``model.safetensors``.
            **overrides: configuration fields that the weights do not fix (the pattern,
                ``hops``, ``alpha``, ``kernel``, ``t``, the dropouts, ``pooling``), e.g. a
                pattern for longer documents or a dropout for fine-tuning.

        Raises:
            FileNotFoundError: when the directory or one of its two files is missing.
            ValueError: when it holds another model class (see above), a configuration that is
                not graphdiff's, or weights that do not fit the configuration; when an override
                is no configuration field or one the weights fix.
        """
        check_overrides(overrides, WEIGHT_FIELDS, "a saved model")
        saved_class, values, state = read_pretrained(directory)
        model = cls(DiffuserConfig.from_dict({**values, **overrides}))
        if saved_class != cls.__name__:
            encoder = encoder_state(state)
            if set(encoder) != set(model.state_dict()):
                raise ValueError(
                    f"{os.fspath(directory)!r} holds a {saved_class}, not a {cls.__name__}; "
                    f"load it with {saved_class}.from_pretrained"
                )
            state = encoder
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            weights_path = os.path.join(os.fspath(directory), WEIGHTS_NAME)
            raise ValueError(
                f"the weights in {weights_path!r} do not fit its configuration: {error}"
            ) from None
        return model.eval()


def encoder_state(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The encoder's part of a task model's state dict: the entries under ``diffuser.``, with
    that prefix removed (a :class:`~graphdiff.models.Diffuser` state dict). Empty when
    ``state`` holds no encoder."""
    return {
        name[len(ENCODER_PREFIX) :]: tensor
        for name, tensor in state.items()
        if name.startswith(ENCODER_PREFIX)
    }


def read_pretrained(directory: PathLike) -> Tuple[str, Dict[str, Any], Dict[str, Tensor]]:
    """What :meth:`PretrainedMixin.save_pretrained` wrote into ``directory``, unchecked
    against any model: the saved class name, the configuration fields and the state dict.

    Raises:
        FileNotFoundError: when the directory or one of its two files is missing.
        ValueError: when ``config.json`` is no graphdiff model configuration or the weights
            are no readable safetensors file.
    """
    safetensors_torch = _safetensors_torch()
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no model directory at {directory!r}")
    config_path = os.path.join(directory, CONFIG_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} is missing: from_pretrained reads a directory "
                f"written by save_pretrained ({CONFIG_NAME} and "
                f"{WEIGHTS_NAME})"
            )
    with open(config_path, encoding="utf-8") as handle:
        try:
            values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path!r} is not valid JSON: {error}") from None
    if not isinstance(values, dict) or "model_class" not in values:
        hint = (
            " (a Hugging Face configuration: load the model with transformers, then "
            "convert it with graphdiff.models.from_roberta)"
            if isinstance(values, dict) and "model_type" in values
            else ""
        )
        raise ValueError(
            f"{config_path!r} is not a graphdiff model configuration: it has no 'model_class'{hint}"
        )
    saved_class = values.pop("model_class")
    values.pop("graphdiff_version", None)
    try:
        state = safetensors_torch.load_file(weights_path, device="cpu")
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{weights_path!r} is not a readable safetensors file: {error}") from None
    return saved_class, values, state
