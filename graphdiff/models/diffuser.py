"""The Diffuser transformer: RoBERTa-style post-LayerNorm layers whose self-attention is
attention diffusion on a sparse pattern graph.

Every model takes either a PyG :class:`~torch_geometric.data.Batch` of token graphs (``x``
token ids ``[N]``, ``edge_index``, ``pos``, ``batch``) or padded token ids ``[B, L]`` with a
mask ``[B, L]``, boolean or Hugging Face's 0/1 ``attention_mask``; the padded form is turned
into a graph batch with the model's pattern.
The pattern's sparse structure (a :class:`~graphdiff.nn.DiffusionGraph`) is built once per
batch and passed to every layer.

Both are first turned into a :class:`PreparedBatch` (:meth:`Diffuser.prepare`): the checked
token ids and positions and the built structure, everything that depends on the batch's
values. A model called with a prepared batch runs only tensor code, so that it compiles whole
(``torch.compile(model, fullgraph=True, dynamic=True)``: one graph for every length) and
exports (``torch.export.export(model, (prepared,))``)::

    prepared = model.diffuser.prepare(tokens, mask)   # eager: patterns, structure, checks
    logits = compiled(prepared)
"""

from __future__ import annotations

import math
from typing import Any, List, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from graphdiff.data import graph_batch
from graphdiff.data.graphs import as_bool_mask
from graphdiff.models.config import DiffuserConfig
from graphdiff.models.pretrained import PretrainedMixin
from graphdiff.nn import AttentionDiffusion, DiffusionGraph, diffusion_graph


class PreparedBatch(NamedTuple):
    """A graph batch ready for the layers (:meth:`Diffuser.prepare`): its token ids and
    positions, checked, and its pattern's :class:`~graphdiff.nn.DiffusionGraph`, built for the
    model's heads (with the transposed structure that gradients read when prepared with
    gradients enabled). Every model takes one where it takes a graph batch, and returns what it
    returns for one (node-level outputs without padding). Only tensors and the built structure:
    the whole model compiles and exports on it.

    Attributes:
        tokens (torch.Tensor): Token ids ``[N]``.
        pos (torch.Tensor): Each token's position in its sequence ``[N]``.
        graph (DiffusionGraph): The structure of ``edge_index``.
        batch (torch.Tensor): Each token's sequence ``[N]``.
        ptr (torch.Tensor): Where each sequence starts, and the end: ``[B + 1]``.
        edge_index (torch.Tensor): The batch's ``[2, E]`` edges (returned with the attention
            weights).
    """

    tokens: Tensor
    pos: Tensor
    graph: DiffusionGraph
    batch: Tensor
    ptr: Tensor
    edge_index: Tensor

    @property
    def num_nodes(self) -> int:
        """The number of tokens ``N`` (as a graph batch's ``num_nodes``)."""
        return self.tokens.size(0)


Inputs = Union[Batch, PreparedBatch, Tensor]


def sinusoidal_positions(max_len: int, dim: int) -> Tensor:
    """The fixed ``[max_len, dim]`` sine/cosine table of Vaswani et al. (2017)."""
    position = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class Embeddings(nn.Module):
    """Token plus position embeddings, then LayerNorm and dropout: ``[N] -> [N, D]``."""

    def __init__(self, config: DiffuserConfig):
        super().__init__()
        self.tokens = nn.Embedding(
            config.vocab_size, config.hidden, padding_idx=config.pad_token_id
        )
        self.positional = config.positional
        if config.positional == "learned":
            self.positions = nn.Embedding(config.max_len, config.hidden)
        elif config.positional == "sinusoidal":
            self.register_buffer(
                "table", sinusoidal_positions(config.max_len, config.hidden), persistent=False
            )
        self.norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, pos: Tensor) -> Tensor:
        x = self.tokens(tokens)
        if self.positional == "learned":
            x = x + self.positions(pos)
        elif self.positional == "sinusoidal":
            x = x + self.table[pos]
        return self.dropout(self.norm(x))


