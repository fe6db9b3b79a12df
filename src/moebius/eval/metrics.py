"""Image-quality metrics for inpainting: paired (PSNR, SSIM, L1) and distribution (FID, KID, U-IDS/P-IDS).

Conventions:

* Images are uint8 RGB arrays ``(H, W, 3)``; a hole map is a bool array ``(H, W)`` (True = inpainted).
* PSNR, L1 and SSIM use data range 255. L1 is the mean absolute difference divided by 255 (so in [0, 1]).
  The ``*_hole`` variants average over hole pixels only.
* SSIM is Wang et al. (2004): Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, computed per channel
  over the window positions that fit inside the image ("valid"), then averaged. This equals
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``.
* FID is the Fréchet distance between Gaussians fitted to feature sets (unbiased covariance, ddof = 1).
* KID is the unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³`` averaged over
  random subsets (Bińkowski et al. 2018).
* U-IDS / P-IDS (Zhao et al. 2021, CoModGAN): a linear SVM separates real (label +1) from fake (label -1)
  features; U-IDS is its training misclassification rate, P-IDS the fraction of pairs whose fake scores
  higher than its real. The SVM is ours (:func:`fit_linear_svm`) and solves the same problem as
  ``sklearn.svm.LinearSVC(dual=False)`` with its defaults: squared hinge loss, C = 1, intercept learned as
  a regularised weight on a constant feature of 1.

Feature extraction lives in :mod:`moebius.eval.features`; these functions take plain arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0


def _check_pair(a: np.ndarray, b: np.ndarray, hole: np.ndarray | None = None) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if hole is not None and hole.shape != a.shape[:2]:
        raise ValueError(f"hole map shape {hole.shape} does not match image {a.shape[:2]}")


def _squared_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) - b.astype(np.float64)) ** 2


def mse(a: np.ndarray, b: np.ndarray, hole: np.ndarray | None = None) -> float:
    """Mean squared error over all pixels and channels, or over the hole's pixels when ``hole`` is given."""
    _check_pair(a, b, hole)
    err = _squared_errors(a, b)
    if hole is not None:
        if not hole.any():
            return float("nan")
        err = err[hole]
    return float(err.mean())


