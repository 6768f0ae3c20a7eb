r"""Eigenvalues of the normalised Laplacian and of the adjacency of a pattern graph.

With ``W`` the symmetrised simple graph (see :mod:`analysis.graph`) and ``D`` its degrees,

.. math::
    L = I - D^{-1/2} W D^{-1/2}, \qquad 0 = \lambda_1 \le \lambda_2 \le \dots \le \lambda_n \le 2.

Solvers, chosen by size and shape:

* ``n <= DENSE_MAX_NODES``: the full spectrum from ``numpy.linalg.eigvalsh`` (exact).
* banded graphs (after a reverse Cuthill-McKee ordering the half band is at most
  ``MAX_HALF_BAND`` and holds at most ``BAND_FACTOR`` times the edges: windows, blocks):
  shift-invert Lanczos around 0 with a banded Cholesky factor. These are the poor expanders whose
  small eigenvalues crowd together like ``1/n^2``; plain Lanczos cannot separate them.
* everything else: Lanczos (ARPACK ``eigsh``) on ``M = I - L`` with the kernel of ``L``
  (``D^{1/2} 1`` per component) deflated. Memory is ``O(edges)``.

Repeated eigenvalues: a single-vector Krylov method (ARPACK) finds each distinct eigenvalue
once, however many times it repeats (a wheel, a cycle: every ``1 - cos`` twice; identical
components). Whenever more than one eigenvalue is wanted at an end, the solvers therefore
search again with the ``k`` eigenvectors found deflated, and again, until the deflated operator
has no eigenvalue beyond the ``k``-th found (see :func:`_with_multiplicity`): by Cauchy
interlacing the ``k`` values are then the ``k`` extreme eigenvalues, counted with multiplicity.
A single eigenvalue (``lambda_2`` of :func:`spectral_gap`, ``lambda_n``) needs no such search.
"Beyond" means by more than ``TOL * max(|theta|, r)`` for an eigenvalue ``theta`` of the
operator iterated on and its spectral radius ``r`` (1 for ``M``; 0 for shift-invert, whose
values are resolved relative to themselves): so a star's eigenvalue 1 of ``L`` (0 of ``M``,
``n - 2`` times) settles after one search. Each search finds at least one more copy of every
repeated eigenvalue, often many (ARPACK restarts on invariant subspaces). Once copies are known
to be missing, a large ``k`` (``> BLOCK_ABOVE_K``: each search would be a large Krylov solve) or
a search that has not settled in ``MAX_ROUNDS - 1`` rounds goes to a block solver, LOBPCG
(``scipy.sparse.linalg.lobpcg``) from the vectors found plus random guards: a block larger than
an eigenvalue's multiplicity returns all its copies, each with a residual below ``TOL * max(|theta|,
r)`` (checked; else :class:`SpectralConvergenceError`); the next search certifies the result as
above. Only a search still finding copies after ``MAX_ROUNDS`` rounds fails: such a graph is
solved densely up to ``DENSE_FALLBACK_MAX_NODES`` nodes, else :class:`RepeatedEigenvalueError`
(a :class:`SpectralConvergenceError`) is raised. Limits, as for any Krylov method: the certificate
assumes each search converges to the extreme eigenvalue of the deflated operator (a random start
vector has a component along it with probability 1), and copies closer than that margin to the
``k``-th value may be left out, which changes no returned value by more than it.
The sparse solvers take ``k <= n // SPARSE_MAX_K_DIVISOR``; a larger ``k`` is solved densely up
to ``DENSE_FALLBACK_MAX_NODES`` nodes and refused (``ValueError``, before any work) above. Up to
that size, ``k > DENSE_ABOVE_K`` is solved densely too: faster than the search.

Sparse eigenvalues carry a residual below ``TOL`` (a guaranteed bound on their error; the
actual error is usually about its square). Failure to converge raises
:class:`SpectralConvergenceError`, never a silent estimate. A disconnected graph has
``lambda_2 = 0`` exactly: :func:`spectral_gap` returns 0.0 and warns with
:class:`DisconnectedGraphWarning`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg as sla

from analysis.graph import DENSE_MAX_NODES, Graph, as_graph
from graphdiff.checks import check_int

BAND_FACTOR = 4  # banded storage may hold this many times the edges of W
MAX_HALF_BAND = 256  # and a Cholesky factorisation, O(n * half^2), runs ~30 times in a bisection
TOL = 1e-5  # ARPACK residual tolerance relative to the eigenvalue; eigenvalue errors are ~TOL^2/gap
MAXITER = 5000  # ARPACK restarts
SHIFT = (
    1e-8  # L + SHIFT * I is positive definite; far below any gap that float64 resolves at n ~ 1e5
)
SPARSE_MAX_K_DIVISOR = (
    4  # sparse solvers for k <= n // 4: beyond, Krylov spaces near n are dense work
)
DENSE_FALLBACK_MAX_NODES = (
    4096  # dense eigvalsh for a larger k up to here: 128 MiB, 0.7 s at 2048, 5 s at 4096
)
# Up to DENSE_FALLBACK_MAX_NODES, more than this many eigenvalues at one end go dense too: the
# multiplicity search costs about a solve per repeated copy (a hypercube on 2048 nodes, k=512:
# 264 s against 0.6 s dense).
DENSE_ABOVE_K = 32
MAX_ROUNDS = 16  # deflated re-searches for repeated eigenvalues; each finds >= 1 missing copy
# Above this many eigenvalues at one end, a deflated Lanczos search is a large Krylov solve
# (O(n k^2) a restart: 140 s for k = 250 on 5000 nodes), so searches look for at most this many
# and the copies they reveal are resolved by one block solve (LOBPCG) instead of more searches.
BLOCK_ABOVE_K = 32
BLOCK_MAXITER = 200  # LOBPCG iterations in all; repeated eigenvalues converge in tens
BLOCK_BURST = 10  # LOBPCG iterations between checks of the wanted residuals


class Solver(NamedTuple):
    """The wanted end of one symmetric operator, written so that it is the "largest".

    Attributes:
        solve: ``solve(count, basis, seed, start)``: the ``count`` largest eigenvalues (and unit
            eigenvectors ``[n, count]``) of the operator restricted to the orthogonal complement
            of ``basis [n, b]`` (or of nothing): by Lanczos from the start vector of ``seed``,
            or, given a ``start`` block ``[n, m]`` (``m > count``), by LOBPCG from it.
        scale: eigenvalues are resolved to ``TOL * max(|value|, scale)`` (see :func:`_accuracy`):
            the spectral radius of a Lanczos operator, 0 for shift-invert (whose values never
            approach 0 relative to their own accuracy).
    """

    solve: Callable[
        [int, Optional[np.ndarray], int, Optional[np.ndarray]], tuple[np.ndarray, np.ndarray]
    ]
    scale: float


class DisconnectedGraphWarning(UserWarning):
    """The graph has several connected components: its spectral gap is exactly 0."""


class SpectralConvergenceError(RuntimeError):
    """A sparse eigensolver stopped before reaching the requested accuracy."""


class RepeatedEigenvalueError(SpectralConvergenceError):
    """An eigenvalue repeats more often among the wanted ones than the sparse search can count."""


class LaplacianExtremes(NamedTuple):
    """Extreme eigenvalues of the normalised Laplacian.

    Attributes:
        smallest: ``[k]`` ascending; the first ``min(k, num_components)`` are exactly 0.
        largest: ``[k]`` ascending; ``largest[-1]`` is ``lambda_n``.
        num_components: connected components of ``W`` (isolated nodes count).
        method: the solver of ``smallest``: ``"dense"`` (``numpy.linalg.eigvalsh``: up to
            ``DENSE_MAX_NODES`` nodes, or a large ``k`` up to ``DENSE_FALLBACK_MAX_NODES``),
            ``"components"`` (every wanted eigenvalue is a 0 of the kernel, no solve),
            ``"lanczos"`` or ``"shift-invert"``.
    """

    smallest: np.ndarray
    largest: np.ndarray
    num_components: int
    method: str


class AdjacencyLambda(NamedTuple):
    r"""Second adjacency eigenvalue and the Ramanujan ratio.

    Attributes:
        lam: :math:`\max(|\mu_2|, |\mu_n|)` over the eigenvalues :math:`\mu_1 \ge \dots \ge \mu_n`
            of ``W``.
        ramanujan_ratio: ``lam / (2 sqrt(d - 1))`` with ``d`` the mean degree: at most 1 for a
            Ramanujan graph (``nan`` when ``d <= 1``). Meaningful for near-regular graphs; hubs
            such as global tokens raise ``mu_2`` far above the bound.
        mean_degree: ``d = nnz(W) / n``.
    """

    lam: float
    ramanujan_ratio: float
    mean_degree: float


def laplacian_extremes(graph: Any, n: Optional[int] = None, k: int = 2) -> LaplacianExtremes:
    """The ``k`` smallest and ``k`` largest eigenvalues of the normalised Laplacian.

    Repeated eigenvalues are returned as often as they repeat (see the module docstring).

    Args:
        graph: a pattern, an edge_index ``[2, E]``, a scipy sparse matrix or a :class:`Graph`.
        n: the number of nodes (required with a pattern or an edge_index).
        k: how many eigenvalues at each end, ``1 <= k <= n``. Above ``DENSE_MAX_NODES`` nodes
            the sparse solvers take ``k <= n // SPARSE_MAX_K_DIVISOR``; a larger ``k`` is solved
            densely (all ``n`` eigenvalues) up to ``DENSE_FALLBACK_MAX_NODES`` nodes, as is
            ``k > DENSE_ABOVE_K`` up to that size.

    Raises:
        ValueError: for ``k`` out of range, or a ``k > n // SPARSE_MAX_K_DIVISOR`` above
            ``DENSE_FALLBACK_MAX_NODES`` nodes (raised before any eigensolve).
        SpectralConvergenceError: when a sparse solver does not converge.
    """
    g = as_graph(graph, n)
    k = check_int("k", k, 1, g.n)
    return extremes(g, k, k)


def extremes(g: Graph, k_small: int, k_large: int) -> LaplacianExtremes:
    """:func:`laplacian_extremes` with a separate count at each end (``k_large`` may be 0)."""
    sparse_max = g.n // SPARSE_MAX_K_DIVISOR
    k = max(k_small, k_large)
    if (
        g.n <= DENSE_MAX_NODES
        or k > sparse_max
        or (k > DENSE_ABOVE_K and g.n <= DENSE_FALLBACK_MAX_NODES)
    ):
        if g.n > DENSE_FALLBACK_MAX_NODES:
            raise ValueError(
                f"k={k} eigenvalues at one end of a graph on n={g.n} nodes: "
                f"the sparse solvers take k <= n // {SPARSE_MAX_K_DIVISOR} = {sparse_max}, "
                f"the dense "
                f"solver n <= {DENSE_FALLBACK_MAX_NODES}"
            )
        spectrum = (
            g.laplacian_spectrum
            if g.n <= DENSE_MAX_NODES
            else g.laplacian_eigenvalues(DENSE_FALLBACK_MAX_NODES)
        )
        return LaplacianExtremes(
            spectrum[:k_small].copy(), spectrum[g.n - k_large :].copy(), g.num_components, "dense"
        )
    half = _band(g)
    try:
        smallest, method = _sparse_smallest(g, k_small, half)
        largest = _sparse_largest(g, k_large, half) if k_large else np.zeros(0)
    except RepeatedEigenvalueError:
        if g.n > DENSE_FALLBACK_MAX_NODES:
            raise
        # e.g. a star: eigenvalue 1 n - 2 times; each search finds only a few more copies
        spectrum = g.laplacian_eigenvalues(DENSE_FALLBACK_MAX_NODES)
        smallest, largest, method = spectrum[:k_small], spectrum[g.n - k_large :], "dense"
    return LaplacianExtremes(smallest, largest, g.num_components, method)


def spectral_gap(graph: Any, n: Optional[int] = None) -> float:
    r"""``lambda_2`` of the normalised Laplacian: how fast a random walk on the pattern mixes.

    Cheeger: :math:`\lambda_2 / 2 \le h(G) \le \sqrt{2 \lambda_2}` for the conductance ``h``.
    A disconnected graph returns exactly ``0.0`` and emits :class:`DisconnectedGraphWarning`
    (filter it with :mod:`warnings` when 0 is the expected answer).

    Raises:
        ValueError: for ``n < 2`` (no second eigenvalue), or invalid input.
        SpectralConvergenceError: when the sparse solver does not converge.
    """
    g = as_graph(graph, n)
    if g.n < 2:
        raise ValueError(f"the spectral gap needs n >= 2 nodes, got n={g.n}")
    if g.num_components > 1:
        warnings.warn(
            DisconnectedGraphWarning(
                f"graph on {g.n} nodes has {g.num_components} connected components: lambda_2 = 0"
            ),
            stacklevel=2,
        )
        return 0.0
    if g.n <= DENSE_MAX_NODES:
        return float(g.laplacian_spectrum[1])
    return float(_sparse_smallest(g, 2, _band(g))[0][1])


def adjacency_lambda(graph: Any, n: Optional[int] = None) -> AdjacencyLambda:
    r""":math:`\lambda = \max(|\mu_2|, |\mu_n|)` of the adjacency ``W`` and the Ramanujan ratio.

    A connected ``d``-regular graph is Ramanujan when :math:`\lambda \le 2\sqrt{d-1}`; random
    ``d``-regular graphs are nearly Ramanujan (Friedman), the benchmark for random attention.

    Raises:
        ValueError: for ``n < 2``, or invalid input.
        SpectralConvergenceError: when the sparse solver does not converge.
    """
    g = as_graph(graph, n)
    if g.n < 2:
        raise ValueError(f"adjacency_lambda needs n >= 2 nodes, got n={g.n}")
    w = g.adjacency
    if g.n <= DENSE_MAX_NODES:
        second, last = g.adjacency_spectrum[[-2, 0]]
    else:
        # Connected: mu_1 is simple (Perron-Frobenius), so the top two need no multiplicity
        # search; with several components mu_1 may repeat (mu_2 = mu_1).
        repeated = g.num_components > 1
        if (half := _band(g)) is not None:  # clustered ends: see _banded_largest
            permuted = g.permuted_adjacency
            second = _banded_largest(permuted, 2, half, repeated)[-1]
            last = -_banded_largest(-permuted, 1, half)[0]
        else:
            second = _with_multiplicity(_lanczos(w), 2, repeated)[-1]
            last = arpack(w, 1, "SA")[0]
    lam = float(max(abs(second), abs(last)))
    mean_degree = w.nnz / g.n
    ratio = lam / (2.0 * math.sqrt(mean_degree - 1.0)) if mean_degree > 1 else math.nan
    return AdjacencyLambda(lam, ratio, mean_degree)


# -- solvers -------------------------------------------------------------------------------------


def _sparse_smallest(g: Graph, k: int, half: Optional[int]) -> tuple[np.ndarray, str]:
    """``k`` smallest eigenvalues of ``L`` (ascending) and the method used."""
    zeros = min(k, g.num_components)
    if zeros == k:
        return np.zeros(k), "components"
    null = g.null_space()
    if half is not None:
        found = -_with_multiplicity(_shift_invert_smallest(g, null, half), k - zeros)
        method = "shift-invert"
    else:
        # Map the kernel of L (eigenvalue 1 of M) to -1, the bottom of M's spectrum, so that the
        # largest eigenvalues of the deflated operator are 1 - lambda_2, 1 - lambda_3, ...
        # Where -1 is returned, it is a true eigenvalue of M too (no eigenvalue lies below -1).
        m = g.normalized_adjacency()
        found = 1.0 - _with_multiplicity(_lanczos(m, null, -1.0, scale=1.0), k - zeros)
        method = "lanczos"
    return np.concatenate([np.zeros(zeros), np.sort(found)]), method


def _sparse_largest(g: Graph, k: int, half: Optional[int]) -> np.ndarray:
    """``k`` largest eigenvalues of ``L``, ascending."""
    if half is not None:
        return np.sort(_banded_largest(g.permuted_laplacian, k, half))
    # The largest of -M = L - I: the smallest of M, without the sign flips of "SA".
    m = g.normalized_adjacency()
    return np.sort(1.0 + _with_multiplicity(_lanczos(-m, scale=1.0), k))


def _with_multiplicity(solver: Solver, k: int, repeated: bool = True) -> np.ndarray:
    r"""The ``k`` largest eigenvalues of a symmetric operator, descending, each counted as often
    as it repeats.

    Lanczos from one start vector sees one vector of each eigenspace: a repeated eigenvalue
    shows up once and the next distinct one takes its place. So, with :math:`V` the
    (orthonormalised) eigenvectors of the ``k`` best values so far and :math:`\theta_k` the
    ``k``-th, search again on the complement of :math:`V` and merge what lies above
    :math:`\theta_k`; stop when the complement has nothing above it. Then (Cauchy interlacing,
    :math:`V` invariant up to the residual) no eigenvalue above :math:`\theta_k` is missing.
    An eigenvalue in the complement is a genuine further copy, never a found one again. Each
    search starts from a new random vector: the old one has no component along the missing
    copies (its projection on an eigenspace is the very copy found). Cost: one more solve when
    nothing repeats, about one more per extra copy otherwise.

    "Above" means by more than the solvers resolve, :func:`_accuracy` of :math:`\theta_k`: a
    copy of :math:`\theta_k` itself changes nothing, and where :math:`\theta_k = 0` (a star's
    eigenvalue 1 of ``L``, ``n - 2`` times) a purely relative margin would count the rounding
    noise of every further copy (``1e-13``) as a new, larger eigenvalue, for ever.

    Block solve: searches count copies a few at a time, so once they are known to be missing,
    a large ``k`` (``> BLOCK_ABOVE_K``, where each search is a large Krylov solve) or a search
    that has not settled in ``MAX_ROUNDS - 1`` rounds hands the values found so far to LOBPCG
    with a block of ``k`` plus guard vectors: a block larger than the multiplicity resolves an
    eigenvalue's copies all at once. The next search then certifies its answer as above; one
    that still finds copies merges them and solves again, within ``MAX_ROUNDS``.

    Args:
        solver: see :class:`Solver`.
        k: how many eigenvalues.
        repeated: ``False`` when the caller knows the answer has no repeats to find (``k = 1``,
            or a simple Perron eigenvalue and one more): one solve, no search.

    Raises:
        RepeatedEigenvalueError: when the search does not settle within ``MAX_ROUNDS`` rounds,
            or its block solve does not converge.
        SpectralConvergenceError: when a Lanczos solve does not converge.
    """
    if k == 1 or not repeated:
        return np.sort(solver.solve(k, None, 0, None)[0])[::-1]
    values, vectors = solver.solve(k, None, 0, None)
    block_after = 1 if k > BLOCK_ABOVE_K else MAX_ROUNDS - 1  # searches before a block solve
    for search in range(1, MAX_ROUNDS + 1):
        order = np.argsort(-values)[:k]
        values, vectors = values[order], vectors[:, order]
        basis = np.linalg.qr(vectors)[0]
        more, more_vectors = solver.solve(min(k, BLOCK_ABOVE_K), basis, search, None)
        beyond = more > values[-1] + _accuracy(values[-1], solver.scale)
        if not beyond.any():
            return values
        values = np.concatenate([values, more[beyond]])
        vectors = np.concatenate([vectors, more_vectors[:, beyond]], axis=1)
        if search >= block_after and search < MAX_ROUNDS:
            # Start from everything found (a good guess for the wanted subspace) and random
            # guards: the guards make the block larger than the multiplicity and speed up
            # convergence, which depends on the gap between theta_k and theta_{block + 1}.
            guards = np.random.default_rng(search).standard_normal((vectors.shape[0], _guards(k)))
            try:
                values, vectors = solver.solve(
                    k, None, search, np.concatenate([vectors, guards], axis=1)
                )
            except SpectralConvergenceError as error:
                # The copies are still uncounted: the caller's dense fallback applies, as to a
                # search that does not settle.
                raise RepeatedEigenvalueError(f"repeated eigenvalues (k={k}): {error}") from error
    raise RepeatedEigenvalueError(
        f"repeated eigenvalues: still finding further copies after {MAX_ROUNDS} deflated "
        f"searches (k={k})"
    )


def _guards(k: int) -> int:
    """Vectors the LOBPCG block carries beyond the ``k`` wanted (and the copies found)."""
    return max(8, k // 8)


def _accuracy(value: np.ndarray, scale: float) -> np.ndarray:
    r"""``TOL * max(|value|, scale)``: how closely the solvers resolve an eigenvalue ``value`` of
    an operator of spectral radius ``scale``. ARPACK's own test is ``TOL * max(|value|,
    eps^(2/3))`` on its Ritz estimate; the floor ``scale`` (1 for :math:`\pm M`) keeps values
    near 0 from demanding residuals below the rounding noise of the operator (about
    ``1e-13``, never below ``TOL`` of the eigenvalues of ``L = I - M`` there)."""
    return TOL * np.maximum(np.abs(value), scale)


def _lobpcg(
    operator: sla.LinearOperator, count: int, start: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""The ``count`` largest eigenvalues (descending) and eigenvectors of a symmetric
    ``operator`` by LOBPCG from the block ``start [n, m]``, ``m > count``, each with a residual
    :math:`\|A x - \theta x\| \le` :func:`_accuracy` of :math:`\theta`.

    A block method converges to an invariant subspace: an eigenvalue repeated up to ``m``
    times comes out that many times, however its copies were (not) found before. scipy's
    stopping test is one absolute bound for the whole block, guard vectors included, which
    converge slowest; so LOBPCG runs in bursts of ``BLOCK_BURST`` iterations, each restarted
    from the last block, until the wanted ``count`` pass the relative test here.

    Raises:
        SpectralConvergenceError: when a wanted residual is above its bound after
            ``BLOCK_MAXITER`` iterations.
    """
    vectors = np.linalg.qr(start)[0]
    for _ in range(BLOCK_MAXITER // BLOCK_BURST):
        with warnings.catch_warnings():
            # "not reaching the requested tolerance" and ill-conditioned Gram matrices inside a
            # burst: LOBPCG recovers from both, and the residuals are checked below.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            values, vectors = sla.lobpcg(
                operator, vectors, tol=TOL * scale, maxiter=BLOCK_BURST, largest=True
            )
        order = np.argsort(-values)
        values, vectors = values[order], vectors[:, order]
        residuals = np.linalg.norm(
            operator @ vectors[:, :count] - vectors[:, :count] * values[:count], axis=0
        )
        bounds = _accuracy(values[:count], scale)
        if (residuals <= bounds).all():
            return values[:count], vectors[:, :count]
    worst = int(np.argmax(residuals / bounds))
    raise SpectralConvergenceError(
        f"LOBPCG (block {start.shape[1]}, k={count}, n={operator.shape[0]}): residual "
        f"{residuals[worst]:.2e} of the iterated operator's eigenvalue {values[worst]:.6g} "
        f"above {bounds[worst]:.2e} "
        f"after {BLOCK_MAXITER} iterations"
    )


