import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.geo import pairwise_haversine_m
from swclip.method.losses import (
    ClipLoss,
    NeighbourhoodConsistencyLoss,
    SoftClipLoss,
    _MassWeightedNeighbourKL,
)
from swclip.method.semivariogram_loss import EmbeddingMemoryBank, SemivariogramWeightedLoss
from swclip.method.soft_labels import soft_targets
from tests.reference import log_softmax_row, soft_clip_loss_loop


def batch(b=16, d=32, seed=0, extent_deg=0.03):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    location = F.normalize(image + 0.7 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    latlon = torch.stack(
        [
            53.48 + extent_deg * torch.rand(b, generator=g, dtype=torch.float64),
            -2.24 + extent_deg * torch.rand(b, generator=g, dtype=torch.float64),
        ],
        1,
    )
    return image.float(), location.float(), latlon


def grads(loss_fn, image, location, *args, **kwargs):
    image, location = image.clone().requires_grad_(), location.clone().requires_grad_()
    out = loss_fn(image, location, *args, **kwargs)
    total = sum(out.values())
    total.backward()
    return total.detach(), image.grad, location.grad


def test_clip_loss_equals_open_clip_reference():
    image, location, _ = batch(24, 64, seed=1)
    scale = torch.tensor(1 / 0.07)
    ours, g_img, g_loc = grads(ClipLoss(), image, location, scale)
    ref, r_img, r_loc = grads(lambda a, b, s: {"l": open_clip.loss.ClipLoss()(a, b, s)}, image, location, scale)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_img, r_img)
    torch.testing.assert_close(g_loc, r_loc)


@pytest.mark.parametrize("kernel, sigma_m", [("gaussian", 300.0), ("exponential", 150.0), ("gaussian", 0.0)])
def test_soft_clip_loss_equals_loop_reference_value_and_gradient(kernel, sigma_m):
    image, location, latlon = batch(10, 8, seed=2)
    image, location = image.double(), location.double()
    scale = 12.0
    q = soft_targets(latlon.numpy(), sigma_m, kernel).tolist()
    sim = (image @ location.T).tolist()
    ref_value = soft_clip_loss_loop(sim, q, scale)
    value, g_img, _ = grads(
        SoftClipLoss(sigma_m, kernel), image, location, torch.tensor(scale, dtype=torch.float64), latlon
    )
    assert value.item() == pytest.approx(ref_value, rel=1e-5)
    # gradient of the loop reference, by central differences on one coordinate per row
    eps = 1e-6
    for i in range(3):
        bumped = [image.clone(), image.clone()]
        bumped[0][i, 0] += eps
        bumped[1][i, 0] -= eps
        lp = soft_clip_loss_loop((bumped[0] @ location.T).tolist(), q, scale)
        lm = soft_clip_loss_loop((bumped[1] @ location.T).tolist(), q, scale)
        assert g_img[i, 0].item() == pytest.approx((lp - lm) / (2 * eps), rel=1e-3, abs=1e-6)


@settings(max_examples=25)
@given(st.integers(2, 24), st.integers(0, 1000), st.sampled_from(["gaussian", "exponential"]))
def test_sigma_zero_soft_clip_equals_clip(b, seed, kernel):
    image, location, latlon = batch(b, 16, seed)
    scale = torch.tensor(20.0)
    soft, gs_img, gs_loc = grads(SoftClipLoss(0.0, kernel), image, location, scale, latlon)
    hard, gh_img, gh_loc = grads(ClipLoss(), image, location, scale)
    torch.testing.assert_close(soft, hard)
    torch.testing.assert_close(gs_img, gh_img)
    torch.testing.assert_close(gs_loc, gh_loc)


