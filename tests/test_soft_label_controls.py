"""The soft-label controls against naive loops: label smoothing keeps SW-CLIP's off-diagonal mass at σ, spread
uniformly; the shuffled control gives SW-CLIP's kernel weights to permuted pairs. And the variogram family's
kernel."""

import math

import numpy as np
import pytest
import torch

from swclip.analysis.variogram import kernel_for_model
from swclip.loss_names import SHUFFLED, SMOOTH, SOFT_LABEL_LOSSES
from swclip.method.losses import SoftClipLoss
from swclip.method.soft_labels import matched_smoothing_targets, soft_targets
from swclip.training.config import LossConfig
from swclip.training.objective import build_loss


def _haversine_m(a, b):
    """Great-circle metres between two (lat, lon) points, the textbook formula (R = 6,371,008.8 m)."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


def _naive_swclip_off_diagonal_mass(latlon, sigma_m, kernel="gaussian"):
    """Per row: 1 − q_ii of SW-CLIP's targets, q_ij = k(d_ij) / Σ_j k(d_ij), by plain loops."""
    out = []
    for i, a in enumerate(latlon):
        w = []
        for b in latlon:
            d = _haversine_m(a, b)
            w.append(math.exp(-d * d / (2 * sigma_m**2)) if kernel == "gaussian" else math.exp(-d / sigma_m))
        out.append(1.0 - w[i] / sum(w))
    return np.array(out)


def _city_batch(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[51.50 + rng.uniform(0, 0.006, n), -0.12 + rng.uniform(0, 0.010, n)]  # (n, 2) a few hundred metres


@pytest.mark.parametrize("sigma_m", [25.0, 150.0, 400.0])
@pytest.mark.parametrize("kernel", ["gaussian", "exponential"])
def test_label_smoothing_has_swclips_off_diagonal_mass_spread_uniformly(sigma_m, kernel):
    latlon = _city_batch()
    n = len(latlon)
    mass = _naive_swclip_off_diagonal_mass(latlon, sigma_m, kernel)
    assert mass.max() > 0.05  # the batch is dense enough that σ matters
    loss = build_loss(LossConfig(name=SMOOTH, sigma_m=sigma_m, kernel=kernel))
    q = loss.target_matrix(torch.tensor(latlon), torch.tensor(latlon)).double().numpy()  # (n, n)
    off = q - np.diag(np.diag(q))
    np.testing.assert_allclose(off.sum(1), mass, atol=2e-6)
    np.testing.assert_allclose(np.diag(q), 1.0 - mass, atol=2e-6)
    for i in range(n):  # uniform: every other column gets the same share
        others = np.delete(q[i], i)
        np.testing.assert_allclose(others, mass[i] / (n - 1), atol=1e-7)


def test_matched_smoothing_keeps_the_own_column_of_a_gathered_batch():
    """Distributed shape: rank 1's rows against the global batch; the own column is offset by the rank."""
    latlon = _city_batch(8)
    q = soft_targets(latlon[4:], 150.0, latlon_cols=latlon)  # (4, 8) numpy
    own = np.arange(4) + 4
    s = matched_smoothing_targets(q, own)
    np.testing.assert_allclose(s.sum(1), 1.0)
    np.testing.assert_allclose(s[np.arange(4), own], q[np.arange(4), own])
    np.testing.assert_allclose(np.delete(s[0], 4), (1 - q[0, 4]) / 7)


def test_shuffled_control_is_swclips_matrix_on_permuted_pairs():
    latlon = _city_batch(16)
    loss = build_loss(LossConfig(name=SHUFFLED, sigma_m=150.0), seed=3)
    ll = torch.tensor(latlon)
    q = loss.target_matrix(ll, ll).double().numpy()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3)).numpy()  # the loss's first draw
    mass = _naive_swclip_off_diagonal_mass(latlon[perm], 150.0)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(1.0 - np.diag(q), mass, atol=2e-6)  # row i carries the mass of location π(i)
    q_true = soft_targets(latlon, 150.0)
    np.testing.assert_allclose(q, q_true[perm][:, perm], atol=2e-6)
    assert np.abs(q - q_true).max() > 0.1  # the spatial structure is gone
    q2 = loss.target_matrix(ll, ll).double().numpy()
    assert not np.allclose(q, q2)  # a fresh permutation every step


def test_control_losses_are_soft_label_losses_and_refuse_a_queue():
    assert {SMOOTH, SHUFFLED} <= set(SOFT_LABEL_LOSSES)
    f = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    ll = torch.tensor(_city_batch(4), dtype=torch.float32)
    with pytest.raises(ValueError, match="queue"):
        SoftClipLoss(50.0, targets="uniform")(f, f, torch.tensor(10.0), ll, f[:2], ll[:2])
    with pytest.raises(ValueError, match="targets"):
        SoftClipLoss(50.0, targets="spatial")


def test_variogram_family_picks_the_kernel():
    assert kernel_for_model("gaussian") == "gaussian"
    assert kernel_for_model("exponential") == kernel_for_model("spherical") == "exponential"
    assert kernel_for_model("stable", 2.0) == "gaussian" and kernel_for_model("stable", 1.0) == "exponential"
    assert kernel_for_model("matern", 0.5) == "exponential" and kernel_for_model("matern", 5.0) == "gaussian"
    with pytest.raises(ValueError, match="shape"):
        kernel_for_model("matern")
    with pytest.raises(ValueError, match="unknown"):
        kernel_for_model("cubic")
