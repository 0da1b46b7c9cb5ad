"""Contrastive losses for image ↔ location training.

Every loss takes the model's output dict as keyword arguments
(``loss(**model(images, latlon))``) and returns a dict of named terms; training
sums the terms whose names end in ``_loss`` and logs every term (the others, such
as ``false_negative_frac`` or ``gps_queue_fill``, are statistics without gradient).
``logit_scale`` is the multiplier exp(t), already exponentiated, as open_clip
hands it to its ClipLoss.

    S = logit_scale · V Lᵀ                     (B, B)   V, L: L2-normalised (B, D)
    ClipLoss:        ½ [CE(S, I) + CE(Sᵀ, I)]
    SoftClipLoss:    ½ [CE(S, Q) + CE(Sᵀ, Q)]  Q = soft_targets(latlon, σ)
    + nc_weight ·    KL(Q⁰ ‖ softmax_{j≠i}(v_i·v_j / τ_nc))
    SemivariogramWeightedLoss: CLIP with the negatives' terms in the denominator
                     multiplied by w_ij = exp(∓β r_ij), r_ij = γ(h_ij) − (1 − v_i·v_j)

Distributed (``world_size > 1``): features and locations are all-gathered
(features with gradients), each rank computes the loss of its own B rows
against the global batch, and DDP's gradient averaging makes the result equal
to the single-process loss over the global batch. Local batches must be equal
in size on every rank (use ``drop_last``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from swclip.kernels import check_kernel
from swclip.method.soft_labels import matched_smoothing_targets, shuffled_targets, soft_targets


def _all_gather_with_grad(x):
    """(B, D) on each rank -> (W·B, D), gradients flowing back to every rank's slice (summed).

    The autograd all-gather open_clip's ``gather_with_grad`` uses. It warns that it is deprecated in
    favour of the functional collectives; the warning is silenced until the pinned torch drops it.
    tests/test_losses_distributed.py holds every loss's two-rank gradient to the single-process one.
    """

    import torch.distributed.nn.functional as dist_nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(dist_nn.all_gather(x), 0)


def gather_batch(image_features, location_features, latlon, world_size: int):
    """All-gather features (with gradients) and locations (without) across ranks.

    Returns (all_image (W·B, D), all_location (W·B, D), all_latlon (W·B, 2)).
    With ``world_size == 1`` the inputs come back unchanged.
    """
    if world_size == 1:
        return image_features, location_features, latlon
    import torch.distributed as dist

    all_image = _all_gather_with_grad(image_features)
    all_location = _all_gather_with_grad(location_features)
    all_latlon = None
    if latlon is not None:
        parts = [torch.empty_like(latlon) for _ in range(world_size)]
        dist.all_gather(parts, latlon.contiguous())
        all_latlon = torch.cat(parts, 0)
    return all_image, all_location, all_latlon


def similarity(a, b, scale=None, out=None):
    """(N, D) · (M, D)ᵀ -> (N, M) in at least float32, also under autocast; optionally times ``scale``.

    Every B×B product of the losses goes through here. Under bf16 autocast a plain
    ``a @ b.T`` is a bf16 GEMM: at a logit scale near 100 its spacing is 0.25–0.5
    logits, the size of the near-neighbour differences the soft labels encode. So
    autocast is switched off for the product and the inputs are upcast (float64
    inputs stay float64). ``scale`` (a scalar, e.g. the logit scale) multiplies the
    (N, D) side, which is cheaper than scaling the (N, M) result. ``out``: an (N, M) buffer
    of that dtype to write into (no autograd: for a custom Function's forward).
    """
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    with torch.autocast(a.device.type, enabled=False):
        a = a.to(dtype)
        if scale is not None:
            a = scale.to(dtype) * a if torch.is_tensor(scale) else scale * a
        return torch.mm(a, b.to(dtype).T, out=out)


def _check_inputs(image_features, location_features, latlon=None):
    if image_features.ndim != 2 or image_features.shape != location_features.shape:
        raise ValueError(
            "image_features and location_features must both be (B, D); got "
            f"{tuple(image_features.shape)} and {tuple(location_features.shape)}"
        )
    if latlon is not None and tuple(latlon.shape) != (image_features.shape[0], 2):
        raise ValueError(f"latlon must be (B, 2) = ({image_features.shape[0]}, 2), got {tuple(latlon.shape)}")


def soft_cross_entropy(logits, targets):
    """Mean over rows of −Σ_j q_ij log softmax(logits)_ij. logits, targets: (B, M), rows of targets sum to 1.

    torch's cross_entropy with probability targets, in float32 (bf16 logits
    are upcast): it is faster on CPU than a hand-written form.
    """
    return F.cross_entropy(logits.float(), targets)  # a transposed (B, B) view is fine: no copy needed


def _self_columns(b: int, rank: int, device):
    """Column of each local row's own sample in the gathered (B, W·B) matrices. -> (B,) long."""
    return torch.arange(b, device=device) + rank * b