@settings(max_examples=20)
@given(st.integers(3, 24), st.integers(0, 1000), st.floats(10.0, 2000.0))
def test_losses_are_invariant_to_permuting_the_batch(b, seed, sigma_m):
    image, location, latlon = batch(b, 16, seed)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    scale = torch.tensor(14.0)
    for loss in (ClipLoss(), SoftClipLoss(sigma_m), SoftClipLoss(sigma_m, nc_weight=0.5)):
        a = sum(loss(image, location, scale, latlon).values())
        p = sum(loss(image[perm], location[perm], scale, latlon[perm]).values())
        torch.testing.assert_close(a, p, rtol=1e-5, atol=1e-6)


def nc_rows(image, q, tau):
    """Per row i with neighbour mass: (m_i, KL(Q⁰_i ‖ softmax_{j≠i}(v_i·v_j/τ))) by loops, m_i = Σ_{j≠i} q_ij."""
    n, out = len(image), []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        mass = sum(q[i][j] for j in others)
        if mass <= 0:
            continue
        lp = log_softmax_row([sum(a * b for a, b in zip(image[i], image[j])) / tau for j in others])
        kl = 0.0
        for k, j in enumerate(others):
            q0 = q[i][j] / mass
            if q0 > 0:
                kl += q0 * (math.log(q0) - lp[k])
        out.append((mass, kl))
    return out


def nc_loop(image, q, tau):
    """The mass-weighted mean Σ_i m_i KL_i / Σ_i m_i, by loops."""
    rows = nc_rows(image, q, tau)
    return sum(m * kl for m, kl in rows) / sum(m for m, _ in rows)


def test_neighbourhood_consistency_equals_loop_reference():
    image, location, latlon = batch(12, 8, seed=3)
    q = soft_targets(latlon, 400.0)
    got = NeighbourhoodConsistencyLoss(0.2)(image.double(), image.double(), q.double())
    ref = nc_loop(image.double().tolist(), q.double().tolist(), 0.2)
    assert got.item() == pytest.approx(ref, rel=1e-6)
    out = SoftClipLoss(400.0, nc_weight=0.3, nc_temperature=0.2)(image, location, torch.tensor(10.0), latlon)
    assert set(out) == {"contrastive_loss", "nc_loss"}
    assert out["nc_loss"].item() == pytest.approx(0.3 * ref, rel=1e-4)


