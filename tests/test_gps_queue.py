import collections
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.method.gps_queue import M_PER_DEG, GPSQueue, GPSQueueLoss, jitter_latlon
from swclip.method.semivariogram_loss import LossVariogram, SemivariogramWeightedLoss
from tests.test_semivariogram_loss import batch, chen_loop, haversine_loop, make_fit


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 9), sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8))
def test_queue_keeps_the_most_recent_rows_in_geoclip_order(size, sizes):
    q = GPSQueue(size)
    ref = collections.deque(maxlen=size)
    k = 0
    for n in sizes:
        ll = torch.stack([torch.arange(k, k + n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)], 1)
        k += n
        q.push(ll)
        ref.extend(ll[:, 0].tolist())
    got, _ = q.contents()
    assert sorted(got[:, 0].tolist()) == sorted(ref)


class Tower(torch.nn.Module):
    def __init__(self, d=5):
        super().__init__()
        self.lin = torch.nn.Linear(2, d)

    def encode_location(self, ll, city=None, check=False):
        return F.normalize(self.lin(ll.float()), dim=-1)


def test_chen2025_with_queue_equals_loop():
    torch.manual_seed(0)
    tower = Tower()
    image, _, latlon = batch(8, 5, seed=3)
    base = SemivariogramWeightedLoss("chen2025", beta=1.0)
    base.set_variogram(LossVariogram(make_fit(), 1500.0, "rho", 0, 0))
    q = GPSQueue(6, embed_dim=5, noise_m=0.0, positive_noise_m=0.0)
    loss = GPSQueueLoss(base, q, tower.encode_location)
    prev_img, _, prev_ll = batch(8, 5, seed=4)
    loss(prev_img, tower.encode_location(prev_ll), torch.tensor(7.0), prev_ll)  # fills the queue: last 6 rows
    location = tower.encode_location(latlon)
    out = loss(image, location, torch.tensor(7.0), latlon)
    q_ll, q_img = prev_ll[2:], prev_img[2:]
    ref = chen_loop(
        image.double().tolist(),
        location.double().tolist(),
        latlon.tolist(),
        7.0,
        1.0,
        0.0,
        make_fit(),
        1500.0,
        tower.encode_location(q_ll).double().tolist(),
        q_ll.tolist(),
        q_img.double().tolist(),
    )
    assert out["contrastive_loss"].item() == pytest.approx(ref, rel=1e-5)


def test_noise_is_metres_over_111320_degrees():
    g = torch.Generator().manual_seed(0)
    ll = torch.zeros(200_000, 2, dtype=torch.float64) + torch.tensor([10.0, 20.0], dtype=torch.float64)
    d = jitter_latlon(ll, 150.0, g) - ll
    assert d.std(0).tolist() == pytest.approx([150 / M_PER_DEG] * 2, rel=0.01)


def test_resume_from_state_dict_is_exact():
    torch.manual_seed(0)
    tower = Tower()

    def make():
        return GPSQueueLoss(
            SemivariogramWeightedLoss("chen2025"), GPSQueue(16, embed_dim=5, seed=3), tower.encode_location
        )

    a = make()
    batches = [batch(8, 5, seed=s) for s in range(6)]
    for img, _, ll in batches[:3]:
        a(img, tower.encode_location(ll), torch.tensor(5.0), ll)
    b = make()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for img, _, ll in batches[3:]:
        oa = a(img, tower.encode_location(ll), torch.tensor(5.0), ll)["contrastive_loss"]
        ob = b(img, tower.encode_location(ll), torch.tensor(5.0), ll)["contrastive_loss"]
        assert oa.item() == ob.item()
    # and the noise is really drawn from the (seed, draws) stream: another seed, same state, another loss
    c = GPSQueueLoss(SemivariogramWeightedLoss("chen2025"), GPSQueue(16, embed_dim=5, seed=4), tower.encode_location)
    c.load_state_dict(copy.deepcopy(a.state_dict()))
    img, _, ll = batches[0]
    oa = a(img, tower.encode_location(ll), torch.tensor(5.0), ll)["contrastive_loss"]
    oc = c(img, tower.encode_location(ll), torch.tensor(5.0), ll)["contrastive_loss"]
    assert oa.item() != oc.item()


def test_sigma_schedule_reaches_the_base_loss_through_the_queue():
    from swclip.method.losses import SoftClipLoss

    loss = GPSQueueLoss(SoftClipLoss(300.0), GPSQueue(8), Tower().encode_location)
    loss.sigma_m = 120.0
    assert loss.base.sigma_m == 120.0 and loss.sigma_m == 120.0


def soft_ce_loop(rows_a, cols_b, targets, scale):
    total = 0.0
    for i, a in enumerate(rows_a):
        s = [scale * sum(x * y for x, y in zip(a, b)) for b in cols_b]
        m = max(s)
        lse = m + math.log(sum(math.exp(v - m) for v in s))
        total += -sum(t * (v - lse) for t, v in zip(targets[i], s))
    return total / len(rows_a)


def kernel_targets_loop(latlon, cols, sigma_m):
    out = []
    for a in latlon:
        k = [math.exp(-(haversine_loop(a, b) ** 2) / (2 * sigma_m**2)) for b in cols]
        out.append([v / sum(k) for v in k])
    return out


@pytest.mark.parametrize("name", ["clip", "swclip"])
def test_clip_and_soft_clip_with_queue_equal_loops(name):
    from swclip.method.losses import ClipLoss, SoftClipLoss

    image, location, latlon = batch(9, 5, seed=7)
    _, q_loc, q_ll = batch(6, 5, seed=8)
    sigma = 300.0
    base = ClipLoss() if name == "clip" else SoftClipLoss(sigma)
    got = base(image, location, torch.tensor(6.0), latlon, queue_location_features=q_loc, queue_latlon=q_ll)[
        "contrastive_loss"
    ]
    img, loc, ll = image.double().tolist(), location.double().tolist(), latlon.tolist()
    cols, cols_ll = loc + q_loc.double().tolist(), ll + q_ll.tolist()
    if name == "clip":
        t_img = [[float(j == i) for j in range(len(cols))] for i in range(9)]
        t_loc = [[float(j == i) for j in range(9)] for i in range(9)]
    else:
        t_img, t_loc = kernel_targets_loop(ll, cols_ll, sigma), kernel_targets_loop(ll, ll, sigma)
    ref = (soft_ce_loop(img, cols, t_img, 6.0) + soft_ce_loop(loc, img, t_loc, 6.0)) / 2
    assert got.item() == pytest.approx(ref, rel=1e-5)
