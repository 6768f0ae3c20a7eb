import gc
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.nn import APPNP
from torch_geometric.utils import softmax

import analysis
from graphdiff.nn import diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.nn.functional import (
    diffuse,
    edge_gat_attention,
    edge_softmax_attention,
    recursion_coefficients,
)
from graphdiff.nn.graph import DiffusionGraph

from .reference import (
    dense_attention,
    dense_diffuse,
    dense_gat_attention,
    edge_values,
    random_graph,
)

N, H, C = 12, 3, 4


def features(n=N, heads=H, channels=C, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, heads, channels, generator=gen, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_edge_attention_matches_dense(shuffle):
    ei = random_graph(N, 50, seed=1, shuffle=shuffle)
    q, k, _ = features()
    attn = edge_softmax_attention(q, k, ei, N)
    assert attn.shape == (ei.size(1), H)
    torch.testing.assert_close(attn, edge_values(dense_attention(q, k, ei), ei))


@pytest.mark.parametrize("hops", [0, 1, 2, 5])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_ppr_matches_dense_recursion(hops, alpha):
    ei = random_graph(N, 40, seed=hops)
    q, k, v = features(seed=1)
    attn = edge_softmax_attention(q, k, ei)
    out = diffuse(attn, v, ei, hops, alpha)
    torch.testing.assert_close(out, dense_diffuse(dense_attention(q, k, ei), v, hops, alpha))
    assert out.is_contiguous()  # [N, H, C] like v: out.view(N, -1) works, as for PyG layers


@pytest.mark.parametrize("hops,t", [(0, 1.0), (1, 0.5), (4, 1.0), (6, 3.0), (3, 0.0)])
def test_heat_matches_dense_series(hops, t):
    ei = random_graph(N, 40, seed=2)
    q, k, v = features(seed=2)
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, hops, 0.1, kernel="heat", t=t)
    expected = dense_diffuse(dense_attention(q, k, ei), v, hops, 0.1, "heat", t)
    torch.testing.assert_close(out, expected)


def test_heat_coefficients_sum_to_one():
    s, c = recursion_coefficients(5, 0.1, "heat", 2.0)
    assert s == 1.0 and math.isclose(sum(c), 1.0)


@pytest.mark.parametrize(
    "kernel, hops, alpha, t",
    [("ppr", 5, 0.1, 1.0), ("ppr", 3, 0.35, 1.0), ("heat", 5, 0.1, 2.0), ("heat", 0, 0.1, 3.0)],
)
def test_the_recursion_unrolls_to_the_analysis_weights(kernel, hops, alpha, t):
    # Z_0 = c_0 V, Z_{m+1} = s A Z_m + c_{m+1} V, as a polynomial in A: the weights theta_k of
    # A^k that analysis.diffusion_coefficients gives independently, in closed form.
    s, c = recursion_coefficients(hops, alpha, kernel, t)
    poly = [c[0]]
    for m in range(hops):
        poly = [c[m + 1]] + [s * coefficient for coefficient in poly]
    np.testing.assert_allclose(
        poly, analysis.diffusion_coefficients(alpha, hops, kernel, t), rtol=1e-12
    )


@pytest.mark.parametrize("hops,alpha", [(1, 0.1), (3, 0.2), (5, 0.1)])
def test_ppr_matches_appnp_head_by_head(hops, alpha):
    ei = random_graph(N, 40, seed=3)
    q, k, v = features(seed=3)
    attn = edge_softmax_attention(q, k, ei)
    out = diffuse(attn, v, ei, hops, alpha)
    appnp = APPNP(hops, alpha, normalize=False)
    for h in range(H):
        torch.testing.assert_close(out[:, h], appnp(v[:, h], ei, edge_weight=attn[:, h]))


def test_one_hop_on_full_pattern_is_sdpa():
    ei = torch.cartesian_prod(torch.arange(N), torch.arange(N)).t()  # all (source, target)
    q, k, v = features(seed=4)
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, hops=1, alpha=0.0)
    expected = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    ).transpose(0, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("hops,alpha", [(5, 0.1), (10, 0.2), (40, 0.3)])
def test_limit_within_truncation_bound(hops, alpha):
    ei = random_graph(N, 50, seed=5)
    q, k, v = features(seed=5)
    A = dense_attention(q, k, ei)
    limit = alpha * torch.linalg.solve(
        torch.eye(N, dtype=torch.float64) - (1 - alpha) * A, v.transpose(0, 1)
    ).transpose(0, 1)
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, hops, alpha)
    # Z_K - Z_inf = ((1 - alpha) A)^K (V - Z_inf) and A is row-stochastic.
    bound = (1 - alpha) ** hops * (v - limit).abs().max()
    assert (out - limit).abs().max() <= bound + 1e-12


