"""Both variants against naive loops; bad input; state round trip (prototype)."""

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swclip.analysis.variogram import VariogramFit
from swclip.method.semivariogram_loss import (
    LossVariogram,
    LossVariogramFitter,
    SemivariogramWeightedLoss,
    chen_rho_m,
    negative_weights,
)

R = 6_371_008.8


def haversine_loop(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    s = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * R * math.asin(math.sqrt(s))


def stable_gamma(h, fit):
    """scikit-gstat's stable model, written out: b + c0 (1 − exp(−(h / (r / 3^(1/s)))^s))."""
    if h == 0:
        return fit.nugget
    a = fit.range_m / 3 ** (1 / fit.shape)
    return fit.nugget + fit.partial_sill * (1 - math.exp(-((h / a) ** fit.shape)))


def make_fit(range_m=900.0, shape=1.3, nugget=0.1, psill=0.5):
    return VariogramFit(
        ok=True, model="stable", nugget=nugget, partial_sill=psill, sill=nugget + psill, range_m=range_m, shape=shape
    )


def batch(b=12, d=6, seed=0, extent_deg=0.02):
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


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def swclip_loop(image, location, latlon, scale, beta, margin, fit, split_m):
    n = len(image)
    w = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                r = stable_gamma(haversine_loop(latlon[i], latlon[j]), fit) - (1 - dot(image[i], image[j]))
                if r > margin:
                    near = haversine_loop(latlon[i], latlon[j]) <= split_m
                    w[i][j] = math.exp(-beta * (r - margin)) if near else math.exp(beta * (r - margin))
    total = 0.0
    for a, b in ((image, location), (location, image)):
        for i in range(n):
            s = [scale * dot(a[i], b[j]) for j in range(n)]
            total += -(s[i] - math.log(sum(w[i][j] * math.exp(s[j]) for j in range(n)))) / n
    return total / 2


def chen_loop(image, location, latlon, scale, beta, margin, fit, rho_m, q_loc=(), q_ll=(), q_img=()):
    n = len(image)
    cols_loc, cols_ll, cols_img = list(location) + list(q_loc), list(latlon) + list(q_ll), list(image) + list(q_img)
    total = 0.0
    for i in range(n):
        s = []
        for j in range(len(cols_loc)):
            logit = scale * dot(image[i], cols_loc[j])
            if j != i:
                h = haversine_loop(latlon[i], cols_ll[j])
                c = 1 - dot(image[i], cols_img[j])
                p = max(0.0, c - stable_gamma(h, fit) - margin) if h <= rho_m else 0.0
                logit *= math.exp(beta * p)
            s.append(logit)
        total += -(s[i] - math.log(sum(math.exp(x) for x in s))) / n
    return total


@pytest.mark.parametrize("beta,margin", [(2.0, 0.0), (1.5, 0.05)])
def test_swclip_variant_equals_loop(beta, margin):
    image, location, latlon = batch(12, 5, seed=1)
    fit = make_fit(range_m=900.0)
    lv = LossVariogram(fit, 1200.0, "practical", 0, 0)
    loss = SemivariogramWeightedLoss("swclip", beta=beta, margin=margin)
    loss.set_variogram(lv)
    out = loss(image, location, torch.tensor(5.0), latlon)
    ref = swclip_loop(
        image.double().tolist(), location.double().tolist(), latlon.tolist(), 5.0, beta, margin, fit, 1200.0
    )
    assert out["contrastive_loss"].item() == pytest.approx(ref, rel=1e-5)
    assert out["false_negative_frac"] > 0 and out["hard_negative_frac"] > 0


@pytest.mark.parametrize("beta,margin", [(1.0, 0.0), (2.0, 0.02)])
def test_chen2025_variant_equals_loop_with_queue(beta, margin):
    image, location, latlon = batch(10, 5, seed=2)
    q_img, q_loc, q_ll = batch(7, 5, seed=3)
    fit = make_fit(range_m=900.0)
    rho = 1500.0
    loss = SemivariogramWeightedLoss("chen2025", beta=beta, margin=margin)
    loss.set_variogram(LossVariogram(fit, rho, "rho", 0, 0))
    out = loss(
        image,
        location,
        torch.tensor(8.0),
        latlon,
        queue_location_features=q_loc,
        queue_latlon=q_ll,
        queue_image_features=q_img,
    )
    ref = chen_loop(
        image.double().tolist(),
        location.double().tolist(),
        latlon.tolist(),
        8.0,
        beta,
        margin,
        fit,
        rho,
        q_loc.double().tolist(),
        q_ll.tolist(),
        q_img.double().tolist(),
    )
    assert out["contrastive_loss"].item() == pytest.approx(ref, rel=1e-5)
    assert out["hard_negative_frac"] > 0


def test_rho_as_their_grid_rule():
    fit = make_fit(range_m=0.05 * R, shape=1.0, nugget=0.1, psill=0.3)  # range 0.05 rad
    rho = chen_rho_m(fit)
    t = np.arange(0, math.pi, 0.01)
    g = [stable_gamma(x * R, fit) for x in t]
    k = next(k for k in range(len(t) - 1) if (g[k + 1] - g[k]) / 0.01 < 1e-2)
    assert rho == pytest.approx(t[k] * R)


def test_no_fit_is_base_loss_one_warning_never_nan(caplog):
    image, location, latlon = batch(16, 6, seed=4)
    calls = []

    class Counting(LossVariogramFitter):
        def __call__(self, e, ll):
            calls.append(len(e))
            return super().__call__(e, ll)

    fit_fn = Counting("chen2025")  # the pairs all fall in the first 0.001-rad (6.4 km) bin: no fit

    loss = SemivariogramWeightedLoss("chen2025", refit_every=1, min_fit_samples=8, fit_fn=fit_fn)
    base = F.cross_entropy(5.0 * image @ location.T, torch.arange(16))
    with caplog.at_level(logging.WARNING, logger="swclip"):
        for _ in range(3):
            out = loss(image, location, torch.tensor(5.0), latlon)
            loss.optimizer_step()
    assert calls == [16, 32, 48]  # a refit after each of the 3 optimiser steps, the bank one batch fuller each time
    assert loss.variogram is None
    torch.testing.assert_close(out["contrastive_loss"], base)
    assert all(torch.isfinite(v) for v in out.values())
    assert len([r for r in caplog.records if "no usable variogram" in r.message]) == 1


def test_state_dict_round_trip_restores_bank_and_fit():
    image, location, latlon = batch(16, 6, seed=5)
    a = SemivariogramWeightedLoss("swclip", bank_size=20)
    a(image, location, torch.tensor(5.0), latlon)
    a(image, location, torch.tensor(5.0), latlon)
    a.set_variogram(LossVariogram(make_fit(), 1000.0, "practical", 7, 20))
    a.steps = 7
    sd = a.state_dict()
    import io

    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    sd2 = torch.load(buf, weights_only=True)
    b = SemivariogramWeightedLoss("swclip", bank_size=20)
    b.load_state_dict(sd2)
    assert b.steps == 7 and b.bank.count == 20 and b.bank.next == a.bank.next
    torch.testing.assert_close(b.bank.embeddings, a.bank.embeddings)
    oa, ob = a(image, location, torch.tensor(5.0), latlon), b(image, location, torch.tensor(5.0), latlon)
    torch.testing.assert_close(oa["contrastive_loss"], ob["contrastive_loss"])


def smooth_world(n=600, seed=0, scale_rad=0.05, extent_deg=20.0, d=16):
    """Embeddings that change smoothly with place: random Fourier features of the unit vector,
    length scale scale_rad."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-extent_deg / 2, extent_deg / 2, n)
    lon = rng.uniform(-extent_deg / 2, extent_deg / 2, n)
    la, lo = np.radians(lat), np.radians(lon)
    xyz = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], 1)
    w = rng.normal(size=(3, d)) / scale_rad
    z = np.concatenate([np.cos(xyz @ w), np.sin(xyz @ w)], 1) + 0.3 * rng.normal(size=(n, 2 * d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return torch.tensor(z, dtype=torch.float32), torch.tensor(np.stack([lat, lon], 1))


def test_fits_as_each_variant_defines_them():
    emb, ll = smooth_world()
    chen = LossVariogramFitter("chen2025")(emb, ll)
    assert chen is not None and chen.fit.model == "stable" and chen.split_kind == "rho" and chen.fit.nugget >= 0
    assert chen.split_m == pytest.approx(chen_rho_m(chen.fit))
    assert 0 < chen.split_m < math.pi * R
    # the gaussian model reaches 98.2 % of its partial sill at scikit-gstat's (effective) range: the two differ
    practical = LossVariogramFitter("swclip", model="gaussian", range_kind="practical")(emb, ll)
    effective = LossVariogramFitter("swclip", model="gaussian", range_kind="effective")(emb, ll)
    assert practical.fit.range_m == effective.fit.range_m  # one fit, two readings of it
    assert practical.split_m == pytest.approx(practical.fit.practical_range_m())
    assert effective.split_m == pytest.approx(effective.fit.range_m)
    assert practical.split_m < 0.95 * effective.split_m


def test_manifest_record_is_plain_json():
    import json

    loss = SemivariogramWeightedLoss("chen2025", beta=1.0)
    assert loss.record() is None
    loss.set_variogram(LossVariogram(make_fit(), 1500.0, "rho", 300, 4096))
    rec = json.loads(json.dumps(loss.record()))
    assert rec["variant"] == "chen2025" and rec["split_m"] == 1500.0 and rec["step"] == 300 and rec["bank_size"] == 4096
    assert rec["model"] == "stable" and rec["params"]["shape"] == 1.3
    assert LossVariogram.from_dict(rec).gamma_torch(torch.tensor([800.0])).item() == pytest.approx(
        stable_gamma(800.0, make_fit())
    )


@pytest.mark.parametrize("variant", ["swclip", "chen2025"])
@pytest.mark.parametrize("block", [None, 7])
def test_gradients_equal_float64_reference_with_weights_from_the_loop(variant, block, monkeypatch):
    """Loss and gradients against autograd of the plain formulas in float64, the weights from the naive loop.

    The fast path shares one B×B product between the two directions (swclip), reads the transposed
    cross-entropy down the columns, builds the weights in place and evaluates γ in row blocks
    (``block``: 7 elements, i.e. one row per block).
    """
    import swclip.method.semivariogram_loss as svl

    if block is not None:
        monkeypatch.setattr(svl, "CPU_BLOCK_ELEMENTS", block)
    image, location, latlon = batch(14, 5, seed=4)
    fit, split, beta, margin, scale = make_fit(range_m=900.0), 1100.0, 1.5, 0.03, 6.0
    loss = SemivariogramWeightedLoss(variant, beta=beta, margin=margin)
    loss.set_variogram(LossVariogram(fit, split, "practical", 0, 0))
    v, l_ = image.clone().requires_grad_(), location.clone().requires_grad_()
    out = loss(v, l_, torch.tensor(scale), latlon)
    out["contrastive_loss"].backward()

    n, ll, img = len(image), latlon.tolist(), image.double().tolist()
    log_w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i != j:
                h = haversine_loop(ll[i], ll[j])
                r = stable_gamma(h, fit) - (1 - dot(img[i], img[j]))
                if variant == "swclip" and r > margin:
                    log_w[i, j] = -beta * (r - margin) if h <= split else beta * (r - margin)
                elif variant == "chen2025" and h <= split:
                    log_w[i, j] = beta * max(0.0, -r - margin)
    v64, l64 = image.double().requires_grad_(), location.double().requires_grad_()
    labels = torch.arange(n)
    if variant == "swclip":
        ref = (
            F.cross_entropy(scale * v64 @ l64.T + log_w, labels)
            + F.cross_entropy(scale * l64 @ v64.T + log_w.T, labels)
        ) / 2
    else:
        ref = F.cross_entropy(scale * (v64 @ l64.T) * log_w.exp(), labels)
    ref.backward()
    assert out["hard_negative_frac"] > 0 and (variant == "chen2025" or out["false_negative_frac"] > 0)
    assert out["contrastive_loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(v.grad.double(), v64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(l_.grad.double(), l64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["swclip", "chen2025"])
@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_negative_weights_in_place_equal_the_plain_call_bit_for_bit(variant, margin):
    """The loss's in-place path and the page's plain call give the same weights and masks; a NaN γ gives weight 1."""
    g = torch.Generator().manual_seed(5)
    h = 3000.0 * torch.rand(40, 50, generator=g)
    cos_dist = 2.0 * torch.rand(40, 50, generator=g)
    gamma = 0.3 + 0.6 * (h / 1500.0).clamp(max=1.0)
    gamma[(h > 1200) & (h < 1300)] = float("nan")
    plain = negative_weights(variant, h, cos_dist, gamma, 700.0, 1.7, margin)
    h2, c2 = h.clone(), cos_dist.clone()
    fast = negative_weights(variant, h2, c2, gamma, 700.0, 1.7, margin, inplace=True)
    assert fast[0].data_ptr() == c2.data_ptr()  # written into cos_dist
    for a, b in zip(plain, fast):
        assert torch.equal(a, b)
    assert torch.equal(h2, (h <= 700.0).float())  # and h_m became the near mask
    assert (plain[0][(h > 1200) & (h < 1300)] == 0).all() and (plain[0] != 0).any()


def test_symmetric_cross_entropy_equals_torch_both_directions():
    """The fused ½[CE(X, I) + CE(Xᵀ, I)] against torch's cross_entropy: value, gradient, gradcheck in float64."""
    from swclip.method.semivariogram_loss import symmetric_cross_entropy

    g = torch.Generator().manual_seed(6)
    x = (30.0 * torch.randn(11, 11, generator=g, dtype=torch.float64)).requires_grad_()
    labels = torch.arange(11)
    ref = (F.cross_entropy(x, labels) + F.cross_entropy(x.T, labels)) / 2
    (want,) = torch.autograd.grad(ref, x)
    got = symmetric_cross_entropy(x)
    (grad,) = torch.autograd.grad(got, x)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(symmetric_cross_entropy, (x.detach()[:5, :5].clone().requires_grad_(),))
    with pytest.raises(ValueError, match="square"):
        symmetric_cross_entropy(x[:, :5])