def test_neighbourhood_consistency_gradient_matches_finite_differences_of_the_loop():
    """The fused backward (swclip.method.losses._MassWeightedNeighbourKL) against central differences of
    the plain-loop term, for both shapes it runs in: one process (the rows are the columns) and one rank of two
    (5 local rows against 10 gathered columns, own columns offset by the rank)."""
    image, _, latlon = batch(10, 6, seed=11)
    image = image.double()
    q = soft_targets(latlon, 400.0).double()  # (10, 10)
    tau, eps = 0.2, 1e-6

    # one process: the gradient of the loop term over all rows, against every coordinate
    v = image.clone().requires_grad_()
    NeighbourhoodConsistencyLoss(tau)(v, v, q).backward()
    ref = torch.zeros(10, 6, dtype=torch.float64)
    for idx in np.ndindex(10, 6):
        vals = []
        for sign in (1, -1):
            x = image.clone()
            x[idx] += sign * eps
            vals.append(nc_loop(x.tolist(), q.tolist(), tau))
        ref[idx] = (vals[0] - vals[1]) / (2 * eps)
    torch.testing.assert_close(v.grad, ref, rtol=1e-6, atol=1e-8)

    # rank 1 of 2 (its rows are 5..9, against all 10 gathered columns): the fused per-row m_i·KL_i alone, its
    # local rows and the gathered columns being two separate inputs (the DDP test covers the all-reduced mass);
    # the gradient's reference drops the KL's constant part (it does not depend on the features)
    local = image[5:].clone().requires_grad_()
    columns = image.clone().requires_grad_()
    q_off = q[5:].clone()
    q_off[torch.arange(5), torch.arange(5, 10)] = 0.0
    per_row = _MassWeightedNeighbourKL.apply(local, columns, q_off, 1 / tau, torch.arange(5), torch.arange(5, 10))
    per_row.sum().backward()
    loop_rows = nc_rows(image.tolist(), q.tolist(), tau)[5:]  # (m_i, KL_i) of rows 5..9, all with mass here
    torch.testing.assert_close(
        per_row.detach(), torch.tensor([m * kl for m, kl in loop_rows], dtype=torch.float64), rtol=1e-9, atol=0
    )

    def rank_term(x_rows, x_cols):  # Σ_i∈5..9 −Σ_j≠i q_ij log softmax_j≠i(x_i·x_j / τ), by loops
        total = 0.0
        for i in range(5, 10):
            others = [j for j in range(10) if j != i]
            lp = log_softmax_row([float(x_rows[i - 5] @ x_cols[j]) / tau for j in others])
            total -= sum(q[i, j].item() * lp[k] for k, j in enumerate(others))
        return total

    def fd(which, shape):  # central differences of rank_term w.r.t. the local rows or the gathered columns
        out = torch.zeros(shape, dtype=torch.float64)
        for idx in np.ndindex(*shape):
            vals = []
            for sign in (1, -1):
                xr, xc = image[5:].clone(), image.clone()
                (xr if which == "rows" else xc)[idx] += sign * eps
                vals.append(rank_term(xr, xc))
            out[idx] = (vals[0] - vals[1]) / (2 * eps)
        return out

    torch.testing.assert_close(local.grad, fd("rows", (5, 6)), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(columns.grad, fd("cols", (10, 6)), rtol=1e-6, atol=1e-8)


def test_plus_transpose_in_blocks_equals_x_plus_x_t():
    """The NC backward's blocked x + xᵀ, at sizes that are and are not multiples of the block (the gradient
    tests above stay inside one block)."""
    from swclip.method.losses import _plus_transpose

    g = torch.Generator().manual_seed(0)
    for n, block in ((1, 128), (300, 128), (256, 128), (37, 8)):
        x = torch.randn(n, n, generator=g)
        torch.testing.assert_close(_plus_transpose(x, block), x + x.T, rtol=0, atol=0)


def test_neighbourhood_consistency_refuses_a_second_backward_instead_of_a_wrong_gradient():
    """The fused term overwrites its saved softmax with the gradient: a retain_graph second pass must raise."""
    image, _, latlon = batch(6, 4, seed=2)
    v = image.double().requires_grad_()
    out = NeighbourhoodConsistencyLoss(0.2)(v, v, soft_targets(latlon, 400.0))
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="back-propagated once"):
        out.backward()


def test_neighbourhood_consistency_is_zero_without_neighbours_and_never_nan():
    image, location, latlon = batch(8, 8, seed=4)
    image = image.requires_grad_()
    out = NeighbourhoodConsistencyLoss()(image, image, soft_targets(latlon, 0.0))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(image.grad).all()