class DiffuserLayer(nn.Module):
    """``x = LN(x + Drop(W_o Diffuse(x)))``, then ``x = LN(x + Drop(FFN(x)))`` (post-LN, GELU)."""

    def __init__(self, config: DiffuserConfig):
        super().__init__()
        self.attention = AttentionDiffusion(
            config.hidden,
            config.hidden // config.heads,
            heads=config.heads,
            hops=config.hops,
            alpha=config.alpha,
            kernel=config.kernel,
            t=config.t,
            concat=True,
            dropout=config.attention_dropout,
            hop_dropout=config.hop_dropout,
        )
        self.output = nn.Linear(config.hidden, config.hidden)
        self.norm1 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.ffn = nn.Sequential(
            nn.Linear(config.hidden, config.ffn), nn.GELU(), nn.Linear(config.ffn, config.hidden)
        )
        self.norm2 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, edge_index: Any, return_attention_weights: bool = False):
        """``x [N, D]`` -> ``[N, D]``; ``edge_index`` is any adjacency the attention takes,
        best a :class:`~graphdiff.nn.DiffusionGraph` shared by the layers."""
        attended = self.attention(x, edge_index, return_attention_weights=return_attention_weights)
        attended, attention = attended if return_attention_weights else (attended, None)
        x = self.norm1(x + self.dropout(self.output(attended)))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return (x, attention) if return_attention_weights else x


class Diffuser(PretrainedMixin, nn.Module):
    """The Diffuser encoder.

    ``model(batch)`` returns node states ``[N, D]`` for a graph batch or a
    :class:`PreparedBatch`; ``model(tokens, mask)`` returns padded states ``[B, L, D]``. With
    ``return_attention_weights=True`` it also returns ``(edge_index, [attention [E, H] of each
    layer])``: the one-hop attention, never a dense diffused matrix.
    """

    def __init__(self, config: DiffuserConfig):
        super().__init__()
        self.config = config
        self.pattern = config.build_pattern()
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(DiffuserLayer(config) for _ in range(config.layers))

    def to_batch(
        self, inputs: Inputs, mask: Optional[Tensor] = None, *, truncate: bool = False
    ) -> Batch:
        """The graph batch of the model's input: a :class:`~torch_geometric.data.Batch` as is, or
        padded ``[B, L]`` token ids with their ``mask [B, L]`` (True or 1 = real token)
        turned into one with the model's pattern (:func:`graphdiff.data.graph_batch`).

        Args:
            inputs (Batch or torch.Tensor): A graph batch or padded token ids ``[B, L]``.
            mask (torch.Tensor, optional): The mask of padded input. (default: :obj:`None`)
            truncate (bool, optional): Cut padded sequences longer than ``max_len`` instead
                of raising. (default: :obj:`False`)
        """
        if isinstance(inputs, Batch):
            return inputs
        if mask is None:
            raise ValueError("padded token input needs its mask [B, L] (True = real token)")
        tokens = inputs
        if tokens.dim() != 2 or mask.shape != tokens.shape:
            raise ValueError(
                f"tokens and mask must both be [B, L], got {list(tokens.shape)} "
                f"and {list(mask.shape)}"
            )
        if tokens.size(1) > self.config.max_len:
            if not truncate:
                raise ValueError(
                    f"sequence length {tokens.size(1)} exceeds "
                    f"max_len={self.config.max_len}; pass truncate=True to cut "
                    f"sequences to max_len"
                )
            tokens, mask = tokens[:, : self.config.max_len], mask[:, : self.config.max_len]
        return graph_batch(tokens, mask, self.pattern)

    def restore_padding(
        self, node_values: Tensor, inputs: Inputs, mask: Optional[Tensor] = None
    ) -> Tensor:
        """Node-level values ``[N, ...]`` in the layout of the model's input: as they are for a
        graph batch; for padded input ``[B, L, ...]`` (``L`` capped at ``max_len``), each
        token's values where the mask put it (left padding and gaps included), zeros
        elsewhere. The inverse of :meth:`to_batch` on node values.

        Args:
            node_values (torch.Tensor): One row per real token, in batch order.
            inputs (Batch, PreparedBatch or torch.Tensor): What the model was called with.
            mask (torch.Tensor, optional): The mask of padded input. (default: :obj:`None`)
        """
        if isinstance(inputs, (Batch, PreparedBatch)):
            return node_values
        if mask is None:
            raise ValueError("padded token input needs its mask [B, L] (True = real token)")
        mask = as_bool_mask(mask[:, : self.config.max_len]).to(node_values.device)
        # graph_batch took the tokens in mask order, so this assignment is its exact inverse.
        padded = node_values.new_zeros(tuple(mask.shape) + tuple(node_values.shape[1:]))
        padded[mask] = node_values
        return padded

    def prepare(
        self, inputs: Inputs, mask: Optional[Tensor] = None, *, truncate: bool = False
    ) -> PreparedBatch:
        """The :class:`PreparedBatch` of the model's input (a prepared batch as is): the graph
        batch (:meth:`to_batch`), its token ids and positions checked against the vocabulary
        and ``max_len``, and the structure of its edges built once for every layer (found in
        :mod:`graphdiff.cache` for lengths seen before), with the transposed structure when
        gradients are enabled. What runs here reads tensor values or builds and caches
        structure, so it runs eagerly: prepare outside a compiled model, then call it.

        Args:
            inputs (Batch, PreparedBatch or torch.Tensor): A graph batch or padded token ids
                ``[B, L]``.
            mask (torch.Tensor, optional): The mask of padded input. (default: :obj:`None`)
            truncate (bool, optional): Cut padded sequences longer than ``max_len`` instead
                of raising. (default: :obj:`False`)
        """
        if isinstance(inputs, PreparedBatch):
            return inputs
        batch = self.to_batch(inputs, mask, truncate=truncate)
        if batch.pos.numel() and int(batch.pos.max()) >= self.config.max_len:
            raise ValueError(
                f"a sequence has {int(batch.pos.max()) + 1} tokens, more than "
                f"max_len={self.config.max_len}; truncate the sequences first"
            )
        # Here rather than as an IndexError or a dtype error from inside the embedding.
        tokens = batch.x
        if (
            tokens.is_floating_point()
            or tokens.is_complex()
            or tokens.dtype == torch.bool
            or tokens.dim() != 1
        ):
            raise TypeError(
                f"tokens must be integer ids [N] (or [B, L] padded), got "
                f"{tokens.dtype} {list(tokens.shape)}"
            )
        if tokens.numel():
            low, high = (int(bound) for bound in torch.aminmax(tokens))  # one device sync
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, vocab_size) = "
                    f"[0, {self.config.vocab_size}), got [{low}, {high}]"
                )
        # One structure per batch, shared by every layer (and found in graphdiff.cache when
        # graph_batch hands back a cached edge_index of lengths seen before).
        graph = diffusion_graph(batch.edge_index, (tokens.size(0), tokens.size(0)))
        graph.prepare(self.config.heads, backward=torch.is_grad_enabled())
        return PreparedBatch(tokens, batch.pos, graph, batch.batch, batch.ptr, batch.edge_index)

    def encode(self, batch: Union[Batch, PreparedBatch], return_attention_weights: bool = False):
        """Node states ``[N, D]`` of a graph batch or a prepared one (and the per-layer
        attention if asked)."""
        batch = self.prepare(batch)
        x = self.embeddings(batch.tokens, batch.pos)
        attentions: List[Tensor] = []
        checkpointing = self.config.gradient_checkpointing and self.training
        for layer in self.layers:
            if return_attention_weights:
                x, (_, attention) = layer(x, batch.graph, return_attention_weights=True)
                attentions.append(attention)
            elif checkpointing and torch.is_grad_enabled():
                # Non-reentrant: the layer's dropout masks are drawn again from the saved RNG
                # state, so the gradients equal those of the plain run exactly.
                x = checkpoint(layer, x, batch.graph, use_reentrant=False)
            else:
                x = layer(x, batch.graph)
        return (x, (batch.edge_index, attentions)) if return_attention_weights else x

    def forward(
        self,
        inputs: Inputs,
        mask: Optional[Tensor] = None,
        *,
        truncate: bool = False,
        return_attention_weights: bool = False,
    ):
        batch = self.prepare(inputs, mask, truncate=truncate)
        out = self.encode(batch, return_attention_weights)
        states, extra = out if return_attention_weights else (out, None)
        states = self.restore_padding(states, inputs, mask)
        return (states, extra) if return_attention_weights else states


