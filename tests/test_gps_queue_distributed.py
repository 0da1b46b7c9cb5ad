"""GeoCLIP's GPS queue under DDP, on CPU with the gloo backend and 2 processes (issue 15).

Each rank feeds its own half of every global batch (its rows, different on each rank) through
``GPSQueueLoss`` for a few steps, with the positive and queue noise on. Afterwards

- the queue's buffers are identical on both ranks and equal a single-process queue fed the
  concatenated (gathered) batches, rank 0's rows first: every rank enqueues the gathered batch;
- at every step the mean of the ranks' losses, and the DDP-averaged gradient, equal the
  single-process loss and gradient on the whole global batch.

The ranks are started by torchrun in a subprocess, with this file as the worker, as in
tests/test_losses_distributed.py.
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

from swclip.method.gps_queue import GPSQueue, GPSQueueLoss  # noqa: E402
from swclip.method.losses import ClipLoss, SoftClipLoss  # noqa: E402
from swclip.method.semivariogram_loss import LossVariogram, SemivariogramWeightedLoss  # noqa: E402
from tests.test_semivariogram_loss import make_fit  # noqa: E402

WORLD, B_GLOBAL, D_IN, D, QUEUE, STEPS = 2, 8, 6, 5, 12, 5  # 40 rows through a 12-row queue: it wraps mid-batch
NAMES = ["clip", "swclip", "semivariogram chen2025"]
BUFFERS = ("latlon", "image", "ptr", "count", "draws")


def make_loss(name, encode_location, world_size=1, rank=0):
    if name == "clip":
        base = ClipLoss(world_size, rank)
    elif name == "swclip":
        base = SoftClipLoss(300.0, world_size=world_size, rank=rank)
    else:
        base = SemivariogramWeightedLoss("chen2025", beta=1.0, refit_every=0, world_size=world_size, rank=rank)
        base.set_variogram(LossVariogram(make_fit(), 1500.0, "rho", 0, 0))
    queue = GPSQueue(QUEUE, embed_dim=D if name.startswith("semivariogram") else 0, seed=7)  # 1 km / 150 m noise
    return GPSQueueLoss(base, queue, encode_location, world_size, rank).train()


def global_batch(step):
    """(images (B_GLOBAL, D_IN), latlon (B_GLOBAL, 2) degrees): a different batch at every step."""
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(B_GLOBAL, D_IN, generator=g)
    latlon = torch.stack(
        [
            53.47 + 0.03 * torch.rand(B_GLOBAL, generator=g, dtype=torch.float64),
            -2.25 + 0.03 * torch.rand(B_GLOBAL, generator=g, dtype=torch.float64),
        ],
        1,
    )
    return x, latlon


def run(name, rows=slice(None), world_size=1, rank=0):
    """STEPS forwards of one loss on ``rows`` of each global batch
    -> (losses (STEPS,), grads (STEPS, P), queue buffers)."""
    torch.manual_seed(1)  # the same weights on every rank, as DDP's broadcast leaves them
    image_net, location_net = torch.nn.Linear(D_IN, D), torch.nn.Linear(2, D)
    params = [*image_net.parameters(), *location_net.parameters()]

    def encode_location(ll):
        return F.normalize(location_net((ll - torch.tensor([53.48, -2.24], dtype=torch.float64)).float() * 30), dim=1)

    loss_fn = make_loss(name, encode_location, world_size, rank)
    losses, grads = [], []
    for step in range(STEPS):
        x, latlon = global_batch(step)
        x, latlon = x[rows], latlon[rows]
        out = loss_fn(F.normalize(image_net(x), dim=1), encode_location(latlon), torch.tensor(10.0), latlon)
        total = sum(v for k, v in out.items() if k != "gps_queue_fill")
        for p in params:
            p.grad = None
        total.backward()
        losses.append(total.detach())
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    return torch.stack(losses), torch.stack(grads), {k: getattr(loss_fn.queue, k).clone() for k in BUFFERS}


def worker(out_dir: str) -> None:
    """One torchrun rank: its rows of every batch; the DDP-style mean loss and gradient; its own queue."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * B_GLOBAL // world_size, (rank + 1) * B_GLOBAL // world_size)
    results = {}
    for name in NAMES:
        losses, grads, queue = run(name, rows, world_size, rank)
        dist.all_reduce(losses)
        dist.all_reduce(grads)  # DDP averages gradients over ranks
        results[name] = {"loss": losses / world_size, "grad": grads / world_size, "queue": queue}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()  # leave together: a rank tearing gloo down while the other still works can abort
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_keep_one_queue_equal_to_a_single_process_on_the_gathered_batches(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(WORLD),
            __file__,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name in NAMES:
        losses, grads, queue = run(name)  # one process, the whole global batch: the gathered rows in rank order
        assert int(queue["count"]) == QUEUE and int(queue["draws"]) == STEPS
        # the single-process queue holds the last QUEUE gathered rows (40 pushed: rows 28..39 in ring order)
        last = torch.cat([global_batch(s)[1] for s in range(STEPS)])[-QUEUE:]
        assert torch.equal(queue["latlon"].roll(-int(queue["ptr"]), 0), last), name
        for r, res in enumerate(ranks):
            for k in BUFFERS:  # coordinates, pointer and counters bit for bit; image rows to float32 round-off
                got, want = res[name]["queue"][k], queue[k]
                if k == "image":
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=f"{name} rank {r} {k}")
                else:
                    assert torch.equal(got, want), f"{name}: rank {r}'s queue {k} differs from the single process's"
        assert torch.equal(ranks[0][name]["queue"]["latlon"], ranks[1][name]["queue"]["latlon"])
        torch.testing.assert_close(ranks[0][name]["loss"], losses, rtol=1e-5, atol=1e-6, msg=f"{name} loss")
        torch.testing.assert_close(ranks[0][name]["grad"], grads, rtol=1e-4, atol=1e-6, msg=f"{name} gradient")


if __name__ == "__main__":
    worker(sys.argv[1])
    os._exit(0)  # skip interpreter teardown, where torch's gloo can abort: see tests/test_losses_distributed.py
