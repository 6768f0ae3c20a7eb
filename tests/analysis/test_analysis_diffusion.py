"""Diffusion spectra against dense matrix polynomials; learned attention spectra."""

import math

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

import analysis
from analysis import spectral


def truncated_ppr(a, alpha, hops):
    """Dense reference: unroll Z <- (1 - alpha) A Z + alpha I from Z = I."""
    z = np.eye(a.shape[0])
    for _ in range(hops):
        z = (1 - alpha) * a @ z + alpha * np.eye(a.shape[0])
    return z


def heat(a, t, hops):
    theta = np.array([t**k / math.factorial(k) for k in range(hops + 1)])
    theta /= theta.sum()
    return sum(c * np.linalg.matrix_power(a, k) for k, c in enumerate(theta))


def random_symmetric_stochastic(n, seed):
    """D^-1/2 W D^-1/2 is symmetric with real spectrum in [-1, 1] (similar to D^-1 W)."""
    rng = np.random.default_rng(seed)
    w = rng.random((n, n)) < 0.3
    w = (w | w.T | np.eye(n, dtype=bool)).astype(float)
    d = w.sum(1)
    return w / np.sqrt(np.outer(d, d))


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(2, 25),
    alpha=st.floats(0.0, 1.0),
    hops=st.integers(0, 8),
    seed=st.integers(0, 1000),
)
def test_diffusion_spectrum_equals_eigenvalues_of_truncated_ppr(n, alpha, hops, seed):
    a = random_symmetric_stochastic(n, seed)
    mu = np.linalg.eigvalsh(a)
    expected = np.linalg.eigvalsh(truncated_ppr(a, alpha, hops))
    got = np.sort(analysis.diffusion_spectrum(mu, alpha, hops))
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_diffusion_spectrum_limit_and_heat():
    mu = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(analysis.diffusion_spectrum(mu, 0.1, None), 0.1 / (1 - 0.9 * mu))
    np.testing.assert_allclose(
        analysis.diffusion_spectrum(mu, 0.1, 400), 0.1 / (1 - 0.9 * mu), atol=1e-12
    )
    a = random_symmetric_stochastic(12, 0)
    expected = np.linalg.eigvalsh(heat(a, 2.0, 6))
    got = np.sort(analysis.diffusion_spectrum(np.linalg.eigvalsh(a), hops=6, kernel="heat", t=2.0))
    np.testing.assert_allclose(got, expected, atol=1e-10)
    # hops=0 is V itself: every eigenvalue becomes 1. f(1) = 1 always (low-pass).
    np.testing.assert_allclose(analysis.diffusion_spectrum(mu, 0.3, 0), np.ones_like(mu))
    assert analysis.diffusion_spectrum(1.0, 0.2, 5) == pytest.approx(1.0)
    assert analysis.diffusion_coefficients(0.1, 5).sum() == pytest.approx(1.0)


def test_diffusion_spectrum_of_complex_eigenvalues():
    rng = np.random.default_rng(1)
    a = rng.random((15, 15))
    a /= a.sum(1, keepdims=True)  # row-stochastic, non-symmetric
    mu = np.linalg.eigvals(a)
    expected = np.linalg.eigvals(truncated_ppr(a, 0.1, 5))
    got = analysis.diffusion_spectrum(mu, 0.1, 5)
    # Spectral mapping: the multisets agree.
    for value in expected:
        assert np.min(np.abs(got - value)) < 1e-9


@pytest.mark.parametrize("n,dense_max", [(60, spectral.DENSE_MAX_NODES), (300, 100)])
def test_attention_spectrum_of_row_stochastic_attention(
    n, dense_max, monkeypatch, synthetic_attention
):
    # dense_max < n runs the sparse (ARPACK) path on a graph small enough for a dense reference.
    monkeypatch.setattr(analysis.diffusion, "DENSE_MAX_NODES", dense_max)
    edge_index, attn = synthetic_attention(n, heads=2, seed=n)
    result = analysis.attention_spectrum(attn, edge_index, n, k=4)
    assert result.eigs.shape == result.diffused.shape == (2, 4)
    np.testing.assert_allclose(result.eigs[:, 0], 1.0, atol=1e-8)  # Perron eigenvalue
    np.testing.assert_allclose(result.diffused[:, 0], 1.0, atol=1e-8)
    # Low-pass: mu = 1 keeps gain 1, everything else is damped.
    assert np.all(np.abs(result.diffused[:, 1:]) < 1.0)
    a = scipy.sparse.csr_matrix(
        (attn[:, 0], (edge_index[1], edge_index[0])), shape=(n, n)
    ).toarray()
    dense = np.linalg.eigvals(a)
    top = dense[np.argsort(-np.abs(dense))][:4]
    np.testing.assert_allclose(
        np.abs(result.eigs[0]), np.abs(top), atol=1e-6
    )  # ARPACK residual tol 1e-5
    for mu in result.eigs[0]:  # each is an eigenvalue of the dense matrix, not just its modulus
        assert np.min(np.abs(dense - mu)) < 1e-6
    one_head = analysis.attention_spectrum(attn[:, 0], edge_index, n, k=4)
    np.testing.assert_allclose(one_head.eigs[0], result.eigs[0])


@pytest.mark.parametrize("n", [4, 8, 12, 64])
def test_attention_spectrum_of_a_permutation_leads_with_one(n):
    # A cycle without self-loops: every eigenvalue is an n-th root of unity, all of modulus 1, so
    # the order among them is the real part's: 1, then the roots next to it (closed form).
    src = np.arange(n)
    result = analysis.attention_spectrum(np.ones(n), np.stack([src, (src + 1) % n]), n, k=3)
    angle = 2 * np.pi / n
    np.testing.assert_allclose(result.eigs[0, 0], 1.0, atol=1e-12)
    np.testing.assert_allclose(result.eigs[0, 1:].real, np.cos(angle), atol=1e-12)
    np.testing.assert_allclose(np.abs(result.eigs[0, 1:].imag), np.sin(angle), atol=1e-12)
