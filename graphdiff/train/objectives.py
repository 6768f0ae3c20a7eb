"""What a task trains: its model class, the predictions its loss scores, and its metrics.

Each task dataset names its objective (``dataset.objective``) and batches with its own
``dataset.collate``. Every objective reduces a batch to ``(logits [M, C], targets [M])`` and the
loss is the cross-entropy between them:

- ``"classification"``: one prediction per sequence, ``M = B``, ``C = num_classes``;
- ``"retrieval"``: one per pair of documents (two towers sharing the encoder), ``M = B``;
- ``"masked_lm"``: one per masked token (labels ``!= -100``), ``C = vocab_size``; the head runs
  on those tokens only, so no ``[B, L, V]`` tensor is built.

The validation metrics are the mean loss per prediction, the accuracy and the number of examples
(sequences or pairs); masked LM adds ``bpc`` (the loss in bits) and ``masked_tokens``. The best
checkpoint is the one with the highest accuracy, or for masked LM the lowest loss.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from graphdiff.models import (
    DiffuserForMaskedLM,
    DiffuserForRetrieval,
    DiffuserForSequenceClassification,
)
from graphdiff.tasks import collate
from graphdiff.tasks.mlm import IGNORE_INDEX, bits_per_character

__all__ = ["OBJECTIVES", "Objective", "collate_of", "objective_of"]


class Objective:
    """A kind of task: its model, what its loss scores, and how validation is summarised."""

    name: str
    model_class: type
    # The validation metric that picks ``best.pt``, and whether higher is better.
    selection_metric = "accuracy"
    higher_is_better = True

    def predict(
        self, model: nn.Module, batch: Sequence[Tensor], truncate: bool = False
    ) -> Tuple[Tensor, Tensor]:
        """``(logits [M, C], targets [M])`` of a batch already on the model's device."""
        raise NotImplementedError

    def tokens(self, batch: Sequence[Tensor]) -> int:
        """The real tokens of a batch (for tokens per second)."""
        return int(batch[1].sum())

    def summarize(self, loss_sum: float, correct: int, predictions: int, examples: int) -> dict:
        """Validation metrics from sums over a split."""
        return {
            "loss": loss_sum / max(predictions, 1),
            "accuracy": correct / max(predictions, 1),
            "examples": examples,
        }

    def score(self, result: Dict[str, Any]) -> float:
        """The selection metric of an evaluation's ``result`` (its ``val_`` entry), as a
        number where higher is better."""
        value = result[f"val_{self.selection_metric}"]
        return value if self.higher_is_better else -value


class Classification(Objective):
    """Batches ``(tokens [B, L], mask [B, L], labels [B])``; one prediction per sequence."""

    name = "classification"
    model_class = DiffuserForSequenceClassification

    def predict(self, model, batch, truncate=False):
        tokens, mask, labels = batch
        return model(tokens, mask, truncate=truncate), labels


class Retrieval(Objective):
    """Batches ``(tokens_a, mask_a, tokens_b, mask_b, labels [B])``; one prediction per pair."""

    name = "retrieval"
    model_class = DiffuserForRetrieval

    def predict(self, model, batch, truncate=False):
        tokens_a, mask_a, tokens_b, mask_b, labels = batch
        return model(tokens_a, mask_a, tokens_b, mask_b, truncate=truncate), labels

    def tokens(self, batch):
        return int(batch[1].sum()) + int(batch[3].sum())


class MaskedLM(Objective):
    """Batches ``(tokens [B, L], mask [B, L], labels [B, L])`` with ``labels = -100`` where a
    token is not scored; one prediction per masked token."""

    name = "masked_lm"
    model_class = DiffuserForMaskedLM
    selection_metric = "loss"
    higher_is_better = False

    def predict(self, model, batch, truncate=False):
        tokens, mask, labels = batch
        if truncate:  # cut the labels with the tokens, so that both keep the same positions
            max_len = model.config.max_len
            tokens, mask, labels = tokens[:, :max_len], mask[:, :max_len], labels[:, :max_len]
        select = labels != IGNORE_INDEX
        return model(tokens, mask, select=select), labels[select]

    def summarize(self, loss_sum, correct, predictions, examples):
        metrics = super().summarize(loss_sum, correct, predictions, examples)
        metrics["bpc"] = bits_per_character(metrics["loss"])
        metrics["masked_tokens"] = predictions
        return metrics


OBJECTIVES: Dict[str, Objective] = {
    objective.name: objective for objective in (Classification(), Retrieval(), MaskedLM())
}


def task_of(dataset: Dataset) -> Dataset:
    """The task dataset under any ``Subset`` wrappers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def objective_of(dataset: Dataset) -> Objective:
    """The objective a task dataset trains: its ``objective`` attribute (a dataset of
    ``(tokens, label)`` pairs without one is a classification task)."""
    name = getattr(task_of(dataset), "objective", "classification")
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def collate_of(dataset: Dataset) -> Callable:
    """The function that batches the dataset's examples: its ``collate``, else
    :func:`graphdiff.tasks.collate`."""
    return getattr(task_of(dataset), "collate", collate)


def loss_and_counts(
    objective: Objective, model: nn.Module, batch: Sequence[Tensor], truncate: bool = False
) -> Tuple[Tensor, int, int]:
    """Summed cross-entropy, correct predictions and predictions of one batch."""
    logits, targets = objective.predict(model, batch, truncate)
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = int((logits.argmax(dim=-1) == targets).sum())
    return loss_sum, correct, targets.numel()