def psnr(a: np.ndarray, b: np.ndarray, hole: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(255² / MSE)``; ``inf`` for identical inputs."""
    m = mse(a, b, hole)
    if math.isnan(m):
        return m
    return float("inf") if m == 0 else 10.0 * math.log10(DATA_RANGE**2 / m)


def l1(a: np.ndarray, b: np.ndarray, hole: np.ndarray | None = None) -> float:
    """Mean absolute difference divided by 255 (full image, or hole pixels only)."""
    _check_pair(a, b, hole)
    err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if hole is not None:
        if not hole.any():
            return float("nan")
        err = err[hole]
    return float(err.mean() / DATA_RANGE)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, ``(size,)`` float64."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM, averaged over channels, at the valid window centres: ``(H - window + 1, W - window + 1)``."""
    _check_pair(a, b)
    if min(a.shape[:2]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {a.shape[:2]}")
    x = torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    y = torch.from_numpy(np.array(b, dtype=np.float64)).permute(2, 0, 1)[:, None]
    g = _gaussian_window(window, sigma)
    rows, cols = g.view(1, 1, window, 1), g.view(1, 1, 1, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows), cols)  # separable, valid: (5C, 1, H - k + 1, W - k + 1)

    mu_x, mu_y, xx, yy, xy = blur(torch.cat([x, y, x * x, y * y, x * y])).chunk(5)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s[:, 0].mean(0).numpy()


def ssim(a: np.ndarray, b: np.ndarray, hole: np.ndarray | None = None) -> float:
    """Mean SSIM; with ``hole``, the mean over windows centred on hole pixels (nan if none is valid)."""
    return ssim_full_and_hole(a, b, hole)[0 if hole is None else 1]


def ssim_full_and_hole(a: np.ndarray, b: np.ndarray, hole: np.ndarray | None) -> tuple[float, float]:
    """``(mean SSIM, mean SSIM over windows centred in the hole)`` from one SSIM map (hole may be None)."""
    _check_pair(a, b, hole)
    smap = ssim_map(a, b)
    if hole is None:
        return float(smap.mean()), float("nan")
    pad = (a.shape[0] - smap.shape[0]) // 2
    inner = hole[pad : pad + smap.shape[0], pad : pad + smap.shape[1]]
    return float(smap.mean()), float(smap[inner].mean()) if inner.any() else float("nan")


# ---------------------------------------------------------------------------------------------------------
# FID


@dataclass(frozen=True)
class GaussianStats:
    """Mean ``(d,)`` and covariance ``(d, d)`` of a feature set, with the number of samples behind them."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def feature_stats(features: np.ndarray) -> GaussianStats:
    """Fit a Gaussian to ``features: (N, d)``: sample mean and unbiased covariance (needs N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need a (N >= 2, d) feature array, got shape {f.shape}")
    return GaussianStats(f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1]), f.shape[0])


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """``||mu_a - mu_b||² + tr(S_a + S_b - 2 (S_a S_b)^½)``, the squared 2-Wasserstein distance of two Gaussians.

    ``tr (S_a S_b)^½`` is computed as ``tr (S_a^½ S_b S_a^½)^½``: the same eigenvalues, but a symmetric
    PSD matrix, so no complex round-off (the usual ``scipy.linalg.sqrtm`` route needs a fix-up for that).
    """
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.shape} vs {b.mu.shape}")
    root_a = _psd_sqrt(a.sigma)
    middle = root_a @ b.sigma @ root_a
    eig = np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)
    dmu = a.mu - b.mu
    value = float(dmu @ dmu + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.sqrt(eig).sum())
    return max(value, 0.0)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet Inception Distance between two feature sets ``(N, d)`` and ``(M, d)``.

    With few samples (``N * M <= d²``) it avoids the ``d x d`` square roots: for centred features A, B the
    non-zero eigenvalues of ``S_a S_b`` are the squared singular values of ``A Bᵀ`` over ``(N-1)(M-1)``, so
    ``tr (S_a S_b)^½ = Σ σ_i(A Bᵀ) / sqrt((N-1)(M-1))``. Otherwise it goes through :func:`frechet_distance`.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    n, m = real.shape[0], fake.shape[0]
    if n < 2 or m < 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need two (N >= 2, d) feature arrays, got {real.shape} and {fake.shape}")
    if n * m > real.shape[1] ** 2:
        return frechet_distance(feature_stats(real), feature_stats(fake))
    a, b = real - real.mean(0), fake - fake.mean(0)
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / math.sqrt((n - 1) * (m - 1))
    dmu = real.mean(0) - fake.mean(0)
    value = dmu @ dmu + np.sum(a * a) / (n - 1) + np.sum(b * b) / (m - 1) - 2 * tr_sqrt
    return max(float(value), 0.0)