@pytest.mark.parametrize("kernel", ["ppr", "heat"])
def test_gradcheck_fused_q_k_v(kernel):
    ei = random_graph(7, 20, seed=6)
    q, k, v = (x.requires_grad_() for x in features(n=7, heads=2, channels=3, seed=6))

    def fn(q, k, v):
        return diffuse(edge_softmax_attention(q, k, ei), v, ei, 3, 0.2, kernel=kernel, t=1.5)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_gradcheck_fused_attention_values_and_hop_dropout():
    ei = random_graph(7, 20, seed=7)
    attn = torch.rand(ei.size(1), 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)

    def fn(attn, v):
        torch.manual_seed(0)  # the same hop-dropout masks at every evaluation
        return diffuse(attn, v, ei, 4, 0.1, hop_dropout=0.3, training=True)

    assert torch.autograd.gradcheck(fn, (attn, v))


@pytest.mark.parametrize("hop_dropout", [0.0, 0.3])
def test_gradcheck_values_only(hop_dropout):
    # Without a gradient for the attention the forward keeps no hop history: the path
    # with two scratch slots shared by all heads.
    ei = random_graph(7, 20, seed=8)
    attn = torch.rand(ei.size(1), 2, dtype=torch.float64)
    v = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)

    def fn(v):
        torch.manual_seed(0)
        return diffuse(attn, v, ei, 4, 0.1, hop_dropout=hop_dropout, training=True)

    assert torch.autograd.gradcheck(fn, (v,))


def test_nodes_without_incoming_edges_are_finite():
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 1]])  # nodes 0, 4, 5 receive nothing
    q, k, v = (x.requires_grad_() for x in features(n=6, seed=8))
    attn = edge_softmax_attention(q, k, ei)
    out = diffuse(attn, v, ei, 3, 0.1)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    torch.testing.assert_close(out[0], 0.1 * v[0])  # alpha * V: teleport only


def test_huge_scores_give_no_nan():
    ei = random_graph(N, 60, seed=9)
    q, k, v = features(seed=9, dtype=torch.float32)
    q = (q * 1e4).requires_grad_()
    attn = edge_softmax_attention(q, k, ei)
    out = diffuse(attn, v, ei, 5, 0.1)
    out.sum().backward()
    assert torch.isfinite(attn).all() and torch.isfinite(out).all()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("magnitude", [0.3, 1.0, 3.0])  # bound below EXP_SAFE, above, far above
@pytest.mark.parametrize("gat", [False, True])
def test_softmax_with_and_without_the_shift_matches_dense(magnitude, gat, monkeypatch):
    # The kernels skip the per-target maximum while a bound keeps every score within
    # EXP_SAFE: scores on both sides of the bound, and either branch forced, give the dense
    # softmax (which takes the maximum off).
    from graphdiff.nn import _autograd

    ei = random_graph(N, 60, seed=12)
    if gat:
        s, t = (x.detach() * 30 * magnitude for x in node_scores(seed=12))
        want = dense_gat_attention(s, t, ei)
    else:
        q, k, _ = (x * 5 * magnitude for x in features(seed=12))
        want = dense_attention(q, k, ei)
    reductions = []
    row_reduce = _autograd.row_reduce
    monkeypatch.setattr(
        _autograd,
        "row_reduce",
        lambda graph, values, reduce="sum": (
            reductions.append(reduce) or row_reduce(graph, values, reduce)
        ),
    )
    # Forced off the shift only where no score overflows exp() without it.
    for safe in (_autograd.EXP_SAFE, 0.0) + ((math.inf,) if magnitude < 1 else ()):
        reductions.clear()
        monkeypatch.setattr(_autograd, "EXP_SAFE", safe)
        got = edge_gat_attention(s, t, ei) if gat else edge_softmax_attention(q, k, ei)
        torch.testing.assert_close(got, edge_values(want, ei))
        # The maximum is taken when forced (EXP_SAFE = 0) and, at the default, only for the
        # scores whose bound exceeds it (magnitudes 1 and 3).
        assert ("max" in reductions) == (safe == 0.0 or (safe != math.inf and magnitude >= 1))


