"""Training-step throughput: clip vs swclip vs swclip+nc vs semivariogram, one model, one batch size.

    swclip bench losses                                  # demo model, batch 256, synthetic tensors
    swclip bench losses --data demo --table runs/demo/world/samples.csv   # the demo world's batches
    swclip bench losses --config train/configs/vitb32_swclip.yaml --data synthetic   # ViT-B/32 224 px (GPU)

Each loss gets its own model + optimiser (same seed); their steps run
round-robin, so load drifts on a shared machine hit all alike. Reported per
loss: median step time, images/s, the data-wait share (time fetching the
batch / step time), peak memory (CUDA: max allocated per loss; CPU: the
process's peak RSS, shared by all), and the step-time ratio to clip. The
semivariogram loss is fitted once after the warm-up so its weighted path is
timed; its refit cost is reported separately, amortised over refit_every.
Writes benchmarks/results/train-step-<machine>.json and prints a table.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from swclip.analysis.variogram import VariogramFit
from swclip.loss_names import CONTROL_LOSSES, LOSSES
from swclip.training.batches import make_train_data
from swclip.training.config import CONFIG_DIR, load_config
from swclip.training.loop import Trainer, image_spec, location_tokenizer, read_train_table, train_transform


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``swclip bench``."""
    p.add_argument("what", nargs="?", default="losses", choices=["losses"], help="what to benchmark")
    p.add_argument("--config", default=str(CONFIG_DIR / "demo_clip.yaml"), help="training config (model, optimiser)")
    p.add_argument(
        "--data",
        choices=["synthetic", "demo"],
        default="synthetic",
        help="synthetic tensors (no files) or the config's / --table's sample table",
    )
    p.add_argument("--table", help="sample table for --data demo (default: the config's data.table)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per loss")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per loss first")
    p.add_argument(
        "--losses",
        nargs="+",
        default=[n for n in LOSSES if n not in CONTROL_LOSSES],
        choices=LOSSES,
        help=f"losses to time (default: all but the experiment controls {', '.join(CONTROL_LOSSES)})",
    )
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if present), cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--sigma-m", type=float, default=150.0, help="SW-CLIP bandwidth in metres (default 150)")
    p.add_argument("--name", default="train-step", help="result file stem: benchmarks/results/<name>-<machine>.json")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def measure(args) -> dict:
    """Time every loss in ``args.losses`` side by side; -> the result dict (see the module docstring)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    trainers, streams = {}, {}
    table = None
    for name in args.losses:
        over = list(args.overrides) + [
            f"loss.name={name}",
            f"loss.sigma_m={args.sigma_m}",
            "progress=false",
            f"device={args.device}",
            f"data.synthetic={args.data == 'synthetic'}",
        ]
        if args.batch:
            over.append(f"batch_size={args.batch}")
        if args.table:
            over += [f"data.table={args.table}", f"data.root={Path(args.table).resolve().parent}"]
        cfg = load_config(args.config, over)
        cfg.steps = max(cfg.steps, args.warmup + args.steps + 1)
        tr = Trainer(cfg)
        size, mean, std = image_spec(tr.model)
        if args.data == "demo" and table is None:
            table = read_train_table(cfg)
        data = make_train_data(
            cfg,
            size,
            tr.device,
            mean=mean,
            std=std,
            table=table,
            transform=train_transform(tr.model, cfg),
            tokenize=location_tokenizer(tr.model, table),
        )
        trainers[name] = tr
        streams[name] = _endless(data)
    dev = next(iter(trainers.values())).device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    for _ in range(args.warmup):
        for name, tr in trainers.items():
            tr.step(next(streams[name]))
    fit_s, variogram_source = None, None
    if "semivariogram" in trainers:
        sv = trainers["semivariogram"].loss_fn
        sv.min_fit_samples = min(sv.min_fit_samples, sv.bank.count)
        try:
            sv.refit()  # the first fit also compiles scikit-gstat's numba models: time the second
            t0 = time.perf_counter()
            sv.refit()
            fit_s = time.perf_counter() - t0
        except ImportError:  # scikit-gstat not installed (the bare GPU image): the fixed γ below
            sv.variogram = None
        sv.refit_every = 0  # the timed steps use this fit; refits are costed apart
        variogram_source = "fitted to the memory bank"
        if sv.variogram is None:  # random features have no spatial structure: time the weighting with a fixed γ
            sv.set_variogram(
                VariogramFit(ok=True, model="exponential", nugget=0.3, partial_sill=0.6, sill=0.9, range_m=600.0)
            )
            variogram_source = (
                "fixed exponential (the bank's features had no fit)"
                if fit_s is not None
                else "fixed exponential (scikit-gstat not installed: no fit)"
            )
    sync()

    times = {n: [] for n in trainers}
    cpu = {n: [] for n in trainers}
    waits = {n: [] for n in trainers}
    for _ in range(args.steps):
        for name, tr in trainers.items():
            c0, t0 = time.process_time(), time.perf_counter()
            batch = next(streams[name])
            sync()
            t1 = time.perf_counter()
            tr.step(batch)
            sync()
            t2 = time.perf_counter()
            times[name].append(t2 - t0)
            cpu[name].append(time.process_time() - c0)
            waits[name].append(t1 - t0)

    peak = {}
    if dev.type == "cuda":
        for name, tr in trainers.items():
            torch.cuda.reset_peak_memory_stats(dev)
            tr.step(next(streams[name]))
            sync()
            peak[name] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
        peak = {name: rss for name in trainers}

    cfg0 = next(iter(trainers.values())).cfg
    batch = cfg0.batch_size
    base = statistics.median(times["clip"]) if "clip" in times else None
    rows = []
    for name in trainers:
        med = statistics.median(times[name])
        cpu_med = statistics.median(cpu[name])
        row = {
            "loss": name,
            "step_ms": 1000 * med,
            "min_step_ms": 1000 * min(times[name]),
            "images_per_s": batch / med,
            # process CPU time (all threads): what the step costs regardless of the neighbours' load
            "cpu_ms": 1000 * cpu_med,
            "cpu_ratio_to_clip": cpu_med / statistics.median(cpu["clip"]) if "clip" in cpu else None,
            "data_wait_frac": sum(waits[name]) / sum(times[name]),
            "peak_mem_mib": peak[name],
            "ratio_to_clip": med / base if base else None,
            "extra_over_clip_pct": 100 * (med / base - 1) if base else None,
            # the trainer's own count: warm-up + timed steps (+1 for the CUDA memory step)
            "optimizer_steps": trainers[name].step_count,
            "timed_s_total": sum(times[name]),
        }
        if name == "semivariogram" and fit_s is not None:
            row["refit_s"] = fit_s
            row["refit_every"] = trainers[name].cfg.loss.refit_every
            row["refit_amortised_ms_per_step"] = 1000 * fit_s / max(trainers[name].cfg.loss.refit_every, 1)
            row["variogram"] = variogram_source
        rows.append(row)
    n_params = sum(p.numel() for p in next(iter(trainers.values())).model.parameters())
    return {
        "config": str(args.config),
        "torch_threads": torch.get_num_threads(),
        "model": cfg0.model,
        "batch_size": batch,
        "data": args.data,
        "device": str(dev),
        "precision": cfg0.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "sigma_m": args.sigma_m,
        "model_params": n_params,
        "peak_mem_note": (
            "CUDA: max allocated during one step per loss; CPU: peak RSS of the whole process (all losses)"
        ),
        "rows": rows,
    }


def _endless(data):
    epoch = 0
    while True:
        yield from data.batches(epoch, 0)
        epoch += 1


def format_table(result: dict) -> str:
    lines = [
        f"{result['model_params'] / 1e6:.2f} M params, batch {result['batch_size']}, {result['data']} data, "
        f"device {result['device']}, precision {result['precision']}",
        f"{'loss':<14} {'step ms':>8} {'img/s':>8} {'x clip':>7} {'+% clip':>8} {'cpu ms':>7} {'cpu x clip':>10} "
        f"{'data wait':>9} {'peak MiB':>9}",
    ]
    for r in result["rows"]:
        ratio = f"{r['ratio_to_clip']:.3f}" if r["ratio_to_clip"] else "-"
        extra = f"{r['extra_over_clip_pct']:+.1f}" if r["extra_over_clip_pct"] is not None else "-"
        cpu_ratio = f"{r['cpu_ratio_to_clip']:.3f}" if r["cpu_ratio_to_clip"] else "-"
        lines.append(
            f"{r['loss']:<14} {r['step_ms']:>8.1f} {r['images_per_s']:>8.0f} {ratio:>7} {extra:>8} "
            f"{r['cpu_ms']:>7.1f} {cpu_ratio:>10} {r['data_wait_frac']:>9.1%} {r['peak_mem_mib']:>9.0f}"
        )
        if "refit_s" in r:
            lines.append(
                f"{'':<14} variogram refit {r['refit_s'] * 1000:.0f} ms every {r['refit_every']} steps "
                f"= {r['refit_amortised_ms_per_step']:.1f} ms/step"
            )
    return "\n".join(lines)