def _deflated(
    apply: Callable[[np.ndarray], np.ndarray], n: int, basis: Optional[np.ndarray], parked: float
) -> sla.LinearOperator:
    """``x -> (I - P) apply((I - P) x) + parked P x`` with ``P = basis basis^T``: the operator
    on the complement of ``basis``, whose own vectors are parked at the eigenvalue ``parked``
    (chosen outside the wanted end). ``apply`` takes vectors ``[n]`` and blocks ``[n, m]`` alike."""
    if basis is None:
        product = apply
    else:

        def product(x: np.ndarray) -> np.ndarray:
            inside = basis @ (basis.T @ x)
            y = apply(x - inside)
            return y - basis @ (basis.T @ y) + parked * inside

    return sla.LinearOperator(
        (n, n), matvec=lambda x: product(x.ravel()), matmat=product, dtype=np.float64
    )


def _lanczos(
    matrix: Any,
    null: Optional[scipy.sparse.csc_matrix] = None,
    null_value: float = 0.0,
    scale: float = 0.0,
) -> Solver:
    r"""Plain Lanczos for the largest eigenvalues of a symmetric ``matrix`` (``-M`` gives the
    smallest), the orthonormal columns of ``null`` (eigenvectors of eigenvalue 1) moved to
    ``null_value``, found vectors parked far below: below the spectrum of ``matrix``
    (:math:`\pm M`, :math:`W`), at :math:`-(\|X\|_\infty + 2)`. ``scale``: the accuracy floor
    of :class:`Solver`, 1 for :math:`\pm M` (its spectral radius); 0 (purely relative) for
    ``W``, whose wanted top eigenvalues are far from 0 and whose only cheap bound, the largest
    degree, can exceed its spectral radius many times over (a global token: n against about
    :math:`\sqrt{n}`)."""
    n = matrix.shape[0]
    parked = -(float(np.asarray(abs(matrix).sum(axis=1)).max(initial=0.0)) + 2.0)

    def apply(x: np.ndarray) -> np.ndarray:
        y = matrix @ x
        return y if null is None else y + (null_value - 1.0) * (null @ (null.T @ x))

    def solve(
        count: int, basis: Optional[np.ndarray], seed: int, start: Optional[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        operator = _deflated(apply, n, basis, parked)
        if start is not None:
            return _lobpcg(operator, count, start, scale)
        return arpack(operator, count, "LA", vectors=True, seed=seed)

    return Solver(solve, scale)


def _shift_invert_smallest(g: Graph, null: scipy.sparse.csc_matrix, half: int) -> Solver:
    r"""Shift-invert Lanczos for the smallest nonzero eigenvalues of ``L``, as ``-lambda``.

    Iterates with :math:`P (L + \sigma I)^{-1} P`, ``P`` the projector off the kernel (and off
    found eigenvectors), so the kernel maps to 0 and :math:`\lambda_2, \lambda_3, \dots` to the
    largest values :math:`1 / (\lambda + \sigma)`. ``L + sigma I`` is factored once in banded form
    (Cholesky, ``O(n * half^2)`` time, ``O(n * half)`` memory) in the reverse Cuthill-McKee order;
    eigenvectors are in that order too.
    """
    lap = g.permuted_laplacian
    null = null[g.rcm_order[0]]
    factor = _banded_cholesky(lap + SHIFT * scipy.sparse.identity(g.n), half)
    if factor is None:  # L is positive semidefinite: only rounding can get here
        raise SpectralConvergenceError(f"banded Cholesky of L + {SHIFT} I failed (n={g.n})")

    def inverse(x: np.ndarray) -> np.ndarray:
        x = x - null @ (null.T @ x)
        y = scipy.linalg.cho_solve_banded((factor, False), x)
        return y - null @ (null.T @ y)

    return _shift_invert(lap, -SHIFT, inverse, sign=-1.0)


def _shift_invert(
    matrix: Any, sigma: float, inverse: Callable[[np.ndarray], np.ndarray], sign: float = 1.0
) -> Solver:
    r"""Shift-invert Lanczos for the eigenvalues of ``matrix`` nearest ``sigma``, given
    ``inverse(x) = (matrix - sigma I)^-1 x`` (for vectors and blocks); returned times ``sign``,
    so that the wanted end is the largest (see :class:`Solver`).

    The wanted eigenvalues :math:`\lambda` lie on the side of :math:`\sigma` where
    :math:`\nu = 1 / (\lambda - \sigma)` has the sign :math:`-s` (``s = sign``), so a block
    solve wants the largest :math:`\eta = -s \nu > 0` and returns
    :math:`s \lambda = s \sigma - 1 / \eta`, increasing in :math:`\eta`. Its residuals are
    relative to :math:`\eta`, as ARPACK's are to :math:`\nu`.
    """
    n = matrix.shape[0]

    def solve(
        count: int, basis: Optional[np.ndarray], seed: int, start: Optional[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        # Found vectors map to 0: an infinite eigenvalue, never the nearest to sigma.
        inverse_off = _deflated(inverse, n, basis, 0.0)
        if start is not None:
            eta, vectors = _lobpcg(-sign * inverse_off, count, start, 0.0)
            return sign * sigma - 1.0 / eta, vectors
        values, vectors = arpack(
            matrix, count, "LM", sigma=sigma, inverse=inverse_off, vectors=True, seed=seed
        )
        return sign * values, vectors

    return Solver(solve, 0.0)


def _band(g: Graph) -> Optional[int]:
    """The half bandwidth of ``L`` in the order of :attr:`Graph.rcm_order` when a banded
    factorisation stays ``O(edges)``, else ``None``.

    The ``O(edges)`` reordering is :attr:`Graph.rcm_order`, built once per graph; this decision
    on top of it is ``O(n)``.
    """
    budget = BAND_FACTOR * max(g.adjacency.nnz, g.n)
    # A node of degree d forces a half bandwidth >= d / 2: hubs (global tokens) rule out a band
    # before the O(edges) reordering is paid for.
    hub_half = g.degrees.max(initial=0) // 2
    if hub_half > MAX_HALF_BAND or (hub_half + 1) * g.n > budget:
        return None
    half = g.rcm_order[1]
    return half if half <= MAX_HALF_BAND and (half + 1) * g.n <= budget else None


def _banded_cholesky(matrix: scipy.sparse.spmatrix, half: int) -> Optional[np.ndarray]:
    """Upper banded Cholesky factor of a symmetric matrix of half bandwidth ``half``, or
    ``None`` when it is not positive definite."""
    coo = matrix.tocoo()
    upper = coo.row <= coo.col
    bands = np.zeros((half + 1, matrix.shape[0]))
    bands[half + coo.row[upper] - coo.col[upper], coo.col[upper]] = coo.data[upper]
    try:
        return scipy.linalg.cholesky_banded(bands, lower=False)
    except np.linalg.LinAlgError:
        return None


def _banded_largest(
    matrix: scipy.sparse.csr_matrix, k: int, half: int, repeated: bool = True
) -> np.ndarray:
    r"""``k`` largest eigenvalues of a symmetric banded matrix ``X``, descending: bisection on
    inertia, then shift-invert Lanczos (:func:`_with_multiplicity`; ``repeated`` as there).

    :math:`\sigma I - X` has a Cholesky factor exactly when :math:`\sigma > \mu_{max}`
    (Sylvester), so bisection brackets the top to ``SHIFT`` relative. Shift-invert at the upper
    end then separates the top eigenvalues, which for banded graphs crowd together like
    ``1/n^2`` and defeat plain Lanczos. Cost: about 20 banded factorisations, ``O(n half^2)``
    each.
    """
    n = matrix.shape[0]
    identity = scipy.sparse.identity(n)
    # A Ritz value never exceeds the top eigenvalue: a cheap, loose Lanczos run gives a lower
    # end; step up from it until sigma I - X factors, then bisect the (short) bracket.
    low = float(arpack(matrix, 1, "LA", tol=1e-3)[0])
    step = 1e-3 * max(1.0, abs(low))
    high = low + step
    factor = _banded_cholesky(high * identity - matrix, half)
    while factor is None:
        low, step = high, 4 * step
        high = low + step
        factor = _banded_cholesky(high * identity - matrix, half)
    while high - low > SHIFT * max(1.0, abs(high)):
        middle = 0.5 * (low + high)
        attempt = _banded_cholesky(middle * identity - matrix, half)
        if attempt is None:
            low = middle
        else:
            high, factor = middle, attempt
    if factor is None:
        raise SpectralConvergenceError(f"banded Cholesky of {high} I - X failed (n={n})")

    def inverse(x: np.ndarray) -> np.ndarray:  # (X - high I)^-1 x
        return -scipy.linalg.cho_solve_banded((factor, False), x)

    return _with_multiplicity(_shift_invert(matrix, high, inverse), k, repeated)


def arpack(
    operator: Any,
    k: int,
    which: str,
    sigma: Optional[float] = None,
    inverse: Optional[sla.LinearOperator] = None,
    tol: float = TOL,
    symmetric: bool = True,
    vectors: bool = False,
    seed: int = 0,
) -> Any:
    """``k`` eigenvalues from ARPACK with a fixed start vector (reproducible) and errors that say
    what failed: Lanczos (``eigsh``, real, ``k < n``) for a symmetric operator, else Arnoldi
    (``eigs``, complex, ``k < n - 1``). With ``vectors``: ``(values, vectors [n, k])``; ``seed``
    picks the start vector.

    Raises:
        ValueError: when ``k`` is too large for ARPACK.
        SpectralConvergenceError: when it does not converge within ``MAXITER`` restarts.
    """
    size = operator.shape[0]
    bound = size if symmetric else size - 1
    if k >= bound:
        raise ValueError(f"the sparse solver needs k < {bound} (n={size}), got k={k}")
    start = np.random.default_rng(seed).standard_normal(size)
    if symmetric:
        solver, ncv = sla.eigsh, min(size, max(2 * k + 1, 24))
    else:
        solver, ncv = sla.eigs, None  # scipy's default Krylov size: min(n, max(2 k + 1, 20))
    try:
        return solver(
            operator,
            k=k,
            which=which,
            sigma=sigma,
            OPinv=inverse,
            v0=start,
            ncv=ncv,
            tol=tol,
            maxiter=MAXITER,
            return_eigenvectors=vectors,
        )
    except sla.ArpackNoConvergence as error:
        raise SpectralConvergenceError(
            f"ARPACK ({solver.__name__}, {which}, k={k}, n={size}) converged "
            f"{len(error.eigenvalues)} of {k} eigenvalues to tol={tol} within {MAXITER} restarts"
        ) from error
