"""Sequences as PyG graphs, and batches of them.

A sequence of ``L`` tokens becomes a graph of ``L`` nodes whose edges follow a pattern. A batch
is PyG's block-diagonal :class:`~torch_geometric.data.Batch`: padding tokens are not nodes, so
variable lengths cost nothing. Batches are built without a Python loop over sequences: one
cached pattern per distinct length, shifted by vectorised offsets.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import BaseTransform

from graphdiff import cache
from graphdiff.checks import check_int
from graphdiff.patterns import Pattern


def _check_pattern(pattern: Pattern) -> Pattern:
    if not isinstance(pattern, Pattern):
        raise TypeError(
            f"pattern must be a graphdiff.patterns.Pattern, got {type(pattern).__name__}"
        )
    return pattern


def sequence_graph(tokens: Tensor, pattern: Pattern) -> Data:
    """One sequence as a graph: ``Data(x=tokens, edge_index=pattern(L), pos=arange(L))``.

    Args:
        tokens (Tensor): token ids ``[L]`` or token features ``[L, F]``.
        pattern (Pattern): who attends whom.
    """
    if not isinstance(tokens, Tensor) or tokens.dim() == 0 or tokens.size(0) == 0:
        raise ValueError("tokens must be a non-empty tensor of shape [L] or [L, F]")
    length = tokens.size(0)
    return Data(x=tokens, edge_index=_check_pattern(pattern)(length), pos=torch.arange(length))


class AddPattern(BaseTransform):
    """PyG transform: give every sequence graph the edges of ``pattern`` and token positions.

    >>> dataset = MySequenceDataset(transform=AddPattern(diffuser()))
    """

    def __init__(self, pattern: Pattern):
        self.pattern = _check_pattern(pattern)

    def forward(self, data: Data) -> Data:
        length = data.num_nodes
        data.edge_index = self.pattern(length)
        if getattr(data, "pos", None) is None:
            data.pos = torch.arange(length)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.pattern!r})"


def as_bool_mask(mask: Tensor) -> Tensor:
    """A padding mask as booleans (True = a real token): a boolean mask as it is, or Hugging
    Face's ``attention_mask`` of 0/1 numbers, any real dtype."""
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("a mask must be boolean or hold only 0 and 1 (1 = a real token)")
    return mask != 0


def _lengths_and_mask(padded: Tensor, mask_or_lengths: Tensor) -> Tuple[Tensor, Tensor]:
    """Normalise the second argument of :func:`graph_batch` to ``(lengths [B], mask [B, L])``."""
    batch_size, max_len = padded.shape[:2]
    # On the tokens' device, so that every part of the batch is (a CPU mask for GPU tokens).
    mask_or_lengths = torch.as_tensor(mask_or_lengths, device=padded.device)
    if mask_or_lengths.dtype == torch.bool or mask_or_lengths.dim() == 2:
        if mask_or_lengths.shape != (batch_size, max_len):
            raise ValueError(
                f"mask must have shape [B, L] = {[batch_size, max_len]}, "
                f"got {list(mask_or_lengths.shape)}"
            )
        mask = as_bool_mask(mask_or_lengths)
        lengths = mask.sum(dim=1)
    else:
        integer = not (mask_or_lengths.is_floating_point() or mask_or_lengths.is_complex())
        if not integer or mask_or_lengths.shape != (batch_size,):
            raise ValueError(
                f"mask_or_lengths must be a mask [B, L] (boolean, or 0/1 numbers) or integer "
                f"lengths [B] = [{batch_size}], got {mask_or_lengths.dtype} "
                f"{list(mask_or_lengths.shape)}"
            )
        lengths = mask_or_lengths.long()
        if (lengths < 0).any() or (lengths > max_len).any():
            raise ValueError(f"lengths must lie in [0, {max_len}], got {lengths.tolist()}")
        mask = torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
    if (lengths == 0).any():
        raise ValueError("every sequence needs at least one token (a length or mask row is empty)")
    return lengths, mask


def _batched_edges(
    pattern: Pattern, lengths: Tuple[int, ...], device: torch.device
) -> Tuple[Tensor, Tensor]:
    """Block-diagonal edge_index of sequences of these lengths, and each graph's edge offsets,
    on ``device``.

    Kept in :mod:`graphdiff.cache` from the second batch of the same lengths on (a training
    loop over equal-length batches gets the very same tensor back, and with it the cached
    structure of :func:`graphdiff.nn.diffusion_graph`); a batch of new lengths is not kept.
    """
    return cache.CACHE.get(
        ("batched", pattern, lengths, device),
        lambda: tuple(t.to(device) for t in _build_batched_edges(pattern, lengths)),
        admit_on_repeat=True,
    )


def _build_batched_edges(pattern: Pattern, lengths: Tuple[int, ...]) -> Tuple[Tensor, Tensor]:
    lengths_t = torch.tensor(lengths)
    ptr = torch.cat([lengths_t.new_zeros(1), lengths_t.cumsum(0)])
    # One pattern per distinct length; each is copied to all sequences of that length at once.
    distinct = torch.unique(lengths_t)  # sorted
    patterns = {int(length): pattern(int(length)) for length in distinct}
    edges_per_length = torch.tensor([edges.size(1) for edges in patterns.values()])
    num_edges = edges_per_length[torch.searchsorted(distinct, lengths_t)]  # [B]
    edge_ptr = torch.cat([num_edges.new_zeros(1), num_edges.cumsum(0)])
    edge_index = torch.empty(2, int(edge_ptr[-1]), dtype=torch.long)
    for length, graph_edges in patterns.items():
        graphs = (lengths_t == length).nonzero().view(-1)  # [G] sequences of this length
        slots = edge_ptr[graphs].view(-1, 1) + torch.arange(graph_edges.size(1))  # [G, E_l]
        shifted = graph_edges.unsqueeze(1) + ptr[graphs].view(1, -1, 1)  # [2, G, E_l]
        edge_index[:, slots.view(-1)] = shifted.reshape(2, -1)
    return edge_index, edge_ptr


