"""The distributed path of the losses, on CPU with the gloo backend and 2 processes.

Each rank encodes its half of a global batch with the same small linear model,
computes its rows of the loss against the gathered batch, and averages its
gradients over ranks as DDP does. The mean of the ranks' losses and the averaged
gradient must equal the single-process loss and gradient over the global batch.

The ranks are started by torchrun in a subprocess (this file is the worker), not
by multiprocessing's spawn from inside pytest: spawn re-imports the parent's
``__main__``, which in a test worker can be whatever script ran last.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swclip.method.losses import ClipLoss, SoftClipLoss  # noqa: E402
from swclip.method.semivariogram_loss import SemivariogramWeightedLoss  # noqa: E402

B_GLOBAL, D_IN, D = 16, 6, 8
NAMES = ["clip", "swclip+nc", "semivariogram", "swclip+nc uneven"]


class ConstantVariogram:
    range_m = 700.0

    def gamma_torch(self, h_m):
        return 0.4 + 0.4 * (h_m / 2000.0).clamp(max=1.0)


def make_loss(name, world_size, rank):
    if name == "clip":
        return ClipLoss(world_size, rank)
    if name.startswith("swclip+nc"):
        return SoftClipLoss(300.0, nc_weight=0.5, world_size=world_size, rank=rank)
    loss = SemivariogramWeightedLoss(beta=1.5, refit_every=0, world_size=world_size, rank=rank)
    loss.set_variogram(ConstantVariogram())
    return loss


def data(name=""):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B_GLOBAL, D_IN, generator=g)
    latlon = torch.stack(
        [
            51.45 + 0.03 * torch.rand(B_GLOBAL, generator=g, dtype=torch.float64),
            -2.6 + 0.03 * torch.rand(B_GLOBAL, generator=g, dtype=torch.float64),
        ],
        1,
    )
    if name.endswith("uneven"):
        # rank 0's rows: 4 pairs 40 m apart (8 rows with neighbours); rank 1's rows: 5 km apart, but for
        # one pair (2 rows with neighbours). A per-rank NC mean would weigh rank 1's pair 4x too much.
        k = torch.arange(B_GLOBAL, dtype=torch.float64)
        near = torch.stack([51.45 + 0.01 * (k // 2) + 0.00036 * (k % 2), -2.6 + 0 * k], 1)
        far = torch.stack([51.45 + 0.045 * k, -2.0 + 0 * k], 1)
        latlon = torch.cat([near[:8], far[8:14], torch.tensor([[52.2, -2.0], [52.20036, -2.0]], dtype=torch.float64)])
    return x, latlon


def loss_and_grad(name, x, latlon, world_size=1, rank=0):
    torch.manual_seed(1)
    w_img, w_loc = torch.nn.Linear(D_IN, D), torch.nn.Linear(D_IN, D)
    feats = F.normalize(w_img(x), dim=1), F.normalize(w_loc(x.flip(1)), dim=1)
    out = make_loss(name, world_size, rank)(*feats, torch.tensor(10.0), latlon)
    total = sum(out.values())
    total.backward()
    return total.detach(), torch.cat([p.grad.flatten() for p in (*w_img.parameters(), *w_loc.parameters())])


def worker(out_path: str) -> None:
    """One torchrun rank: its rows of each loss, then the DDP-style average, written by rank 0."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * B_GLOBAL // world_size, (rank + 1) * B_GLOBAL // world_size)
    results = {}
    for name in NAMES:
        x, latlon = data(name)
        loss, grad = loss_and_grad(name, x[rows], latlon[rows], world_size, rank)
        dist.all_reduce(loss)
        dist.all_reduce(grad)  # DDP averages gradients over ranks
        results[name] = {"loss": loss / world_size, "grad": grad / world_size}
    if rank == 0:
        torch.save(results, out_path)
    dist.barrier()  # leave together: a rank tearing gloo down while the other still works can abort
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_equals_single_process_global_batch(tmp_path):
    out = tmp_path / "results.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out, weights_only=True)
    for name in NAMES:
        x, latlon = data(name)
        loss, grad = loss_and_grad(name, x, latlon)
        torch.testing.assert_close(results[name]["loss"], loss, rtol=1e-5, atol=1e-6, msg=f"{name} loss")
        torch.testing.assert_close(results[name]["grad"], grad, rtol=1e-4, atol=1e-6, msg=f"{name} gradient")


if __name__ == "__main__":
    worker(sys.argv[1])
    # Leave without interpreter teardown: the results are on disk and the process group is destroyed, and
    # torch's gloo teardown can still abort at exit ("terminate called without an active exception", no
    # Python frame; about one loaded run in five on 2 cores). A short pause before destroy_process_group
    # avoids it too, so it is a race inside torch, not in the losses.
    os._exit(0)