def _global_sum(x, world_size: int):
    """Sum of a no-grad tensor over ranks (x itself when single-process). Stays on the device: no host sync."""
    if world_size == 1:
        return x
    import torch.distributed as dist

    x = x.detach().clone()
    dist.all_reduce(x)
    return x


class ClipLoss(nn.Module):
    """One-hot symmetric InfoNCE, as open_clip's ClipLoss (local_loss, gather_with_grad), logits in float32."""

    def __init__(self, world_size: int = 1, rank: int = 0):
        super().__init__()
        self.world_size, self.rank = world_size, rank

    def forward(self, image_features, location_features, logit_scale, latlon=None, queue_location_features=None, **_):
        """image_features, location_features: (B, D); logit_scale: scalar; queue_location_features: (n, D) extra
        image → location negatives (GeoCLIP's GPS queue, swclip.method.gps_queue). -> {"contrastive_loss"}."""
        _check_inputs(image_features, location_features)
        all_image, all_location, _ = gather_batch(image_features, location_features, None, self.world_size)
        if queue_location_features is not None:
            all_location = torch.cat([all_location, queue_location_features])  # (W·B + n, D)
        logits_per_image = similarity(image_features, all_location, logit_scale)  # (B, W·B [+ n]) float32
        logits_per_location = similarity(location_features, all_image, logit_scale)  # (B, W·B)
        labels = _self_columns(image_features.shape[0], self.rank, image_features.device)
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_location, labels)) / 2
        return {"contrastive_loss": loss}


# Logit given to a row's own column in the NC softmax over j ≠ i: exp() of it is exactly 0 in
# float32, and unlike -inf it keeps 0 · logit = 0 inside cross_entropy (no NaN).
_EXCLUDED_LOGIT = -1e4


def _plus_transpose(x, block: int = 128):
    """x + xᵀ for a square (N, N) x, as a new tensor.

    On CPU the plain ``x + x.T`` reads xᵀ with a stride of N and is as slow as a (4096, 4096) × (4096, 512)
    product; adding the transpose in column blocks of ``block`` that stay in cache is about twice as fast
    (B = 4096, 2 cores). Elsewhere the plain sum.
    """
    if x.device.type != "cpu":
        return x + x.T
    out = x.clone()
    for j in range(0, x.shape[0], block):
        out[:, j : j + block] += x[j : j + block].T
    return out


def _row_dot(x, y):
    """Σ_j x_ij y_ij for (B, M) x and y -> (B,), without a (B, M) product temporary."""
    return torch.bmm(x.unsqueeze(1), y.unsqueeze(2)).view(-1)


