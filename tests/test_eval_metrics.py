"""Metrics against hand-computed and textbook values (moebius.eval.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moebius.eval import metrics as M


def _image(seed: int = 0, shape=(24, 20, 3), lo: int = 20, hi: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, shape, dtype=np.uint8)


# --- paired metrics -------------------------------------------------------------------------------------


def test_identical_images_are_perfect():
    a = _image()
    hole = np.zeros(a.shape[:2], bool)
    hole[5:15, 4:12] = True
    assert M.psnr(a, a) == math.inf and M.psnr(a, a, hole) == math.inf
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert M.ssim(a, a, hole) == pytest.approx(1.0, abs=1e-12)
    assert M.l1(a, a) == 0 and M.l1(a, a, hole) == 0


def test_known_shift_psnr_and_l1():
    a = _image()
    b = a + np.uint8(10)  # no overflow: a < 200
    assert M.mse(a, b) == pytest.approx(100.0)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    assert M.l1(a, b) == pytest.approx(10 / 255)


def test_hole_metrics_see_only_the_hole():
    a = _image()
    hole = np.zeros(a.shape[:2], bool)
    hole[:6, :] = True  # 6 of 24 rows: a quarter of the pixels
    b = a.copy()
    b[hole] += np.uint8(20)
    assert M.psnr(a, b, hole) == pytest.approx(10 * math.log10(255**2 / 400))
    assert M.mse(a, b) == pytest.approx(400 / 4)  # full image: a quarter of the pixels moved by 20
    assert M.l1(a, b, hole) == pytest.approx(20 / 255)
    assert M.l1(a, b) == pytest.approx(5 / 255)
    assert M.ssim(a, b, hole) < M.ssim(a, b) < 1
    assert math.isnan(M.psnr(a, b, np.zeros_like(hole)))


def test_ssim_of_constant_images_is_the_luminance_term():
    # sigma_x = sigma_y = cov = 0, so SSIM = (2 mu_x mu_y + C1) / (mu_x² + mu_y² + C1).
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert M.ssim(a, b) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))


def test_ssim_matches_scikit_image_gaussian_setting():
    skm = pytest.importorskip("skimage.metrics")
    a = _image(1, (33, 29, 3), 0, 256)
    b = np.clip(a + np.random.default_rng(2).normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    ref = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255, channel_axis=-1)
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-9)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        M.psnr(_image(), _image(shape=(20, 24, 3)))


# --- FID ------------------------------------------------------------------------------------------------


def _stats(mu, sigma) -> M.GaussianStats:
    return M.GaussianStats(np.asarray(mu, float), np.asarray(sigma, float), 10**6)


def test_frechet_distance_closed_forms():
    # Equal covariances: only the means count.
    assert M.frechet_distance(_stats([0, 0, 0], np.eye(3)), _stats([1, 2, 2], np.eye(3))) == pytest.approx(9.0)
    # Diagonal covariances: sum of (sqrt(s1) - sqrt(s2))².
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    want = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)  # 1 + 0 + 4
    assert M.frechet_distance(_stats([0] * 3, np.diag(s1)), _stats([0] * 3, np.diag(s2))) == pytest.approx(want)
    # Identity vs a rotated diag(4, 9): tr(I) + tr(S) - 2 tr(S^½) = 2 + 13 - 2 (2 + 3) = 5.
    t = 0.7
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    s = r @ np.diag([4.0, 9.0]) @ r.T
    assert M.frechet_distance(_stats([0, 0], np.eye(2)), _stats([0, 0], s)) == pytest.approx(5.0)
    assert M.frechet_distance(_stats([0, 0], s), _stats([0, 0], s)) == pytest.approx(0.0, abs=1e-9)


def test_fid_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(0)
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu2 = np.array([1.0, 0.0, -1.0])
    x = rng.normal(size=(20000, 3)) * np.sqrt(s1)
    y = mu2 + rng.normal(size=(20000, 3)) * np.sqrt(s2)
    want = 2.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)  # |mu|² = 2; 1 + 1 + 4 = 6
    assert M.fid(x, y) == pytest.approx(want, rel=0.03)


def test_fid_low_rank_route_equals_the_full_route():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 50))
    y = 0.5 + 1.3 * rng.normal(size=(9, 50))
    full = M.frechet_distance(M.feature_stats(x), M.feature_stats(y))
    assert 12 * 9 <= 50**2  # so fid() takes the singular-value route
    assert M.fid(x, y) == pytest.approx(full, rel=1e-7)
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-8)


# --- KID ------------------------------------------------------------------------------------------------


def test_polynomial_mmd_by_hand():
    # d = 1, k(u, v) = (u v + 1)³. x = {0, 1}, y = {0, 2}.
    # within x: k(0, 1) = 1; within y: k(0, 2) = 1; across: k = 1, 1, 1, 27 -> mean 7.5. MMD² = 1 + 1 - 15.
    assert M.polynomial_mmd2(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])) == pytest.approx(-13.0)


def _expected_kernel(m1, v1, m2, v2) -> float:
    """E[(x·y/d + 1)³] for independent x ~ N(m1, diag v1), y ~ N(m2, diag v2), via cumulants of a sum."""
    d = len(m1)
    e1 = m1 * m2 / d
    e2 = (m1**2 + v1) * (m2**2 + v2) / d**2
    e3 = (m1**3 + 3 * m1 * v1) * (m2**3 + 3 * m2 * v2) / d**3
    k1, k2, k3 = e1.sum(), (e2 - e1**2).sum(), (e3 - 3 * e2 * e1 + 2 * e1**3).sum()
    z1, z2, z3 = k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3
    return z3 + 3 * z2 + 3 * z1 + 1


def test_kid_is_unbiased_for_known_gaussians():
    m1, v1 = np.array([0.0, 1.0, 0.5, -0.5]), np.array([1.0, 0.5, 2.0, 1.0])
    m2, v2 = np.array([1.0, 1.0, 0.0, 0.5]), np.array([1.0, 1.5, 1.0, 0.5])
    want = (_expected_kernel(m1, v1, m1, v1) + _expected_kernel(m2, v2, m2, v2)
            - 2 * _expected_kernel(m1, v1, m2, v2))
    rng = np.random.default_rng(0)
    estimates = []
    for _ in range(20):
        x = m1 + rng.normal(size=(300, 4)) * np.sqrt(v1)
        y = m2 + rng.normal(size=(300, 4)) * np.sqrt(v2)
        estimates.append(M.kid(x, y, num_subsets=1, subset_size=300)[0])
    assert np.mean(estimates) == pytest.approx(want, rel=0.1)
    same = [M.polynomial_mmd2(m1 + rng.normal(size=(300, 4)) * np.sqrt(v1),
                              m1 + rng.normal(size=(300, 4)) * np.sqrt(v1)) for _ in range(20)]
    assert abs(np.mean(same)) < 0.1 * want


def test_kid_subsets_are_seeded():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) + 0.3
    a = M.kid(x, y, num_subsets=10, subset_size=20, seed=1)
    assert a == M.kid(x, y, num_subsets=10, subset_size=20, seed=1)
    assert a[1] > 0


# --- U-IDS / P-IDS --------------------------------------------------------------------------------------


def test_svm_separable_case_has_the_closed_form_solution():
    # Reals at +1, fakes at -1 (n each). By symmetry b = 0; then ½w² + 2nC(1 - w)² gives w = 4nC / (1 + 4nC).
    n, c = 5, 1.0
    x = np.r_[np.ones(n), -np.ones(n)][:, None]
    y = np.r_[np.ones(n), -np.ones(n)]
    svm = M.fit_linear_svm(x, y, c=c)
    assert svm.weight[0] == pytest.approx(4 * n * c / (1 + 4 * n * c), abs=1e-9)
    assert svm.bias == pytest.approx(0.0, abs=1e-9)
    assert M.inception_discriminative_scores(np.ones((n, 1)), -np.ones((n, 1))) == (0.0, 0.0)


def test_ids_hand_made_overlap():
    # Reals {1, 1, -0.5, 1}, fakes {-1, -1, 0.5, -1}: mirror images, so b = 0 and
    # ½w² + 2C[3(1 - w)² + (1 + w/2)²] is minimal at w = 10C / (1 + 13C) = 5/7 for C = 1.
    # Misclassified: the real at -0.5 and the fake at 0.5 -> U-IDS 2/8. Pair 3: fake 0.5 > real -0.5 -> P-IDS 1/4.
    real = np.array([[1.0], [1.0], [-0.5], [1.0]])
    fake = np.array([[-1.0], [-1.0], [0.5], [-1.0]])
    svm = M.fit_linear_svm(np.vstack([real, fake]), np.r_[np.ones(4), -np.ones(4)])
    assert svm.weight[0] == pytest.approx(5 / 7, abs=1e-9)
    assert M.inception_discriminative_scores(real, fake) == pytest.approx((0.25, 0.25))


def test_svm_reaches_the_optimum_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 15))
    y = np.where(x[:, 0] + 0.8 * rng.normal(size=120) > 0, 1.0, -1.0)
    svm = M.fit_linear_svm(x, y)
    w = np.r_[svm.weight, svm.bias]
    xt = np.hstack([x, np.ones((120, 1))])
    slack = np.clip(1 - y * (xt @ w), 0, None)
    grad = w - 2 * xt.T @ (y * slack)
    assert np.linalg.norm(grad) < 1e-6 * np.linalg.norm(2 * xt.T @ y)


def test_svm_matches_scikit_learn():
    svm_mod = pytest.importorskip("sklearn.svm")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 30))
    y = np.where(x[:, :3].sum(1) + rng.normal(size=80) > 0, 1, -1)
    ref = svm_mod.LinearSVC(dual=False, tol=1e-10, max_iter=10000).fit(x, y)
    ours = M.fit_linear_svm(x, y)
    np.testing.assert_allclose(ours.weight, ref.coef_[0], atol=1e-5)
    assert ours.bias == pytest.approx(ref.intercept_[0], abs=1e-5)
