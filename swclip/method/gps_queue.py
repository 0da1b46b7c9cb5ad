"""GeoCLIP's GPS queue: recent training coordinates as extra negatives for image → GPS.

    columns of the image → location logits = [gathered batch (W·B) ; queue (n ≤ Q)]

Each training forward encodes the queue's coordinates, jittered by Gaussian
noise of ``noise_m`` (GeoCLIP and Chen et al.: 1 km), with the model's own
location tower, so the queue's negatives carry gradients into the tower, as in
GeoCLIP. Positives are re-encoded from coordinates jittered by
``positive_noise_m`` (150 m) when that is > 0. As in their code the noise is
metres / 111,320 degrees on latitude and on longitude alike. Then the gathered
batch's clean coordinates (and, for the semivariogram loss, its image
embeddings) are pushed, in GeoCLIP's ring order: under DDP every rank pushes the
same gathered batch, so the queues stay identical.

Differences from GeoCLIP's code, and why:
- The queue starts empty and only filled rows are used; GeoCLIP starts from
  4,096 random points within 1° of (0°, 0°) and uses them from the first step.
- The noise is drawn from a generator seeded by (seed, forward count), not the
  global RNG: every rank draws the same queue noise and the same noise for the
  gathered batch (each rank takes its own rows), so DDP equals one process on
  the global batch, and a resumed run draws what the uninterrupted run drew.

Everything the queue holds is a buffer: ``state_dict()`` carries it. The pointer, fill count and
forward count are also kept as Python ints, which a step reads instead of the buffers: reading a CUDA
buffer makes the host wait for the GPU. Loading a state dict refreshes them (one read, outside any step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

M_PER_DEG = 111_320.0  # GeoCLIP's and Chen et al.'s metres per degree for the noise


def _gather(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """(B, ...) on each rank -> (W·B, ...), no gradient."""
    if world_size == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def jitter_latlon(latlon: torch.Tensor, noise_m: float, generator: torch.Generator) -> torch.Tensor:
    """(N, 2) degrees + N(0, (noise_m / 111,320)²) on lat and lon; lat clamped to ±90, lon wrapped to [-180, 180)."""
    noise = torch.randn(latlon.shape, generator=generator, device=latlon.device, dtype=torch.float64)
    out = latlon.to(torch.float64) + noise * (noise_m / M_PER_DEG)
    return torch.stack([out[:, 0].clamp(-90.0, 90.0), (out[:, 1] + 180.0) % 360.0 - 180.0], 1)


class GPSQueue(nn.Module):
    """Ring buffer of ``size`` coordinates (and, with ``embed_dim`` > 0, image embeddings aligned with them).

    Buffers: latlon (Q, 2) float64, image (Q, D) float32, ptr, count, draws (forwards seen); the last three
    mirrored on the host in ``n_ptr``, ``n_filled``, ``n_draws``.
    """

    def __init__(
        self, size: int, embed_dim: int = 0, noise_m: float = 1000.0, positive_noise_m: float = 150.0, seed: int = 0
    ):
        super().__init__()
        if size < 1:
            raise ValueError(f"gps_queue size must be >= 1, got {size}")
        if noise_m < 0 or positive_noise_m < 0:
            raise ValueError(f"queue noise must be >= 0 metres, got {noise_m} and {positive_noise_m}")
        self.size, self.noise_m, self.positive_noise_m, self.seed = (
            int(size),
            float(noise_m),
            float(positive_noise_m),
            int(seed),
        )
        self.register_buffer("latlon", torch.zeros(size, 2, dtype=torch.float64))
        self.register_buffer("image", torch.zeros(size, int(embed_dim)))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.n_ptr = self.n_filled = self.n_draws = 0

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.n_ptr, self.n_filled, self.n_draws = int(self.ptr), int(self.count), int(self.draws)

    def contents(self):
        """(latlon (n, 2), image (n, D) or None) of the filled rows, n ≤ Q."""
        n = self.n_filled
        return self.latlon[:n], (self.image[:n] if self.image.shape[1] else None)

    def generator(self) -> torch.Generator:
        """This forward's noise generator: seeded by (seed, draws), the same on every rank."""
        g = torch.Generator(device=self.latlon.device)
        g.manual_seed(self.seed * 1_000_003 + self.n_draws)
        return g

    def count_draw(self) -> None:
        """One training forward drew its noise: the next one seeds its generator one further."""
        self.n_draws += 1
        self.draws.fill_(self.n_draws)

    @torch.no_grad()
    def push(self, latlon: torch.Tensor, image: torch.Tensor | None = None) -> None:
        """Enqueue (N, 2) coordinates (and (N, D) embeddings) at the pointer,
        overwriting the oldest (GeoCLIP's order)."""
        n = latlon.shape[0]
        if n >= self.size:  # GeoCLIP keeps the batch's last Q rows and resets the pointer
            latlon, image, n = latlon[-self.size :], None if image is None else image[-self.size :], self.size
            self.n_ptr = 0
        idx = (self.n_ptr + torch.arange(n, device=self.latlon.device)) % self.size
        self.latlon[idx] = latlon.to(self.latlon)
        if self.image.shape[1] and image is not None:
            self.image[idx] = image.detach().to(self.image)
        self.n_ptr, self.n_filled = (self.n_ptr + n) % self.size, min(self.n_filled + n, self.size)
        self.ptr.fill_(self.n_ptr)
        self.count.fill_(self.n_filled)