@pytest.mark.parametrize("int32_max", [2**31 - 1, 8])  # 8: every index stays int64
def test_gradients_match_dense_with_either_index_width(int32_max, monkeypatch):
    from graphdiff.nn import graph as structure

    monkeypatch.setattr(structure, "_INT32_MAX", int32_max)
    ei = random_graph(N, 50, seed=12, shuffle=True)
    q, k, v = (x.requires_grad_() for x in features(seed=12))
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, 4, 0.2)
    weight = torch.randn_like(out)
    fused = torch.autograd.grad((out * weight).sum(), (q, k, v))
    expected = dense_diffuse(dense_attention(q, k, ei), v, 4, 0.2)
    dense = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    torch.testing.assert_close(out, expected)
    for got, want in zip(fused, dense):
        torch.testing.assert_close(got, want)
    index_dtype = torch.int32 if int32_max > 100 else torch.int64
    assert diffusion_graph(ei, (N, N)).row.dtype == index_dtype


def in_layout(x, node_major):
    """``x [N, H, C]`` as it is (node-major), or the same values stored head-major."""
    return x if node_major else x.transpose(0, 1).contiguous().transpose(0, 1)


@pytest.mark.parametrize("node_major", [True, False])
def test_head_major_and_node_major_features(node_major, head_calls):
    # The functions take node-major [N, H, C] features and head-major ones as they are and
    # give the result in the layout of their inputs; when each head runs alone, the gradients too
    # (stacked heads pass through one contiguous copy, whose gradient autograd lays out).
    ei = random_graph(N, 40, seed=13)
    graph = diffusion_graph(ei, (N, N))
    q, k, v = features(seed=13)
    q_, k_, v_ = (in_layout(x, node_major).detach().requires_grad_() for x in (q, k, v))
    out = diffuse(edge_softmax_attention(q_, k_, graph), v_, graph, 3, 0.2)
    per_head = head_calls == "per_head"
    assert (out if node_major else out.transpose(0, 1)).is_contiguous()
    expected = dense_diffuse(dense_attention(q, k, ei), v, 3, 0.2)
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(expected)
    grads = torch.autograd.grad((out * weight).sum(), (q_, k_, v_))
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    dense = torch.autograd.grad(
        (dense_diffuse(dense_attention(q, k, ei), v, 3, 0.2) * weight).sum(), (q, k, v)
    )
    for got, want in zip(grads, dense):
        if per_head:
            assert got.stride() == q_.stride()
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("num_nodes", [(12, 12), (7, 12), (12, 5)])
def test_stacked_graph_is_block_diagonal(num_nodes):
    n_src, n_dst = num_nodes
    gen = torch.Generator().manual_seed(15)
    flat = torch.randperm(n_src * n_dst, generator=gen)[:30]
    ei = torch.stack([flat % n_src, flat // n_src])
    graph = diffusion_graph(ei, num_nodes)
    values = torch.rand(3, graph.num_edges, dtype=torch.float64, generator=gen)
    stacked = graph.stacked(3)
    assert graph.stacked(3) is stacked and graph.stacked(1) is graph
    blocks = [graph.csr(head).to_dense() for head in values]
    torch.testing.assert_close(
        stacked.csr(values.reshape(-1)).to_dense(), torch.block_diag(*blocks)
    )
    # The transpose comes from the source graph's; a stack that outlived its source sorts.
    orphan = DiffusionGraph(graph.col, graph.row, num_nodes, sorted_by_target=True).stacked(3)
    gc.collect()
    assert orphan._stack_of[0]() is None
    for stack in (stacked, orphan):
        transposed = stack.transpose_values(values.reshape(-1))
        torch.testing.assert_close(
            stack.csr(transposed, transpose=True).to_dense(), torch.block_diag(*blocks).t()
        )


@pytest.mark.parametrize(
    "heads, edges_in_graphs, nodes_in_graphs, expected",
    [
        (8, 8, 8, 8),
        (8, 7, 8, 4),
        (8, 3, 8, 2),
        (8, 1.5, 8, 1),
        (6, 4, 8, 3),
        (7, 6, 8, 1),
        (1, 100, 100, 1),
        (8, 8, 3, 2),
        (8, 8, 1, 1),
    ],
)
def test_heads_per_call_is_the_largest_divisor_that_fits(
    heads, edges_in_graphs, nodes_in_graphs, expected, monkeypatch
):
    n_src, n_dst = 9, N  # bipartite: the larger side counts
    gen = torch.Generator().manual_seed(16)
    flat = torch.randperm(n_src * n_dst, generator=gen)[:40]
    graph = diffusion_graph(torch.stack([flat % n_src, flat // n_src]), (n_src, n_dst))
    monkeypatch.setattr(graph_module, "MAX_STACKED_EDGES", edges_in_graphs * graph.num_edges)
    monkeypatch.setattr(graph_module, "MAX_STACKED_NODES", nodes_in_graphs * n_dst)
    assert graph.heads_per_call(heads) == expected


@pytest.mark.parametrize("node_major", [True, False])
@pytest.mark.parametrize("num_src", [N, 7])
def test_heads_stacked_in_groups_match_dense(node_major, num_src, monkeypatch):
    # 4 heads, 2 per call: each call's block-diagonal graph holds heads 2g and 2g + 1.
    # Bipartite graphs (7 keys for 12 queries) take one hop without teleport.
    heads = 4
    hops, alpha = (3, 0.2) if num_src == N else (1, 0.0)
    gen = torch.Generator().manual_seed(17)
    flat = torch.randperm(num_src * N, generator=gen)[:40]
    ei = torch.stack([flat % num_src, flat // num_src])
    graph = diffusion_graph(ei, (num_src, N))
    monkeypatch.setattr(graph_module, "MAX_STACKED_EDGES", 2 * graph.num_edges)
    monkeypatch.setattr(graph_module, "MAX_STACKED_NODES", 2 * N)
    assert graph.heads_per_call(heads) == 2
    q = features(heads=heads, seed=17)[0].requires_grad_()
    k, v = (x[:num_src].clone().requires_grad_() for x in features(heads=heads, seed=18)[1:])
    q_, k_, v_ = (in_layout(x, node_major) for x in (q, k, v))
    out = diffuse(edge_softmax_attention(q_, k_, graph), v_, graph, hops, alpha)
    dense = dense_attention(q, k, ei)
    expected = (
        torch.einsum("hij,jhc->ihc", dense, v)
        if num_src != N
        else dense_diffuse(dense, v, hops, alpha)
    )
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(expected)
    got = torch.autograd.grad((out * weight).sum(), (q, k, v))
    want = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_stacked_and_per_head_calls_draw_the_same_hop_dropout(monkeypatch):
    # The masks of a stack hold the same numbers in the same order as the heads' masks.
    # Explicit limits: the autouse fixture may have set them to 0 already.
    ei = random_graph(N, 40, seed=19)
    q, k, v = features(seed=19)
    outputs = []
    for limit, per_call in ((1 << 20, H), (0, 1)):
        monkeypatch.setattr(graph_module, "MAX_STACKED_EDGES", limit)
        monkeypatch.setattr(graph_module, "MAX_STACKED_NODES", limit)
        assert diffusion_graph(ei, (N, N)).heads_per_call(H) == per_call
        torch.manual_seed(0)
        outputs.append(
            diffuse(edge_softmax_attention(q, k, ei), v, ei, 3, 0.1, hop_dropout=0.5, training=True)
        )
    torch.testing.assert_close(outputs[0], outputs[1])


@pytest.mark.parametrize("which", [0, 1])
def test_gradient_of_queries_or_keys_alone(which):
    ei = random_graph(N, 40, seed=14)
    q, k, v = features(seed=14)
    wanted = (q, k)[which].requires_grad_()
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, 2, 0.3)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), wanted)[0]
    dense = dense_diffuse(dense_attention(q, k, ei), v, 2, 0.3)
    torch.testing.assert_close(got, torch.autograd.grad((dense * weight).sum(), wanted)[0])


def test_graph_without_edges():
    # A = 0: every hop gives Z = alpha V, and no gradient reaches q or k.
    ei = torch.empty(2, 0, dtype=torch.long)
    q, k, v = (x.requires_grad_() for x in features(seed=15))
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, 3, 0.2)
    torch.testing.assert_close(out, 0.2 * v)
    grad_q, grad_k, grad_v = torch.autograd.grad(out.sum(), (q, k, v))
    assert not grad_q.any() and not grad_k.any()
    torch.testing.assert_close(grad_v, torch.full_like(v, 0.2))


def test_float32_agrees_with_float64():
    ei = random_graph(N, 60, seed=10)
    q, k, v = features(seed=10)
    out64 = diffuse(edge_softmax_attention(q, k, ei), v, ei, 5, 0.1)
    out32 = diffuse(edge_softmax_attention(q.float(), k.float(), ei), v.float(), ei, 5, 0.1)
    torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=1e-4)


CPU_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


class _MaxNumel(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "graphdiff":  # a fused kernel: count the tensors inside it too
            with self:
                out = func.redispatch(CPU_KEYS, *args, **(kwargs or {}))
        else:
            out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_per_edge_features():
    n, heads, channels, hops = 48, 2, 8, 3
    ei = torch.cartesian_prod(torch.arange(n), torch.arange(n)).t()  # E = n^2 >> K n
    q, k, v = (x.requires_grad_() for x in features(n, heads, channels, seed=11))
    with _MaxNumel() as mode:
        out = diffuse(edge_softmax_attention(q, k, ei), v, ei, hops, 0.1)
        out.sum().backward()
    E = ei.size(1)
    assert mode.largest < E * heads * channels
    assert mode.largest <= max(E * heads, hops * n * heads * channels)


@pytest.mark.parametrize(
    "bad",
    [
        dict(hops=-1),
        dict(hops=1.5),
        dict(alpha=-0.1),
        dict(alpha=1.5),
        dict(kernel="gauss"),
        dict(t=-1.0),
        dict(hop_dropout=1.0),
        dict(alpha=True),
        dict(t=True),
    ],
)
def test_bad_diffusion_arguments(bad):
    ei = random_graph(N, 30)
    q, k, v = features()
    args = dict(hops=2, alpha=0.1, kernel="ppr", t=1.0) | bad
    hop_dropout = args.pop("hop_dropout", 0.0)
    with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
        diffuse(edge_softmax_attention(q, k, ei), v, ei, **args, hop_dropout=hop_dropout)


@pytest.mark.parametrize("kernel", ["ppr", "heat"])
def test_numpy_scalar_diffusion_arguments_match_python_numbers(kernel):
    # As from a config or a hyperparameter sweep; the values are exact in float32.
    ei = random_graph(N, 40, seed=23)
    q, k, v = features(seed=23)
    attn = edge_softmax_attention(q, k, ei)
    expected = diffuse(attn, v, ei, 3, 0.25, kernel, 1.5, hop_dropout=0.5)
    got = diffuse(
        attn,
        v,
        ei,
        np.int64(3),
        np.float32(0.25),
        kernel,
        np.float32(1.5),
        hop_dropout=np.float64(0.5),
    )
    torch.testing.assert_close(got, expected)


def test_bad_edge_index():
    q, k, v = features()
    with pytest.raises(ValueError, match="edge_index"):
        edge_softmax_attention(q, k, torch.tensor([[0, N], [1, 2]]))
    with pytest.raises(ValueError, match="edge_index"):
        edge_softmax_attention(q, k, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(TypeError, match="edge_index"):
        edge_softmax_attention(q, k, torch.tensor([[0.0, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="edge_index"):
        edge_softmax_attention(q, k, torch.tensor([0, 1, 2]))


def test_bad_features():
    ei = random_graph(N, 30)
    q, k, v = features()
    with pytest.raises(ValueError, match="'q' and 'k'"):
        edge_softmax_attention(q, k[..., :2], ei)
    with pytest.raises(TypeError, match="'q'"):
        edge_softmax_attention(q.long(), k, ei)
    with pytest.raises(ValueError, match="num_nodes"):
        edge_softmax_attention(q, k, ei, num_nodes=N + 1)
    for bad in ("N", (N,), (N, N, N), 1.5):
        with pytest.raises(TypeError, match="num_nodes"):
            edge_softmax_attention(q, k, ei, num_nodes=bad)
    for int_like in (np.int64(N), torch.tensor(N), (np.int32(N), torch.tensor(N))):
        torch.testing.assert_close(
            edge_softmax_attention(q, k, ei, num_nodes=int_like), edge_softmax_attention(q, k, ei)
        )
    for bad in ("0.5", torch.tensor(0.5, requires_grad=True), torch.tensor([0.5]), True):
        with pytest.raises(TypeError, match="'scale'"):
            edge_softmax_attention(q, k, ei, scale=bad)
    for bad in (math.inf, -math.inf, math.nan, torch.tensor(math.inf)):
        with pytest.raises(ValueError, match="'scale'"):
            edge_softmax_attention(q, k, ei, scale=bad)
    for constant in (np.float32(0.5), torch.tensor(0.5)):
        torch.testing.assert_close(
            edge_softmax_attention(q, k, ei, scale=constant),
            edge_softmax_attention(q, k, ei, scale=0.5),
        )
    for empty in (q[:, :0], q[..., :0]):  # no heads, no channels
        with pytest.raises(ValueError, match="'q'"):
            edge_softmax_attention(empty, empty, ei)
    attn = edge_softmax_attention(q, k, ei)
    with pytest.raises(ValueError, match="'v'"):
        diffuse(attn[:, :0], v[:, :0], ei)
    with pytest.raises(ValueError, match="'attn'"):
        diffuse(attn[:, :2], v, ei)
    with pytest.raises(ValueError, match="edges"):
        diffuse(attn[:-1], v, ei)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 10),
    density=st.floats(0.0, 1.0),
    hops=st.integers(0, 4),
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
    loops=st.booleans(),
)
def test_property_matches_dense(n, density, hops, alpha, seed, loops):
    ei = random_graph(n, int(density * n * n), seed=seed, self_loops=loops)
    q, k, v = features(n, 2, 3, seed=seed)
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, hops, alpha)
    torch.testing.assert_close(out, dense_diffuse(dense_attention(q, k, ei), v, hops, alpha))


@pytest.mark.parametrize("num_src, num_dst", [(1, 1), (2, 2), (3, 1), (1, 3)])
def test_duplicate_edges_are_separate_edges(num_src, num_dst):
    # More edges than the dense matrix has entries, which torch's sampled_addmm cannot hold.
    # Reference: PyG's edge softmax, where each duplicate is an edge of its own, then the
    # dense recursion on the adjacency with the duplicates summed.
    from torch_geometric.utils import softmax

    gen = torch.Generator().manual_seed(21)
    edges = 3 * num_src * num_dst + 1
    ei = torch.stack(
        [
            torch.randint(num_src, (edges,), generator=gen),
            torch.randint(num_dst, (edges,), generator=gen),
        ]
    )
    q = torch.randn(num_dst, H, C, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (
        torch.randn(num_src, H, C, generator=gen, dtype=torch.float64, requires_grad=True)
        for _ in range(2)
    )
    graph = diffusion_graph(ei, (num_src, num_dst))
    hops, alpha = (3, 0.2) if num_src == num_dst else (1, 0.0)  # bipartite: one plain hop
    attn = edge_softmax_attention(q, k, graph)
    out = diffuse(attn, v, graph, hops, alpha)

    scores = (q[ei[1]] * k[ei[0]]).sum(-1) / math.sqrt(C)
    expected_attn = softmax(scores, ei[1], num_nodes=num_dst)
    dense = torch.zeros(H, num_dst, num_src, dtype=torch.float64).index_put(
        (torch.arange(H)[:, None], ei[1], ei[0]), expected_attn.t(), accumulate=True
    )
    expected = (
        torch.einsum("hij,jhc->ihc", dense, v)
        if num_src != num_dst
        else dense_diffuse(dense, v, hops, alpha)
    )
    torch.testing.assert_close(attn, expected_attn)
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), (q, k, v))
    want = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_match_dense(dtype):
    # torch's CPU sparse kernels have none for these dtypes: computed in float32, cast back.
    ei = random_graph(N, 50, seed=22)
    q, k, v = (x.to(dtype).requires_grad_() for x in features(seed=22))
    out = diffuse(edge_softmax_attention(q, k, ei), v, ei, 3, 0.2)
    assert out.dtype == dtype
    reference = [x.detach().double().requires_grad_() for x in (q, k, v)]
    expected = dense_diffuse(dense_attention(*reference[:2], ei), reference[2], 3, 0.2)
    tolerance = dict(rtol=0.0, atol=0.005 if dtype == torch.float16 else 0.03)
    torch.testing.assert_close(out.double(), expected, **tolerance)
    weight = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad((out.double() * weight).sum(), (q, k, v))
    want = torch.autograd.grad((expected * weight).sum(), reference)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), w, **tolerance)


# -- GAT's additive scores ------------------------------------------------------------------


def node_scores(n_src=N, n_dst=N, heads=H, seed=0, dtype=torch.float64):
    """Per-node GAT scores ``s [n_src, H]``, ``t [n_dst, H]``, requiring gradients."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, heads, generator=gen, dtype=dtype).requires_grad_() for n in (n_src, n_dst)
    ]


def assert_gat_matches_pyg_softmax(s, t, edge_index, negative_slope=0.2, **tolerance):
    """``edge_gat_attention`` and the gradients of ``s`` and ``t`` through it equal PyG's:
    ``softmax(leaky_relu(s[j] + t[i]))`` over each target's edges, by autograd."""
    attn = edge_gat_attention(s, t, edge_index, negative_slope=negative_slope)
    scores = F.leaky_relu(s[edge_index[0]] + t[edge_index[1]], negative_slope)
    expected = softmax(scores, edge_index[1], num_nodes=t.size(0))
    torch.testing.assert_close(attn, expected, **tolerance)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(attn.shape, generator=gen, dtype=attn.dtype)
    got = torch.autograd.grad((attn * weight).sum(), (s, t))
    want = torch.autograd.grad((expected * weight).sum(), (s, t))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tolerance)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("negative_slope", [0.2, 0.0, 1.5])