class _MassWeightedNeighbourKL(torch.autograd.Function):
    """Per row i: m_i · KL(Q⁰_i ‖ p_i), p_i = softmax over j ≠ own of s·a_i·b_j, m_i = Σ_j q_ij (own column 0).

        m_i KL_i = Σ_j q_ij log q_ij − m_i log m_i − Σ_j q_ij log p_ij
        −Σ_j q_ij log p_ij = m_i lse_i − Σ_j q_ij logit_ij

    Fused so that the forward needs one (B, M) buffer: it holds log q (for the constant part), then the
    logits, then the softmax, which the backward overwrites with dG = g_i (m_i p_ij − q_ij) before one
    product per input (one in all when the rows are the columns, dV = s·(dG + dGᵀ) V). torch's
    ``cross_entropy`` with probability targets keeps a log-softmax and a product with the targets, and
    as many again backwards; on CPU every fresh (B, M) buffer also costs its page faults. The reference
    it must equal is the plain-loop KL in tests/test_losses.py.
    """

    @staticmethod
    def forward(ctx, a, b, q_off, scale: float, rows, cols):
        """a: (B, D), b: (M, D), q_off: (B, M) targets with each row's own column (rows, cols) zeroed.

        -> (B,) m_i · KL_i in float32 (float64 for float64 inputs).
        """
        with torch.autocast(a.device.type, enabled=False):
            dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
            q = q_off.to(dtype)
            m = q.sum(1)  # (B,)
            buf = torch.empty(q.shape, dtype=dtype, device=q.device)  # (B, M)
            # zeros clamped to the smallest normal float (0 · log(tiny) = 0): log(0) = −inf is a slow path
            q_log_q = _row_dot(q, torch.clamp(q, min=torch.finfo(dtype).tiny, out=buf).log_())  # (B,)
            logits = similarity(a, b, scale, out=buf)  # (B, M), the same buffer
            logits[rows, cols] = _EXCLUDED_LOGIT
            cross = _row_dot(q, logits)  # (B,) Σ_j q_ij logit_ij; the own column is 0 · (−1e4)
            top = logits.amax(1, keepdim=True)  # (B, 1)
            p = logits.sub_(top).exp_()  # exp(logit − max), in place
            total = p.sum(1, keepdim=True)
            p.div_(total)  # softmax over j ≠ own (the own column's exp is exactly 0)
            lse = (top + total.log()).view(-1)  # (B,)
        ctx.save_for_backward(a, b, q, m, p)
        ctx.scale, ctx.same_features, ctx.spent = scale, a is b, False  # a is b: one process, own = diagonal
        return q_log_q - torch.special.xlogy(m, m) + m * lse - cross

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if ctx.spent:  # the softmax buffer became the gradient: a second pass would read garbage
            raise RuntimeError("the neighbourhood-consistency term can be back-propagated once (no retain_graph)")
        ctx.spent = True
        a, b, q, m, p = ctx.saved_tensors
        g = grad.to(p.dtype)  # (B,)
        d_logits = p.mul_((g * m).unsqueeze(1)).addcmul_(q, g.unsqueeze(1), value=-1.0)  # (B, M) in place; own: 0
        with torch.autocast(a.device.type, enabled=False):  # the scale goes on the (·, D) products: cheaper
            if ctx.same_features:
                return (_plus_transpose(d_logits) @ a.to(p.dtype)).mul_(ctx.scale).to(a.dtype), *[None] * 5
            grad_a = (d_logits @ b.to(p.dtype)).mul_(ctx.scale).to(a.dtype) if ctx.needs_input_grad[0] else None
            grad_b = (d_logits.T @ a.to(p.dtype)).mul_(ctx.scale).to(b.dtype) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None, None, None, None