def test_neighbourhood_consistency_prefers_geographically_consistent_embeddings():
    _, _, latlon = batch(32, 8, seed=5)
    q = soft_targets(latlon, 500.0)
    # embeddings that are the (centred) positions themselves follow geography exactly
    xy = (latlon - latlon.mean(0)).float() * 100
    aligned = F.normalize(torch.cat([xy, torch.ones(32, 1)], 1), dim=1)
    scrambled = aligned[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    nc = NeighbourhoodConsistencyLoss(0.05)
    assert nc(aligned, aligned, q) < nc(scrambled, scrambled, q)


class ConstantVariogram:
    """γ(h) = 0.6 everywhere, range 800 m: enough to exercise both weighting branches."""

    range_m = 800.0

    def gamma_torch(self, h_m):
        return torch.full_like(h_m, 0.6)


def weighted_clip_loop(image, location, latlon, scale, beta, gamma, range_m):
    """Weighted InfoNCE by loops: w_ij multiplies exp(s_ij) of the negatives in the denominator."""
    n = len(image)
    dist = pairwise_haversine_m(np.array(latlon))
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    w = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            r = gamma - (1 - cos(image[i], image[j]))
            if r > 0:
                w[i][j] = math.exp(-beta * r) if dist[i, j] <= range_m else math.exp(beta * r)
    total = 0.0
    for a, b in ((image, location), (location, image)):
        for i in range(n):
            s = [scale * cos(a[i], b[j]) for j in range(n)]
            denom = sum(w[i][j] * math.exp(s[j]) for j in range(n))
            total += -(s[i] - math.log(denom)) / n
    return total / 2


def test_semivariogram_weighted_loss_equals_loop_reference():
    image, location, latlon = batch(12, 4, seed=6, extent_deg=0.02)
    loss = SemivariogramWeightedLoss(beta=2.0)
    loss.set_variogram(ConstantVariogram())
    stats = loss(image, location, torch.tensor(5.0), latlon)
    got = stats["contrastive_loss"]
    ref = weighted_clip_loop(image.double().tolist(), location.double().tolist(), latlon.tolist(), 5.0, 2.0, 0.6, 800.0)
    assert got.item() == pytest.approx(ref, rel=1e-5)
    assert stats["false_negative_frac"] > 0 and stats["hard_negative_frac"] > 0  # both branches were exercised


def test_semivariogram_loss_is_clip_until_fitted_and_refits_on_schedule():
    image, location, latlon = batch(16, 8, seed=7)
    scale = torch.tensor(10.0)
    calls = []

    def fit_fn(embeddings, ll):
        calls.append(embeddings.shape[0])
        return ConstantVariogram()

    loss = SemivariogramWeightedLoss(beta=1.0, bank_size=40, refit_every=3, min_fit_samples=32, fit_fn=fit_fn)
    clip = ClipLoss()(image, location, scale)["contrastive_loss"]
    for step in range(1, 7):
        out = loss(image, location, scale, latlon)["contrastive_loss"]
        loss.optimizer_step()  # what the trainer's optimiser hook calls
        if step <= 3:
            torch.testing.assert_close(out, clip)
    assert calls == [40, 40]  # refit after optimiser steps 3 and 6, from a full 40-row bank
    assert loss.variogram is not None


def test_memory_bank_keeps_the_most_recent_rows():
    bank = EmbeddingMemoryBank(5)
    seen = []
    for k in range(4):
        emb = torch.full((3, 2), float(k)) + torch.arange(3.0)[:, None] / 10
        bank.push(emb, torch.zeros(3, 2, dtype=torch.float64))
        seen.extend(emb[:, 0].tolist())
    got, _ = bank.contents()
    assert sorted(got[:, 0].tolist()) == pytest.approx(sorted(seen[-5:]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    image, location, latlon = batch(128, 32, seed=9)
    scale = torch.tensor(14.0)
    for loss in (ClipLoss(), SoftClipLoss(200.0, nc_weight=0.5)):
        cpu = sum(loss(image, location, scale, latlon).values())
        gpu = sum(loss(image.cuda(), location.cuda(), scale.cuda(), latlon.cuda()).values())
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_bad_input_is_refused_with_a_clear_message():
    image, location, latlon = batch(8, 8)
    with pytest.raises(ValueError, match="location_features"):
        ClipLoss()(image, location[:5], torch.tensor(1.0))
    with pytest.raises(ValueError, match="latlon"):
        SoftClipLoss(10.0)(image, location, torch.tensor(1.0), latlon[:3])
    with pytest.raises(ValueError, match="sigma_m"):
        SoftClipLoss(-5.0)
    with pytest.raises(ValueError, match="nc_weight"):
        SoftClipLoss(5.0, nc_weight=-1)
    with pytest.raises(ValueError, match="beta"):
        SemivariogramWeightedLoss(beta=-1)


def test_no_batch_by_batch_float64_matrix_on_the_loss_path():
    """The trigonometry is float64 per point; nothing (B, B) may be float64 (issue 2's memory rule)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    b = 48
    big_float64 = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.ndim == 2 and min(t.shape) >= b // 2:
                    big_float64.append((str(func), tuple(t.shape)))
            return out

    image, location, latlon = batch(b, 16, seed=10)
    sv = SemivariogramWeightedLoss(beta=1.0, refit_every=0)
    sv.set_variogram(ConstantVariogram())
    with Watch():
        for loss in (SoftClipLoss(200.0, nc_weight=0.5), sv):
            v, l_ = image.clone().requires_grad_(), location.clone().requires_grad_()
            sum(loss(v, l_, torch.tensor(10.0), latlon).values()).backward()
    assert big_float64 == []
    # and the watch itself works: the float64 numpy-style path would be caught
    with Watch():
        from swclip.geo import pairwise_haversine_m

        pairwise_haversine_m(latlon, dtype=torch.float64)
    assert big_float64


def test_neighbourhood_consistency_rows_count_by_their_neighbour_mass():
    """A row whose only neighbour sits 10σ away (mass ~e⁻⁵⁰) must not weigh as much as a row with real neighbours."""
    # two close pairs (50 m) and one far sample 1.5 km from the nearest; σ = 150 m
    latlon = torch.tensor(
        [[51.5, -0.1], [51.50045, -0.1], [51.51, -0.1], [51.51045, -0.1], [51.52394, -0.1]], dtype=torch.float64
    )
    q = soft_targets(latlon, 150.0)  # float32, as on the loss path
    mass = q.clone().fill_diagonal_(0).sum(1)
    assert 1e-23 < mass[4] < 1e-20 and mass[:4].min() > 0.4
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    got = NeighbourhoodConsistencyLoss(0.1)(image, image, q)
    ref = nc_loop(image.tolist(), q.tolist(), 0.1)
    assert got.item() == pytest.approx(ref, rel=1e-9)
    # the far row's own KL is large (its Q⁰ is one-hot on one neighbour), yet the term equals the mean
    # over the four rows with real neighbours: the far row counts by its mass (renormalised, it would count 1/5)
    rows = nc_rows(image.tolist(), q.tolist(), 0.1)
    assert len(rows) == 5 and rows[4][1] > 0.5
    near = [kl for _, kl in rows[:4]]
    assert got.item() == pytest.approx(sum(m * kl for m, kl in rows[:4]) / sum(m for m, _ in rows[:4]), rel=1e-6)
    assert abs(got.item() - sum(near + [rows[4][1]]) / 5) > 0.05


def test_logits_stay_float32_under_bf16_autocast():
    """Cosine similarities that differ by ~1e-3 at logit scale 100: a bf16 GEMM (spacing 0.25–0.5 logits)
    would move the loss by ~1e-2 and the gradients by ~20 %; in float32 they match the float32 loss."""
    g = torch.Generator().manual_seed(0)
    b, d = 64, 32
    base = F.normalize(torch.randn(1, d, generator=g), dim=1)
    image = F.normalize(base + 0.03 * torch.randn(b, d, generator=g), dim=1)
    location = F.normalize(base + 0.03 * torch.randn(b, d, generator=g), dim=1)
    sims = image @ location.T
    assert 1e-3 < sims.std() < 2e-2 and sims.min() > 0.9  # near-identical directions: the hard case
    latlon = torch.stack(
        [
            51.45 + 0.01 * torch.rand(b, generator=g, dtype=torch.float64),
            -2.6 + 0.01 * torch.rand(b, generator=g, dtype=torch.float64),
        ],
        1,
    )
    scale = torch.tensor(100.0)
    for loss in (ClipLoss(), SoftClipLoss(300.0), SoftClipLoss(300.0, nc_weight=0.5)):
        ref = grads(loss, image, location, scale, latlon)
        v, l_ = image.clone().requires_grad_(), location.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # forward under autocast, backward outside, as training does
            total = sum(loss(v, l_, scale, latlon).values())
        total.backward()
        got = total.detach(), v.grad, l_.grad
        # stated tolerance: float32 round-off only (the inputs are float32 either way)
        for name, a, b_ in zip(("loss", "image grad", "location grad"), got, ref):
            torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6, msg=f"{type(loss).__name__} {name}")