def pool(states: Tensor, batch: Union[Batch, PreparedBatch], pooling: str) -> Tensor:
    """One vector per sequence: its first (CLS) token, or the mean of its tokens. ``[B, D]``."""
    if pooling == "cls":
        return states[batch.ptr[:-1]]
    # The number of sequences from a shape, not an int: one compiled graph for every batch.
    return scatter(states, batch.batch, dim=0, dim_size=batch.ptr.size(0) - 1, reduce="mean")


class DiffuserForSequenceClassification(PretrainedMixin, nn.Module):
    """Encoder, pooling, then RoBERTa's classification head: ``logits [B, num_classes]``."""

    def __init__(self, config: DiffuserConfig):
        super().__init__()
        self.config = config
        self.diffuser = Diffuser(config)
        self.dense = nn.Linear(config.hidden, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden, config.num_classes)

    def forward(
        self,
        inputs: Inputs,
        mask: Optional[Tensor] = None,
        *,
        truncate: bool = False,
        return_attention_weights: bool = False,
    ):
        batch = self.diffuser.prepare(inputs, mask, truncate=truncate)
        out = self.diffuser.encode(batch, return_attention_weights)
        states, extra = out if return_attention_weights else (out, None)
        pooled = self.dropout(pool(states, batch, self.config.pooling))
        logits = self.classifier(self.dropout(torch.tanh(self.dense(pooled))))
        return (logits, extra) if return_attention_weights else logits