class NeighbourhoodConsistencyLoss(nn.Module):
    """Mass-weighted KL(Q⁰ ‖ softmax_{j≠i}(v_i·v_j / τ)) over the rows of the global batch.

    Q⁰ is the soft-target matrix with each row's own column removed and the row
    renormalised; m_i = Σ_{j≠i} q_ij is the neighbour mass the row had before that
    renormalisation (0 for a sample with no neighbour within the kernel's reach;
    always 0 for one-hot). The term is the mass-weighted mean

        NC = Σ_i m_i KL_i / Σ_i m_i          (0 when no row has mass)

    so a row whose mass is negligible (say e⁻⁵⁰, a nearest neighbour ~13σ away)
    counts in proportion to that mass instead of as much as a row with real
    neighbours. The sums run over the global batch: under DDP the denominator is
    all-reduced (no gradient flows through it, it depends only on locations), and
    each rank returns W · Σ_local m_i KL_i / Σ_global m_i, so DDP's gradient
    averaging reproduces the single-process term even when ranks hold different
    numbers of rows with neighbours. Everything stays on the device (no host sync).
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, image_features, all_image_features, targets, rank: int = 0, world_size: int = 1):
        """image_features: (B, D) this rank's rows; all_image_features: (M, D); targets: (B, M) rows summing to 1.

        -> scalar (see the class docstring for the weighting).
        """
        b = image_features.shape[0]
        rows = torch.arange(b, device=targets.device)
        cols = _self_columns(b, rank, targets.device)
        with torch.no_grad():
            q_off = targets.to(torch.promote_types(targets.dtype, torch.float32)).clone()  # (B, M)
            q_off[rows, cols] = 0.0  # m_i = Σ_j q_off_ij is then exact also when tiny (no 1 − q_ii cancellation)
            total_mass = _global_sum(q_off.sum(), world_size)
        weighted_kl = _MassWeightedNeighbourKL.apply(
            image_features, all_image_features, q_off, 1.0 / self.temperature, rows, cols
        ).sum()  # Σ_i m_i KL_i
        # no row with mass: the sum is 0, and so is the term (dividing by 1 keeps its gradient finite and 0)
        return world_size * weighted_kl / torch.where(total_mass > 0, total_mass, torch.ones_like(total_mass))


TARGETS = ("kernel", "uniform", "shuffled")  # SoftClipLoss's target matrices: SW-CLIP's, and two controls


class SoftClipLoss(nn.Module):
    """SW-CLIP: symmetric soft cross-entropy against geodesic-kernel targets.

    sigma_m: kernel bandwidth in metres (0 gives one-hot and equals ClipLoss
    for distinct locations). kernel: "gaussian", "exponential" or "onehot".
    nc_weight (λ) > 0 adds the "nc_loss" term with temperature nc_temperature,
    sharing the same target matrix. targets (TARGETS): "kernel", SW-CLIP's own; the controls
    "uniform" (``matched_smoothing_targets``: each row's off-diagonal mass at σ, spread uniformly) and
    "shuffled" (``shuffled_targets``: the kernel on a fresh random permutation of the batch's locations
    every step, drawn from a generator seeded with ``seed``, the same on every rank).
    """

    def __init__(
        self,
        sigma_m: float,
        kernel: str = "gaussian",
        nc_weight: float = 0.0,
        nc_temperature: float = 0.1,
        world_size: int = 1,
        rank: int = 0,
        targets: str = "kernel",
        seed: int = 0,
    ):
        super().__init__()
        check_kernel(kernel, sigma_m)
        if nc_weight < 0:
            raise ValueError(f"nc_weight must be >= 0, got {nc_weight}")
        if targets not in TARGETS:
            raise ValueError(f"unknown targets {targets!r}; choose one of {TARGETS}")
        self.sigma_m, self.kernel, self.nc_weight = float(sigma_m), kernel, float(nc_weight)
        self.world_size, self.rank, self.targets = world_size, rank, targets
        self.generator = torch.Generator().manual_seed(int(seed)) if targets == "shuffled" else None
        self.nc = NeighbourhoodConsistencyLoss(nc_temperature)

    def target_matrix(self, latlon, all_latlon):
        """(B, 2) this rank's locations, (W·B, 2) the global batch's -> (B, W·B) targets of ``self.targets``."""
        if self.targets == "shuffled":
            b = latlon.shape[0]
            perm = torch.randperm(all_latlon.shape[0], generator=self.generator).to(all_latlon.device)  # (W·B,)
            own = slice(self.rank * b, (self.rank + 1) * b)
            return shuffled_targets(all_latlon, perm, self.sigma_m, self.kernel, rows=own)
        targets = soft_targets(latlon, self.sigma_m, self.kernel, latlon_cols=all_latlon, check=False)
        if self.targets == "uniform":
            targets = matched_smoothing_targets(targets, _self_columns(latlon.shape[0], self.rank, latlon.device))
        return targets

    def forward(
        self,
        image_features,
        location_features,
        logit_scale,
        latlon,
        queue_location_features=None,
        queue_latlon=None,
        **_,
    ):
        """image_features, location_features: (B, D); logit_scale: scalar; latlon: (B, 2) degrees;
        queue_location_features (n, D) + queue_latlon (n, 2): GeoCLIP's GPS queue as extra image → location
        columns, with targets from the same kernel (those rows renormalised over batch and queue).

        -> {"contrastive_loss"[, "nc_loss"]}
        """
        _check_inputs(image_features, location_features, latlon)
        all_image, all_location, all_latlon = gather_batch(image_features, location_features, latlon, self.world_size)
        queued = queue_location_features is not None
        if queued and self.targets != "kernel":
            raise ValueError(f"targets {self.targets!r} (a control) takes no GPS queue")
        with torch.no_grad():
            targets = self.target_matrix(latlon, all_latlon)  # (B, W·B)
            targets_image = targets
            if queued:  # (B, W·B + n)
                cols = torch.cat([all_latlon, queue_latlon.to(all_latlon.dtype)])
                targets_image = soft_targets(latlon, self.sigma_m, self.kernel, latlon_cols=cols, check=False)
        if queued:
            all_location = torch.cat([all_location, queue_location_features])
        logits_per_image = similarity(image_features, all_location, logit_scale)  # (B, W·B [+ n]) float32
        if self.world_size == 1 and not queued:
            # one process: the location -> image logits are the transpose, so one B×B product (and two
            # in the backward) instead of two (and four); open_clip's ClipLoss, and ours, compute both
            logits_per_location = logits_per_image.T
        else:  # this rank's locations against the gathered images: not a transpose of the above
            logits_per_location = similarity(location_features, all_image, logit_scale)
        loss = (
            soft_cross_entropy(logits_per_image, targets_image) + soft_cross_entropy(logits_per_location, targets)
        ) / 2
        out = {"contrastive_loss": loss}
        if self.nc_weight > 0:
            out["nc_loss"] = self.nc_weight * self.nc(image_features, all_image, targets, self.rank, self.world_size)
        return out
