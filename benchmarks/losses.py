"""Loss forward + backward time: ClipLoss vs SoftClipLoss (± NC) vs SemivariogramWeightedLoss (both variants).

    .venv/bin/python -m benchmarks.losses [--batch 256 1024 4096] [--dim 512] [--repeats 5] [--device cpu]

Prints a table of median times and the ratio to ClipLoss at each batch size,
measured interleaved in one run, and writes benchmarks/results/losses-<machine>.json.
With --bf16 --parity each row also holds the loss's bf16-against-float32 agreement on the same
inputs: |Δ value| / |value| and ‖Δ gradient‖ / ‖gradient‖ (image and location features together).
The goals, on CPU at B = 4096: SoftClipLoss at most 1.10x, + NC at most 1.5x and the semivariogram
loss at most 1.3x ClipLoss.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from swclip.analysis.variogram import VariogramFit
from swclip.method.losses import ClipLoss, SoftClipLoss
from swclip.method.semivariogram_loss import LossVariogram, SemivariogramWeightedLoss
from swclip.workflows.benchmark import interleaved_times, machine, write_result


def fixed_variogram(variant: str) -> LossVariogram:
    """A fixed γ(h) of the model ``variant`` fits, nugget 0.3, partial sill 0.6, range 600 m: swclip's default
    exponential model, chen2025's stable model (shape 1.3); near/far split at 1 km in the 4-km batch. The loss's
    cost depends on evaluating γ, not on how it was fitted or where the split falls, so the benchmark fixes
    one (and needs no scikit-gstat, which the GPU check does not carry)."""
    model, shape = ("exponential", None) if variant == "swclip" else ("stable", 1.3)
    fit = VariogramFit(ok=True, model=model, nugget=0.3, partial_sill=0.6, sill=0.9, range_m=600.0, shape=shape)
    return LossVariogram(fit, 1000.0, "practical" if variant == "swclip" else "rho", 0, 0)


def make_batch(b: int, d: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(b, d, generator=g), dim=1)
    location = F.normalize(image + torch.randn(b, d, generator=g), dim=1)
    # a city-sized batch: 4 km x 4 km
    latlon = torch.stack(
        [
            51.48 + 0.036 * torch.rand(b, generator=g, dtype=torch.float64),
            -0.15 + 0.058 * torch.rand(b, generator=g, dtype=torch.float64),
        ],
        1,
    )
    return image.to(device), location.to(device), latlon.to(device)


def loss_and_grad(loss, image, location, scale, latlon, bf16: bool):
    """The loss's objective (its *_loss terms summed) and d objective / d (image, location) features, flattened."""
    v, l_ = image.clone().requires_grad_(), location.clone().requires_grad_()
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bf16):
        total = sum(t for k, t in loss(v, l_, scale, latlon).items() if k.endswith("_loss"))
    total.backward()
    return total.detach().double(), torch.cat([v.grad.flatten(), l_.grad.flatten()]).double()


def bf16_parity(loss, image, location, scale, latlon) -> dict:
    """{"value_rel_err", "grad_rel_err"}: the loss under bf16 autocast against float32, same inputs."""
    value, grad = loss_and_grad(loss, image, location, scale, latlon, bf16=True)
    value32, grad32 = loss_and_grad(loss, image, location, scale, latlon, bf16=False)
    return {
        "value_rel_err": float((value - value32).abs() / value32.abs().clamp_min(1e-12)),
        "grad_rel_err": float((grad - grad32).norm() / grad32.norm().clamp_min(1e-12)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sigma-m", type=float, default=150.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="run under bf16 autocast")
    parser.add_argument("--parity", action="store_true", help="with --bf16: each loss's value and gradient vs fp32")
    args = parser.parse_args(argv)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    losses = {
        "clip": ClipLoss(),
        "swclip": SoftClipLoss(args.sigma_m),
        "swclip+nc": SoftClipLoss(args.sigma_m, nc_weight=0.5),
    }
    for variant, name in (("swclip", "semivariogram"), ("chen2025", "semivariogram-chen2025")):
        losses[name] = SemivariogramWeightedLoss(variant, beta=1.0, refit_every=0)
        losses[name].set_variogram(fixed_variogram(variant))
    rows = []
    for b in args.batch:
        image, location, latlon = make_batch(b, args.dim, args.device)
        scale = torch.tensor(1 / 0.07, device=args.device)

        def step(loss):
            def run():
                v, l_ = image.clone().requires_grad_(), location.clone().requires_grad_()
                with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
                    total = sum(loss(v, l_, scale, latlon).values())
                total.backward()

            return run

        times = interleaved_times({name: step(loss) for name, loss in losses.items()}, args.repeats, sync=sync)
        base = times["clip"]["median_s"]
        for name, t in times.items():
            row = {"batch": b, "dim": args.dim, "loss": name, **t, "ratio_to_clip": t["median_s"] / base}
            if args.parity:
                row.update(bf16_parity(losses[name], image, location, scale, latlon))
            rows.append(row)

    head = f"{'B':>6} {'loss':<22} {'median ms':>10} {'x clip':>7}"
    print(head + ("  bf16 vs fp32: value  grad" if args.parity else ""))
    for r in rows:
        parity = f"  {r['value_rel_err']:>18.1e} {r['grad_rel_err']:>5.1e}" if args.parity else ""
        print(f"{r['batch']:>6} {r['loss']:<22} {1000 * r['median_s']:>10.1f} {r['ratio_to_clip']:>7.2f}{parity}")
    path = write_result("losses", {"device": args.device, "bf16": args.bf16, "sigma_m": args.sigma_m, "rows": rows})
    print(f"wrote {path}  ({machine()['cpu_cores']} cores, device {args.device})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
