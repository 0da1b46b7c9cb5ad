"""The distributed path of the losses, on CPU with the gloo backend and 2 processes.

Each rank encodes its half of a global batch with the same small linear model,
computes its rows of the loss against the gathered batch, and averages its
gradients over ranks as DDP does. The mean of the ranks' losses and the averaged
gradient must equal the single-process loss and gradient over the global batch.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from swclip.losses import ClipLoss, SemivariogramWeightedLoss, SoftClipLoss

B_GLOBAL, D_IN, D = 16, 6, 8


class ConstantVariogram:
    range_m = 700.0

    def gamma_torch(self, h_m):
        return 0.4 + 0.4 * (h_m / 2000.0).clamp(max=1.0)


def make_loss(name, world_size, rank):
    if name == "clip":
        return ClipLoss(world_size, rank)
    if name == "swclip+nc":
        return SoftClipLoss(300.0, nc_weight=0.5, world_size=world_size, rank=rank)
    loss = SemivariogramWeightedLoss(beta=1.5, refit_every=0, world_size=world_size, rank=rank)
    loss.set_variogram(ConstantVariogram())
    return loss


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B_GLOBAL, D_IN, generator=g)
    latlon = torch.stack([51.45 + 0.03 * torch.rand(B_GLOBAL, generator=g, dtype=torch.float64),
                          -2.6 + 0.03 * torch.rand(B_GLOBAL, generator=g, dtype=torch.float64)], 1)
    return x, latlon


def loss_and_grad(name, x, latlon, world_size=1, rank=0):
    torch.manual_seed(1)
    w_img, w_loc = torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)
    feats = F.normalize(w_img(x), dim=1), F.normalize(w_loc(x.flip(1)), dim=1)
    out = make_loss(name, world_size, rank)(*feats, torch.tensor(10.0), latlon)
    total = sum(out.values())
    total.backward()
    return total.detach(), torch.cat([p.grad.flatten() for p in (*w_img.parameters(), *w_loc.parameters())])


def worker(rank, world_size, port, names, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    x, latlon = data()
    rows = slice(rank * B_GLOBAL // world_size, (rank + 1) * B_GLOBAL // world_size)
    for name in names:
        loss, grad = loss_and_grad(name, x[rows], latlon[rows], world_size, rank)
        dist.all_reduce(loss)
        dist.all_reduce(grad)  # DDP averages gradients over ranks
        if rank == 0:
            results[name] = (loss / world_size, grad / world_size)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_equals_single_process_global_batch():
    names = ["clip", "swclip+nc", "semivariogram"]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(2, free_port(), names, results), nprocs=2, join=True)
        results = dict(results)
    x, latlon = data()
    for name in names:
        loss, grad = loss_and_grad(name, x, latlon)
        dist_loss, dist_grad = results[name]
        torch.testing.assert_close(dist_loss, loss, rtol=1e-5, atol=1e-6, msg=f"{name} loss")
        torch.testing.assert_close(dist_grad, grad, rtol=1e-4, atol=1e-6, msg=f"{name} gradient")