class GPSQueueLoss(nn.Module):
    """A contrastive loss with GeoCLIP's GPS queue as extra image → location negatives.

    base: a loss taking ``queue_location_features`` (n, D), ``queue_latlon`` (n, 2) and
    ``queue_image_features`` (n, D) | None keyword arguments. encode_location: the model's
    ``encode_location`` ((N, 2) degrees -> (N, D) L2-normalised, with gradients).
    forward takes the model's output dict and returns the base loss's terms plus "gps_queue_fill".
    """

    def __init__(self, base: nn.Module, queue: GPSQueue, encode_location: Callable, world_size: int = 1, rank: int = 0):
        super().__init__()
        self.base, self.queue, self.world_size, self.rank = base, queue, world_size, rank
        self.encode_location = encode_location  # a bound method of the model: not a submodule, not in state_dict

    def forward(self, image_features, location_features, logit_scale, latlon, **kw):
        q_latlon, q_image = self.queue.contents()
        b = image_features.shape[0]
        if self.training:
            g = self.queue.generator()
            if self.queue.positive_noise_m > 0:  # noise for the gathered batch; this rank's rows
                all_latlon = _gather(latlon.to(torch.float64), self.world_size)
                noisy = jitter_latlon(all_latlon, self.queue.positive_noise_m, g)[self.rank * b : (self.rank + 1) * b]
                location_features = self.encode_location(noisy).to(location_features.dtype)
            q_input = jitter_latlon(q_latlon, self.queue.noise_m, g) if len(q_latlon) else q_latlon
        else:
            q_input = q_latlon
        q_features = self.encode_location(q_input) if len(q_latlon) else None
        out = self.base(
            image_features,
            location_features,
            logit_scale,
            latlon,
            queue_location_features=q_features,
            queue_latlon=q_latlon if len(q_latlon) else None,
            queue_image_features=q_image if (q_image is not None and len(q_latlon)) else None,
            **kw,
        )
        if self.training:
            self.queue.count_draw()
            all_latlon = _gather(latlon.detach().to(torch.float64), self.world_size)
            all_image = _gather(image_features.detach().float(), self.world_size) if self.queue.image.shape[1] else None
            self.queue.push(all_latlon, all_image)
        out["gps_queue_fill"] = self.queue.count.float() / self.queue.size
        return out

    @property
    def sigma_m(self) -> float:
        """The base loss's bandwidth (SoftClipLoss), so the trainer's σ schedule reaches it through the queue."""
        return self.base.sigma_m

    @sigma_m.setter
    def sigma_m(self, value: float) -> None:
        self.base.sigma_m = value

    def optimizer_step(self) -> None:
        """Pass the trainer's optimiser-step signal on to the base loss (the semivariogram loss refits on it)."""
        step = getattr(self.base, "optimizer_step", None)
        if step is not None:
            step()

    def record(self):
        """The base loss's manifest record (the semivariogram loss's variogram), or None."""
        record = getattr(self.base, "record", None)
        return None if record is None else record()