class DiffuserForMaskedLM(PretrainedMixin, nn.Module):
    r"""Encoder and a language-model head tied to the token embeddings: ``logits [N, V]``
    for a graph batch, ``[B, L, V]`` for padded input. Train with cross-entropy on the
    masked positions (``ignore_index=-100`` elsewhere).

    The token and position embeddings start from :math:`\mathcal{N}(0, 0.02^2)`, as BERT's and
    RoBERTa's: the tied head's initial logits then have a standard deviation of about
    :math:`0.02 \sqrt{D}` and the initial loss is near :math:`\ln V`, where PyTorch's
    :math:`\mathcal{N}(0, 1)` embeddings give logits of spread :math:`\sqrt{D}` and a loss
    several times larger."""

    def __init__(self, config: DiffuserConfig):
        super().__init__()
        self.config = config
        self.diffuser = Diffuser(config)
        self.dense = nn.Linear(config.hidden, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        embeddings = self.diffuser.embeddings
        with torch.no_grad():
            for table in (embeddings.tokens, getattr(embeddings, "positions", None)):
                if table is not None:
                    table.weight.normal_(0.0, 0.02)
            embeddings.tokens.weight[config.pad_token_id].zero_()

    def forward(
        self,
        inputs: Inputs,
        mask: Optional[Tensor] = None,
        *,
        truncate: bool = False,
        select: Optional[Tensor] = None,
    ) -> Tensor:
        """Logits over the vocabulary.

        Args:
            inputs (Batch, PreparedBatch or torch.Tensor): A graph batch, a prepared one or
                padded token ids ``[B, L]``.
            mask (torch.Tensor, optional): The mask of padded input. (default: :obj:`None`)
            truncate (bool, optional): Cut padded sequences longer than ``max_len``.
                (default: :obj:`False`)
            select (torch.Tensor, optional): Boolean, ``[B, L]`` for padded input (``[N]`` for a
                graph batch): the head runs on these tokens only and the logits are
                ``[M, V]`` for the ``M`` selected tokens in row-major order, as
                ``labels[select]`` orders their labels. Training selects the masked tokens,
                so no ``[B, L, V]`` tensor is built. (default: :obj:`None`)
        """
        batch = self.diffuser.prepare(inputs, mask, truncate=truncate)
        selected = None if select is None else self._node_selection(select, inputs, mask)
        states = self.diffuser.encode(batch)
        if selected is not None:
            states = states[selected]
        states = self.norm(F.gelu(self.dense(states)))
        logits = F.linear(states, self.diffuser.embeddings.tokens.weight, self.bias)
        return logits if select is not None else self.diffuser.restore_padding(logits, inputs, mask)

    def _node_selection(self, select: Tensor, inputs: Inputs, mask: Optional[Tensor]) -> Tensor:
        """``select`` as a boolean ``[N]`` over the batch's tokens (graph batch order)."""
        if select.dtype != torch.bool:
            raise TypeError(f"select must be a boolean tensor, got {select.dtype}")
        if isinstance(inputs, (Batch, PreparedBatch)):
            if select.shape != (inputs.num_nodes,):
                raise ValueError(
                    f"select must be [N] = [{inputs.num_nodes}] for a graph batch, "
                    f"got {list(select.shape)}"
                )
            return select
        if select.shape != inputs.shape:
            raise ValueError(
                f"select must have the tokens' shape {list(inputs.shape)}, got {list(select.shape)}"
            )
        max_len = self.config.max_len
        select = select[:, :max_len]
        mask = as_bool_mask(mask[:, :max_len]).to(select.device)  # a CPU mask for GPU tokens
        if bool((select & ~mask).any()):
            raise ValueError("select marks padding positions (where mask is False)")
        return select[mask]


class DiffuserForRetrieval(PretrainedMixin, nn.Module):
    r"""Two-tower document matching, LRA's Retrieval model: one shared encoder reads each of
    the two documents alone, and an MLP classifies the pair from their pooled vectors.

    .. math::
        u = \mathrm{pool}(\mathrm{Diffuser}(a)), \quad
        v = \mathrm{pool}(\mathrm{Diffuser}(b)), \quad
        f = [u, v, u \odot v, u - v] \in \mathbb{R}^{4D},

    .. math::
        \mathrm{logits} = W_3 \,\mathrm{ReLU}(W_2 \,\mathrm{ReLU}(W_1 f + b_1) + b_2) + b_3,

    LRA's ``classifier_head_dual`` with its ``NLI`` interaction: ``W_1`` is ``[m, 4D]``,
    ``W_2`` ``[m / 2, m]`` and ``W_3`` ``[num_classes, m / 2]`` with ``m = config.ffn`` (LRA
    passes its encoder's MLP width to the head too); no dropout, as in LRA. The documents
    never attend to each other. ``pool`` is ``config.pooling``: the CLS state or the mean over
    the document's real tokens.

    Both towers run as one encoder call on ``2B`` sequences (both padded to one length), so a
    batch costs one graph construction and one pass through the layers.

    Args:
        config (DiffuserConfig): The encoder's configuration; ``num_classes`` sets the
            output width and ``ffn`` (at least 2) the head's.

    Shapes:
        - **input:** ``tokens_a [B, La]``, ``mask_a [B, La]``, ``tokens_b [B, Lb]``,
          ``mask_b [B, Lb]`` (masks boolean or 0/1, True or 1 on real tokens; every row at
          least one)
        - **output:** ``logits [B, num_classes]``
    """

    def __init__(self, config: DiffuserConfig):
        super().__init__()
        if config.ffn < 2:
            raise ValueError(
                f"DiffuserForRetrieval needs config.ffn >= 2 (the head's second layer is "
                f"ffn // 2 wide), got ffn={config.ffn}"
            )
        self.config = config
        self.diffuser = Diffuser(config)
        self.mlp = nn.Linear(4 * config.hidden, config.ffn)
        self.mlp2 = nn.Linear(config.ffn, config.ffn // 2)
        self.classifier = nn.Linear(config.ffn // 2, config.num_classes)

    def features(self, u: Tensor, v: Tensor) -> Tensor:
        """The pair's features ``[u, v, u * v, u - v]``: ``[B, D]`` twice -> ``[B, 4D]``."""
        return torch.cat([u, v, u * v, u - v], dim=-1)

    def classify(self, features: Tensor) -> Tensor:
        """The MLP on the pair's features: ``[B, 4D]`` -> ``logits [B, num_classes]``."""
        return self.classifier(F.relu(self.mlp2(F.relu(self.mlp(features)))))

    def forward(
        self,
        tokens_a: Tensor,
        mask_a: Tensor,
        tokens_b: Tensor,
        mask_b: Tensor,
        *,
        truncate: bool = False,
    ) -> Tensor:
        """``logits [B, num_classes]`` of the pairs ``(a_i, b_i)``.

        Args:
            tokens_a (torch.Tensor): The first documents' padded token ids ``[B, La]``.
            mask_a (torch.Tensor): Their mask ``[B, La]`` (True = real token).
            tokens_b (torch.Tensor): The second documents' padded token ids ``[B, Lb]``.
            mask_b (torch.Tensor): Their mask ``[B, Lb]``.
            truncate (bool, optional): Cut documents longer than ``max_len`` instead of
                raising. (default: :obj:`False`)
        """
        for name, tokens, mask in (("a", tokens_a, mask_a), ("b", tokens_b, mask_b)):
            if not isinstance(tokens, Tensor) or not isinstance(mask, Tensor):
                raise TypeError(f"tokens_{name} and mask_{name} must be tensors")
            if tokens.dim() != 2 or mask.shape != tokens.shape:
                raise ValueError(
                    f"tokens_{name} and mask_{name} must both be [B, L], got "
                    f"{list(tokens.shape)} and {list(mask.shape)}"
                )
        if tokens_a.size(0) != tokens_b.size(0):
            raise ValueError(
                f"tokens_a and tokens_b must hold the same number of documents, got "
                f"{tokens_a.size(0)} and {tokens_b.size(0)}"
            )
        length = max(tokens_a.size(1), tokens_b.size(1))
        pad = self.config.pad_token_id
        tokens = torch.cat(
            [F.pad(t, (0, length - t.size(1)), value=pad) for t in (tokens_a, tokens_b)]
        )
        mask = torch.cat(
            [F.pad(as_bool_mask(m), (0, length - m.size(1))) for m in (mask_a, mask_b)]
        )
        batch = self.diffuser.prepare(tokens, mask, truncate=truncate)
        pooled = pool(self.diffuser.encode(batch), batch, self.config.pooling)
        u, v = pooled.chunk(2)
        return self.classify(self.features(u, v))


def count_parameters(model: nn.Module) -> int:
    """The number of parameters of ``model`` (tied ones counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())