def test_gat_attention_and_gradients_match_dense(shuffle, negative_slope):
    ei = random_graph(N, 50, seed=31, shuffle=shuffle)
    s, t = node_scores(seed=31)
    v = features(seed=31)[2].requires_grad_()
    attn = edge_gat_attention(s, t, ei, N, negative_slope=negative_slope)
    dense = dense_gat_attention(s, t, ei, negative_slope)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    out, expected = diffuse(attn, v, ei, 3, 0.2), dense_diffuse(dense, v, 3, 0.2)
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), (s, t, v))
    want = torch.autograd.grad((expected * weight).sum(), (s, t, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("kernel", ["ppr", "heat"])
def test_gradcheck_fused_gat_scores(kernel):
    ei = random_graph(7, 20, seed=32)
    s, t = node_scores(7, 7, heads=2, seed=32)
    v = features(n=7, heads=2, channels=3, seed=32)[2].requires_grad_()

    def fn(s, t, v):
        attn = edge_gat_attention(s, t, ei, negative_slope=0.3)
        return diffuse(attn, v, ei, 3, 0.2, kernel=kernel, t=1.5)

    assert torch.autograd.gradcheck(fn, (s, t, v))


@pytest.mark.parametrize("num_src, num_dst", [(1, 1), (3, 1), (1, 3), (5, 4)])
def test_gat_duplicate_edges_and_bipartite_graphs_match_pyg_softmax(num_src, num_dst):
    # Each duplicate is an edge of its own, as in PyG's softmax; the gradients of s and t
    # are the sums over each source's and each target's edges.
    gen = torch.Generator().manual_seed(33)
    edges = 3 * num_src * num_dst + 1
    ei = torch.stack(
        [
            torch.randint(num_src, (edges,), generator=gen),
            torch.randint(num_dst, (edges,), generator=gen),
        ]
    )
    assert_gat_matches_pyg_softmax(*node_scores(num_src, num_dst, seed=33), ei)


def test_gat_graph_without_edges_and_targets_without_incoming_edges():
    s, t = node_scores(seed=34)
    empty = edge_gat_attention(s, t, torch.empty(2, 0, dtype=torch.long))
    assert empty.shape == (0, H)
    grad_s, grad_t = torch.autograd.grad(empty.sum(), (s, t))
    assert not grad_s.any() and not grad_t.any()
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 1]])  # targets 0, 4, ... receive nothing
    attn = edge_gat_attention(s, t, ei)
    grad_s, grad_t = torch.autograd.grad((attn * attn).sum(), (s, t))
    assert not grad_t[[0, 4]].any() and not grad_s[4:].any()
    torch.testing.assert_close(attn[[0, 3]].sum(0), torch.ones(H, dtype=torch.float64))
    assert_gat_matches_pyg_softmax(s, t, ei)


