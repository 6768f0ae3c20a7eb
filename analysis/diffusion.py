r"""Attention diffusion as a spectral filter.

Diffuser's output is ``T V`` with ``T = sum_k theta_k A^k`` a polynomial in the one-hop
attention ``A`` (docs/design.md, Overview). Every eigenvalue ``mu`` of ``A`` becomes
``f(mu)`` of ``T`` (spectral mapping, valid for any square matrix), with

.. math::
    f_{\text{ppr}}(\mu) = (1-\alpha)^K \mu^K + \alpha \sum_{k<K} (1-\alpha)^k \mu^k
    \;\xrightarrow{K \to \infty}\; \frac{\alpha}{1 - (1-\alpha)\mu},
    \qquad
    f_{\text{heat}}(\mu) =
    \frac{\sum_{k \le K} e^{-t} t^k \mu^k / k!}{\sum_{k \le K} e^{-t} t^k / k!}.

Both keep ``f(1) = 1`` (the stationary, "average" signal of a row-stochastic ``A``) and shrink
eigenvalues away from 1: a low-pass filter.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import numpy as np
import scipy.sparse

from analysis.graph import edge_array
from analysis.spectral import DENSE_MAX_NODES, arpack
from graphdiff.checks import DIFFUSION_KERNELS, check_int, is_real

MODULUS_DECIMALS = (
    9  # eigenvalue moduli that agree to this many decimals count as equal when sorting
)


def diffusion_coefficients(
    alpha: float = 0.1, hops: int = 5, kernel: str = "ppr", t: float = 1.0
) -> np.ndarray:
    r"""``theta [hops + 1]``: the weight of ``A^k`` in the truncated diffusion (sums to 1).

    ``ppr``: :math:`\theta_k = \alpha (1-\alpha)^k` for ``k < K`` and :math:`(1-\alpha)^K` for
    ``k = K`` (the recursion ``Z <- (1-alpha) A Z + alpha V`` unrolled ``K`` times).
    ``heat``: :math:`e^{-t} t^k / k!` renormalised over ``k <= K``.
    """
    hops = check_int("hops", hops, 0)
    _check_kernel(kernel, alpha, t)
    k = np.arange(hops + 1)
    if kernel == "ppr":
        theta = alpha * (1.0 - alpha) ** k.astype(np.float64)
        theta[hops] = (1.0 - alpha) ** hops
        return theta
    if t == 0:  # t^0 / 0! = 1: no diffusion at all
        return (k == 0).astype(np.float64)
    # In log space so large t and K do not overflow; e^-t cancels in the normalisation.
    theta = np.exp(k * math.log(t) - np.array([math.lgamma(i + 1) for i in k]))
    return theta / theta.sum()


def diffusion_spectrum(
    eigs: Any, alpha: float = 0.1, hops: Optional[int] = 5, kernel: str = "ppr", t: float = 1.0
) -> np.ndarray:
    r"""Eigenvalues of the diffusion matrix ``T`` given eigenvalues ``eigs`` of ``A``.

    Args:
        eigs: eigenvalues of ``A`` (real or complex, any shape).
        alpha: teleport probability of ``ppr``, in ``[0, 1]``.
        hops: ``K``; ``None`` for the untruncated limit :math:`\alpha / (1 - (1-\alpha)\mu)`
            (``ppr`` with ``alpha > 0`` only).
        kernel: ``"ppr"`` or ``"heat"``.
        t: diffusion time of ``heat``, ``>= 0``.

    Returns:
        ``f(eigs)``, same shape; complex when ``eigs`` is.
    """
    mu = np.asarray(eigs)
    if not (np.issubdtype(mu.dtype, np.number) and not np.issubdtype(mu.dtype, np.bool_)):
        raise TypeError(f"eigs must be numeric, got dtype {mu.dtype}")
    if hops is None:
        _check_kernel(kernel, alpha, t)
        if kernel != "ppr" or not alpha > 0:
            raise ValueError("hops=None (the infinite series) needs kernel='ppr' and alpha > 0")
        return alpha / (1.0 - (1.0 - alpha) * mu)
    theta = diffusion_coefficients(alpha, hops, kernel, t)
    value = np.zeros_like(mu, dtype=np.result_type(mu.dtype, np.float64))
    for coefficient in theta[::-1]:  # Horner: f(mu) = theta_0 + mu (theta_1 + mu (...))
        value = value * mu + coefficient
    return value


class AttentionSpectrum(NamedTuple):
    r"""Leading eigenvalues of a learned attention and of its diffusion, per head.

    Attributes:
        eigs: ``[H, k]`` complex eigenvalues of ``A_h``, by decreasing modulus.
        diffused: ``[H, k]`` complex, ``f(eigs)``: the eigenvalues of the diffusion ``T_h`` on
            the same eigenvectors. Not sorted by modulus: ``f`` does not preserve that order
            (an eigenvalue ``mu`` near 0 maps to about ``theta_0``, e.g. ``alpha``).
        diffusion: the diffusion ``diffused`` was computed for, e.g. ``"PPR, alpha=0.1, K=5"``.
        second: ``[H, 2]`` float, ``(low, high)`` bounds on :math:`|\nu_2|`, the second-largest
            eigenvalue modulus of ``T_h`` over all ``n`` eigenvalues ``f(mu)``, one copy of the
            Perron eigenvalue ``f(1) = 1`` excluded (``nan`` for ``n = 1``). ``low`` is the
            largest ``|f(mu)|`` over the computed ``mu`` other than that one. Where all ``n``
            eigenvalues are known (``n <= DENSE_MAX_NODES``: the dense solver computes them all,
            whatever ``k``) ``high == low``; else the uncomputed ``mu`` have
            :math:`|\mu| \le |\mu_k|`, where :math:`|f(\mu)| \le f(|\mu_k|)` (the weights
            :math:`\theta_i` are nonnegative), so ``high = max(low, f(|mu_k|))``. Both are
            bounds up to the eigensolver's accuracy: above ``DENSE_MAX_NODES`` ARPACK's
            eigenvalues of a non-symmetric ``A`` can be off by about its tolerance (``1e-5``
            near a defective cluster), and so can the bounds.
    """

    eigs: np.ndarray
    diffused: np.ndarray
    diffusion: str
    second: np.ndarray


def attention_spectrum(
    attn: Any,
    edge_index: Any,
    n: int,
    k: int = 8,
    alpha: float = 0.1,
    hops: Optional[int] = 5,
    kernel: str = "ppr",
    t: float = 1.0,
) -> AttentionSpectrum:
    r"""The ``k`` eigenvalues of largest modulus of a learned attention ``A`` and of its diffusion.

    ``A`` is directed and row-stochastic: :math:`A_{ij}` = ``attn[e, h]`` for the edge
    ``e = (j -> i)`` (as returned by ``AttentionDiffusion(..., return_attention_weights=True)``),
    so ``mu = 1`` leads and :math:`|\mu_2|` tells how fast one hop mixes.

    Args:
        attn: ``[E]`` or ``[E, H]`` weights (torch or numpy).
        edge_index: ``[2, E]``, row 0 the key ``j``, row 1 the query ``i``.
        n: number of tokens.
        k: eigenvalues per head, ``1 <= k <= n`` (``k < n - 1`` above ``DENSE_MAX_NODES``).
        alpha, hops, kernel, t: the diffusion, as in :func:`diffusion_spectrum`.

    Raises:
        ValueError: on mismatched shapes, invalid indices or ``k`` out of range.
        TypeError: on a non-integer ``k``.
        SpectralConvergenceError: when ARPACK does not converge.
    """
    src, dst = edge_array(edge_index, n)
    n = int(n)  # validated by edge_array
    weights = attn.detach().cpu().numpy() if hasattr(attn, "detach") else np.asarray(attn)
    weights = weights.astype(np.float64)
    if weights.ndim == 1:
        weights = weights[:, None]
    if weights.ndim != 2 or weights.shape[0] != src.shape[0]:
        raise ValueError(
            f"attn must have shape [E] or [E, H] with E={src.shape[0]} (the edges), "
            f"got {list(np.shape(attn))}"
        )
    k = check_int("k", k, 1, n)
    diffusion_spectrum(np.zeros(1), alpha, hops, kernel, t)  # validate before the eigensolves
    heads = [_leading(scipy.sparse.csr_matrix((w, (dst, src)), shape=(n, n)), k) for w in weights.T]
    eigs = np.stack([values[:k] for values in heads])
    second = np.array([_second_modulus(values, n, alpha, hops, kernel, t) for values in heads])
    depth = "inf" if hops is None else hops
    diffusion = f"PPR, alpha={alpha}, K={depth}" if kernel == "ppr" else f"heat, t={t}, K={depth}"
    return AttentionSpectrum(
        eigs, diffusion_spectrum(eigs, alpha, hops, kernel, t), diffusion, second
    )


def _leading(matrix: scipy.sparse.csr_matrix, k: int) -> np.ndarray:
    """Eigenvalues of largest modulus, sorted by modulus (to ``MODULUS_DECIMALS`` decimals) then
    real part, descending: all ``n``
    below ``DENSE_MAX_NODES`` (the dense solver computes them anyway), else the ``k`` leading."""
    n = matrix.shape[0]
    if n <= DENSE_MAX_NODES:
        values = np.linalg.eigvals(matrix.toarray())
    else:
        values = arpack(matrix, k, "LM", symmetric=False)
    values = values.astype(np.complex128)
    # Moduli equal up to rounding tie, so that the real part decides among them: a permutation
    # (every |mu| = 1) would otherwise lead with whichever root of unity rounded highest.
    modulus = np.round(np.abs(values), MODULUS_DECIMALS)
    order = np.lexsort((-values.real, -modulus))
    return values[order]


def _second_modulus(
    values: np.ndarray, n: int, alpha: float, hops: Optional[int], kernel: str, t: float
) -> tuple[float, float]:
    r"""``(low, high)`` bounds on the second-largest eigenvalue modulus of the diffusion ``T``.

    ``values``: eigenvalues of ``A`` by decreasing modulus, all ``n`` of them or the leading
    ones. One copy of the Perron eigenvalue (the one closest to 1; not simply the first, as
    rounding may put a ``-1`` ahead of it) is excluded, the others are mapped by ``f``. For the
    eigenvalues not computed, :math:`|\mu| \le r = \min |\text{values}|` and
    :math:`|f(\mu)| \le \sum_i \theta_i |\mu|^i \le f(r)`.
    """
    if n < 2:
        return math.nan, math.nan
    rest = np.delete(values, np.argmin(np.abs(values - 1.0)))
    low = float(np.abs(diffusion_spectrum(rest, alpha, hops, kernel, t)).max(initial=0.0))
    if values.shape[0] == n:  # the whole spectrum: exact
        return low, low
    tail = float(diffusion_spectrum(np.abs(values).min(), alpha, hops, kernel, t).real)
    return low, max(low, tail)


def _check_kernel(kernel: Any, alpha: Any, t: Any) -> None:
    """The checks of :func:`graphdiff.nn.functional.check_diffusion_args`: an infinite ``t``
    would make every heat weight ``inf / inf`` (nan), and a bool is a mistake, not 0 or 1."""
    if kernel not in DIFFUSION_KERNELS:
        raise ValueError(f"kernel must be one of {DIFFUSION_KERNELS}, got {kernel!r}")
    if not is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not is_real(t) or not 0.0 <= t < math.inf:
        raise ValueError(f"t must be a finite number >= 0, got {t!r}")