# ---------------------------------------------------------------------------------------------------------
# KID


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD² of ``x: (n, d)`` and ``y: (m, d)`` with ``k(u, v) = (u·v / d + coef0) ** degree``.

    ``(sum_{i!=j} k(x_i, x_j)) / (n(n-1)) + (sum_{i!=j} k(y_i, y_j)) / (m(m-1)) - 2 mean_{i,j} k(x_i, y_j)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    if n < 2 or m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    k_xx = (x @ x.T / d + coef0) ** degree
    k_yy = (y @ y.T / d + coef0) ** degree
    k_xy = (x @ y.T / d + coef0) ** degree
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kid(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation of :func:`polynomial_mmd2` over random subsets.

    Each subset draws ``min(subset_size, N, M)`` rows without replacement from each side (seeded). With
    both sets no larger than ``subset_size`` every subset is the whole set, so one evaluation is done.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size == real.shape[0] == fake.shape[0]:
        return polynomial_mmd2(real, fake), 0.0
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2(real[rng.choice(real.shape[0], size, replace=False)],
                        fake[rng.choice(fake.shape[0], size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------------------------------------------
# U-IDS / P-IDS


@dataclass(frozen=True)
class LinearSVM:
    """A linear classifier ``decision(x) = x @ weight + bias`` (positive = the +1 class)."""

    weight: np.ndarray
    bias: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Signed scores ``(N,)`` for ``x: (N, d)``."""
        return np.asarray(x, dtype=np.float64) @ self.weight + self.bias


def fit_linear_svm(x: np.ndarray, y: np.ndarray, c: float = 1.0, tol: float = 1e-6,
                   max_newton: int = 100) -> LinearSVM:
    """L2-regularised squared-hinge linear SVM in the primal, by Newton's method with conjugate gradients.

    Minimises ``½ |w̃|² + c Σ_i max(0, 1 - y_i w̃·x̃_i)²`` where ``x̃ = [x, 1]`` and ``w̃ = [w, b]`` (the
    intercept is regularised like a weight: liblinear's convention, which ``LinearSVC(dual=False)`` uses).
    The loss is convex and piecewise quadratic; a step solves ``(I + 2c X̃_Aᵀ X̃_A) s = -g`` on the active
    set A (margins below 1) by CG using only matrix-vector products, then backtracks until the loss falls.

    Args:
        x: features ``(N, d)``; y: labels ``(N,)`` in {+1, -1}; c: the loss weight C;
        tol: stop when ``|g| <= tol * |g_0|``; max_newton: cap on Newton steps.
    """
    xt = np.hstack([np.asarray(x, dtype=np.float64), np.ones((len(x), 1))])  # (N, d + 1)
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.abs(y) == 1):
        raise ValueError("labels must be +1 or -1")
    w = np.zeros(xt.shape[1])

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        slack = 1 - y * (xt @ w)
        active = slack > 0
        loss = 0.5 * w @ w + c * np.sum(slack[active] ** 2)
        grad = w - 2 * c * xt[active].T @ (y[active] * slack[active])
        return loss, grad, active

    loss, grad, active = loss_and_grad(w)
    g0 = np.linalg.norm(grad)
    for _ in range(max_newton):
        if np.linalg.norm(grad) <= tol * g0:
            break
        xa = xt[active]

        def hess_vec(v: np.ndarray, xa: np.ndarray = xa) -> np.ndarray:
            return v + 2 * c * xa.T @ (xa @ v)

        step = _conjugate_gradient(hess_vec, -grad, tol=min(0.1, np.sqrt(np.linalg.norm(grad) / g0)))
        t = 1.0
        while True:
            new_loss, new_grad, new_active = loss_and_grad(w + t * step)
            if new_loss <= loss + 1e-4 * t * (grad @ step) or t < 1e-10:
                break
            t *= 0.5
        w, loss, grad, active = w + t * step, new_loss, new_grad, new_active
    return LinearSVM(w[:-1], float(w[-1]))


def _conjugate_gradient(matvec, rhs: np.ndarray, tol: float, max_iter: int = 500) -> np.ndarray:
    """Solve ``A s = rhs`` for symmetric positive-definite A given as ``matvec``, to relative residual ``tol``."""
    s = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    rr = r @ r
    stop = (tol * np.linalg.norm(rhs)) ** 2
    for _ in range(max_iter):
        if rr <= stop:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        s += alpha * p
        r -= alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return s


def inception_discriminative_scores(real: np.ndarray, fake: np.ndarray, c: float = 1.0) -> tuple[float, float]:
    """``(U-IDS, P-IDS)`` as fractions in [0, 1] (papers print them x100); ``real[i]`` pairs with ``fake[i]``.

    U-IDS = 1 - training accuracy of the SVM (a score of 0 counts as "fake", like scikit-learn's
    ``predict``); P-IDS = mean over pairs of ``[decision(fake_i) > decision(real_i)]``. Ideal: 0.5 both.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.shape != fake.shape:
        raise ValueError(f"IDS needs paired features of equal shape, got {real.shape} and {fake.shape}")
    svm = fit_linear_svm(np.vstack([real, fake]), np.r_[np.ones(len(real)), -np.ones(len(fake))], c=c)
    d_real, d_fake = svm.decision(real), svm.decision(fake)
    correct = np.sum(d_real > 0) + np.sum(d_fake <= 0)
    u_ids = 1.0 - correct / (2 * len(real))
    p_ids = float(np.mean(d_fake > d_real))
    return float(u_ids), p_ids