def test_gat_second_derivative_is_a_clear_error():
    ei = random_graph(N, 40, seed=38)
    s, t = node_scores(seed=38)
    attn = edge_gat_attention(s, t, ei)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        torch.autograd.grad(attn.square().sum(), (s, t), create_graph=True)


def test_gat_huge_scores_give_no_nan():
    # Scores of 1e4 in float32: exp would overflow without the per-target maximum taken off
    # first, as PyG's softmax does.
    ei = random_graph(N, 60, seed=35)
    s, t = node_scores(seed=35, dtype=torch.float32)
    huge = (s.detach() * 1e4).requires_grad_()
    assert_gat_matches_pyg_softmax(huge, t, ei)
    assert (edge_gat_attention(huge, t, ei) > 0.999).any()  # the scores do saturate


def test_gat_never_materialises_per_edge_features():
    n, heads, channels, hops = 48, 2, 8, 3
    ei = torch.cartesian_prod(torch.arange(n), torch.arange(n)).t()  # E = n^2 >> K n
    s, t = node_scores(n, n, heads, seed=36)
    v = features(n, heads, channels, seed=36)[2].requires_grad_()
    with _MaxNumel() as mode:
        out = diffuse(edge_gat_attention(s, t, ei), v, ei, hops, 0.1)
        out.sum().backward()
    E = ei.size(1)
    assert mode.largest <= max(E * heads, hops * n * heads * channels) < E * heads * channels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gat_half_precision_scores_match_float64(dtype):
    ei = random_graph(N, 50, seed=37)
    s, t = (x.detach().to(dtype).requires_grad_() for x in node_scores(seed=37))
    attn = edge_gat_attention(s, t, ei)
    assert attn.dtype == dtype
    reference = [x.detach().double().requires_grad_() for x in (s, t)]
    expected = edge_values(dense_gat_attention(*reference, ei), ei)
    tolerance = dict(rtol=0.0, atol=0.005 if dtype == torch.float16 else 0.03)
    torch.testing.assert_close(attn.double(), expected, **tolerance)
    weight = torch.randn(attn.shape, dtype=torch.float64)
    got = torch.autograd.grad((attn.double() * weight).sum(), (s, t))
    want = torch.autograd.grad((expected * weight).sum(), reference)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), w, **tolerance)