# Data preparation, not model code: under torch.compile its Python (caches, a Batch object)
# would break the graph, and dynamo hands back a Batch without its attributes.
@torch.compiler.disable
def graph_batch(padded: Tensor, mask_or_lengths: Tensor, pattern: Pattern) -> Batch:
    """Turn a padded batch of sequences into one block-diagonal PyG :class:`Batch`.

    Args:
        padded (Tensor): ``[B, L]`` token ids or ``[B, L, F]`` features.
        mask_or_lengths (Tensor): a mask ``[B, L]``, boolean or Hugging Face's 0/1 numbers
            (True or 1 = real token; any layout, left padding too), or integer lengths ``[B]``
            (right padding).
        pattern (Pattern): who attends whom; built once per distinct length.

    Returns:
        A :class:`Batch` with ``x`` (the real tokens, in order), ``edge_index`` (sorted by target,
        block diagonal), ``batch``, ``ptr`` and ``pos`` (each token's rank inside its sequence).
        ``to_data_list()`` gives back the per-sequence graphs.
    """
    if not isinstance(padded, Tensor) or padded.dim() < 2 or padded.size(0) == 0:
        raise ValueError("padded must be a non-empty tensor of shape [B, L] or [B, L, F]")
    _check_pattern(pattern)
    lengths, mask = _lengths_and_mask(padded, mask_or_lengths)
    batch_size = lengths.numel()
    ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])

    edge_index, edge_ptr = _batched_edges(pattern, tuple(lengths.tolist()), padded.device)
    pos = mask.long().cumsum(dim=1)[mask] - 1
    batch = Batch(
        x=padded[mask],
        edge_index=edge_index,
        pos=pos,
        batch=torch.arange(batch_size, device=lengths.device).repeat_interleave(lengths),
        ptr=ptr,
    )
    # What Batch.from_data_list would record, so that to_data_list() and batch[i] work.
    batch._num_graphs = batch_size
    batch._slice_dict = {"x": ptr, "pos": ptr, "edge_index": edge_ptr}
    batch._inc_dict = {
        "x": torch.zeros(batch_size, dtype=torch.long),
        "pos": torch.zeros(batch_size, dtype=torch.long),
        "edge_index": ptr[:-1],
    }
    return batch


def to_padded(
    x: Tensor,
    batch: Union[Batch, Tensor],
    max_len: Optional[int] = None,
    fill_value: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """Node-level tensor back to padded form: the inverse of :func:`graph_batch`.

    Args:
        x (Tensor): ``[N, ...]`` one row per token of the batch.
        batch (Batch or Tensor): the batch (uses ``batch.batch``) or the batch vector ``[N]``.
        max_len (int, optional): pad to this length (default: the longest sequence).
        fill_value (float, optional): value of the padding. (default: ``0.0``)

    Returns:
        ``(padded [B, L, ...], mask [B, L])``, right-padded: row ``b`` holds sequence ``b``'s
        tokens in order, so a right-padded input comes back exactly.

    Raises:
        TypeError: when ``x`` is not a tensor with a node dimension, or the batch vector is not
            an integer tensor.
        ValueError: when the batch vector is not ``[N]``, negative or unsorted, or ``max_len``
            is shorter than the longest sequence.
    """
    if not isinstance(x, Tensor) or x.dim() == 0:
        raise TypeError(f"x must be a tensor [N, ...], got {type(x).__name__}")
    vector = batch.batch if isinstance(batch, Batch) else batch
    if (
        not isinstance(vector, Tensor)
        or vector.dtype.is_floating_point
        or vector.dtype.is_complex
        or vector.dtype == torch.bool
    ):
        raise TypeError(
            f"batch must be a Batch or an integer batch vector [N], got "
            f"{vector.dtype if isinstance(vector, Tensor) else type(vector).__name__}"
        )
    if vector.dim() != 1 or vector.numel() != x.size(0):
        raise ValueError(
            f"batch vector must have shape [N] = [{x.size(0)}], got {list(vector.shape)}"
        )
    # Each token's rank is its offset from its sequence's first token: that needs PyG's layout,
    # every sequence's tokens side by side in batch order; any other order would be scattered
    # to wrong positions without an error.
    if vector.numel() and (int(vector.min()) < 0 or bool((vector[1:] < vector[:-1]).any())):
        raise ValueError(
            "batch vector must be non-negative and sorted (each sequence's tokens "
            "side by side, in batch order, as in a PyG Batch)"
        )
    batch_size = (
        int(batch.num_graphs)
        if isinstance(batch, Batch)
        else (int(vector.max()) + 1 if vector.numel() else 0)
    )
    lengths = torch.bincount(vector, minlength=batch_size)
    longest = int(lengths.max()) if batch_size else 0
    max_len = longest if max_len is None else check_int("max_len", max_len, low=0)
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest sequence ({longest})")
    starts = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
    rank = (
        torch.arange(x.size(0), device=vector.device) - starts[vector]
    )  # position inside the sequence
    padded = x.new_full((batch_size, max_len) + tuple(x.shape[1:]), fill_value)
    padded[vector, rank] = x
    mask = torch.arange(max_len, device=vector.device).unsqueeze(0) < lengths.unsqueeze(1)
    return padded, mask
