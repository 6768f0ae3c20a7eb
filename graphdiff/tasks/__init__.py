"""Task datasets: ListOps, images as pixel sequences, reviews as bytes, Pathfinder, MultiHop,
document matching (LRA Retrieval) and masked language modelling on text.

Every classification task is a ``torch.utils.data.Dataset`` of ``(tokens LongTensor [L], label
int)`` with CLS at position 0 and the attributes ``vocab_size``, ``num_classes`` and ``max_len``;
:func:`collate` pads a list of them into ``(tokens [B, L], mask [B, L], labels [B])``. Tasks with
other examples (retrieval: a pair of documents; masked LM: a label per token) name their
``objective`` and bring their own ``collate``::

    from torch.utils.data import DataLoader
    from graphdiff.tasks import collate, get_task

    train = get_task("multihop", "train", seed=0)
    loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=collate)

Token ids 0 (PAD) and 1 (CLS) are reserved in every task. Nothing here imports torch_geometric.
"""

from __future__ import annotations

from typing import Callable

from graphdiff.tasks import retrieval as retrieval_module  # the module keeps its name
from graphdiff.tasks.base import CLS, NUM_SPECIAL, PAD, SPLITS, TaskDataset, collate
from graphdiff.tasks.image import DEFAULT_FASHION_MNIST_DIR, ImageTask
from graphdiff.tasks.listops import ListOps, ListOpsTSV, listops
from graphdiff.tasks.mlm import MaskedLMTask
from graphdiff.tasks.multihop import MultiHop
from graphdiff.tasks.pathfinder import Pathfinder
from graphdiff.tasks.text import TextTask

__all__ = [
    "CLS",
    "DEFAULT_FASHION_MNIST_DIR",
    "NUM_SPECIAL",
    "PAD",
    "SPLITS",
    "TASKS",
    "ImageTask",
    "ListOps",
    "ListOpsTSV",
    "MaskedLMTask",
    "MultiHop",
    "Pathfinder",
    "TaskDataset",
    "TextTask",
    "collate",
    "get_task",
]

# name -> factory(split, **kwargs) -> TaskDataset
TASKS: dict[str, Callable[..., TaskDataset]] = {
    "listops": listops,
    "mlm": MaskedLMTask,
    "image": ImageTask,
    "multihop": MultiHop,
    "pathfinder": Pathfinder,
    "retrieval": retrieval_module.retrieval,
    "text": TextTask,
}


def get_task(name: str, split: str = "train", **kwargs) -> TaskDataset:
    """The ``split`` of task ``name``; ``kwargs`` go to the task's constructor.

    Raises:
        ValueError: for an unknown ``name`` (listing the valid ones) or ``split``.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](split, **kwargs)