def test_gat_bad_inputs():
    ei = random_graph(N, 30)
    s, t = node_scores()
    with pytest.raises(ValueError, match="'src_scores' and 'dst_scores'"):
        edge_gat_attention(s, t[:, :2], ei)
    with pytest.raises(ValueError, match="'src_scores' and 'dst_scores'"):
        edge_gat_attention(s, t.float(), ei)
    with pytest.raises(TypeError, match="'src_scores'"):
        edge_gat_attention(s.long(), t, ei)
    with pytest.raises(TypeError, match="'dst_scores'"):
        edge_gat_attention(s, t.tolist(), ei)
    for bad in (s[:, 0], s[:, :0], s.unsqueeze(-1)):
        with pytest.raises(ValueError, match="'src_scores' must have shape"):
            edge_gat_attention(bad, bad, ei)
    with pytest.raises(ValueError, match="num_nodes"):
        edge_gat_attention(s, t, ei, num_nodes=N + 1)
    with pytest.raises(ValueError, match="edge_index"):
        edge_gat_attention(s, t, torch.tensor([[0, N], [1, 2]]))
    for bad in (math.inf, math.nan, "0.2", True, None):
        with pytest.raises(ValueError, match="'negative_slope'"):
            edge_gat_attention(s, t, ei, negative_slope=bad)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 10),
    density=st.floats(0.0, 1.0),
    negative_slope=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
    loops=st.booleans(),
)
def test_gat_property_matches_dense(n, density, negative_slope, seed, loops):
    ei = random_graph(n, int(density * n * n), seed=seed, self_loops=loops)
    s, t = node_scores(n, n, 2, seed=seed)
    attn = edge_gat_attention(s, t, ei, negative_slope=negative_slope)
    torch.testing.assert_close(attn, edge_values(dense_gat_attention(s, t, ei, negative_slope), ei))
    assert_gat_matches_pyg_softmax(s, t, ei, negative_slope)
