"""The demo bundle: a synthetic world plus small CPU-trained runs, built once (train/build_demo.py).

    <out>/world/            swclip.synth.make_world output + split.csv (the sample table with a split column)
    <out>/<run_id>/         one run per model (manifest.json, model.safetensors, artefacts), .complete when built
    <out>/results.json|md   the results table (median/mean error, acc@100/250/500 m, recall@1)
    <out>/.complete         written last

Every step is skipped when its output is complete, so an interrupted build
resumes where it stopped. The models (DEMO_MODELS) share one config family
(swclip/training/configs/demo_*.yaml, shipped with the package) and differ only in the loss.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

from swclip.data import read_table, spatial_split
from swclip.io import atomic_write, atomic_write_bytes, atomic_write_json
from swclip.runs import update_manifest
from swclip.synth import make_world
from swclip.training.config import CONFIG_DIR, load_config
from swclip.training.evaluation import evaluate_run
from swclip.training.loop import train

# run id -> (config file, overrides). σ values bracket the world's shortest field ranges (150 m).
DEMO_MODELS: dict[str, tuple[str, list]] = {
    "clip": ("demo_clip.yaml", []),
    "swclip-s50": ("demo_swclip.yaml", ["loss.sigma_m=50"]),
    "swclip-s150": ("demo_swclip.yaml", ["loss.sigma_m=150"]),
    "swclip-s400": ("demo_swclip.yaml", ["loss.sigma_m=400"]),
    "swclip-nc-s50": ("demo_swclip_nc.yaml", ["loss.sigma_m=50"]),
    # a sixth run costs no extra round on 2 cores: five runs two at a time already take three rounds (2 + 2 + 1)
    "semivariogram": ("demo_semivariogram.yaml", []),
}
# The world: as in the calibration note, several cities of a few thousand street samples at 32 px.
WORLD = {"cities": ["London", "Manchester", "Bristol", "Edinburgh"], "samples_per_city": 1500, "image_size": 32}
SPLIT = {"test_frac": 0.2, "block_m": 200.0, "buffer_m": 30.0}
TABLE_KEYS = ("median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "recall@1")


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(f"[build_demo] {msg}", flush=True)


def build_world(
    world_dir: Path, seed: int = 0, cities=None, samples_per_city: int | None = None, progress: bool = True
) -> Path:
    """Render the world (unless world.json is there) and write split.csv (unless there). -> split.csv."""

    world_dir = Path(world_dir)
    if not (world_dir / "world.json").is_file():
        _log(f"rendering the demo world into {world_dir}", progress)
        make_world(
            world_dir,
            seed=seed,
            cities=cities or WORLD["cities"],
            samples_per_city=samples_per_city or WORLD["samples_per_city"],
            image_size=WORLD["image_size"],
            overwrite=True,
            progress=progress,
        )
    split_csv = world_dir / "split.csv"
    if not split_csv.is_file():
        table = read_table(world_dir / "samples.csv", world_dir)
        table = spatial_split(
            table, test_frac=SPLIT["test_frac"], block_m=SPLIT["block_m"], buffer_m=SPLIT["buffer_m"], seed=seed
        )
        atomic_write(split_csv, lambda tmp: table.to_csv(tmp, index=False, float_format="%.7f"))
        counts = table["split"].value_counts().to_dict()
        _log(f"spatial split ({SPLIT['block_m']:g} m blocks, {SPLIT['buffer_m']:g} m buffer): {counts}", progress)
    return split_csv


def _build_run(job: dict) -> dict:
    """Train + evaluate one demo run (in a worker process when building in parallel). -> timings."""
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    # the bundle owns its run folders: a run without .complete is rebuilt from scratch, its old files removed
    cfg = load_config(job["config"], [*job["overrides"], "overwrite=true"])
    run_dir = Path(cfg.out_dir) / cfg.run_id
    (run_dir / ".complete").unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    train(cfg)
    t1 = time.perf_counter()
    evaluate_run(run_dir, progress=False)
    update_manifest(run_dir, demo=True)  # the app says plainly that this is the demo world
    # process CPU time too: on a shared machine the wall clock says more about the neighbours than about us
    timings = {
        "train_s": t1 - t0,
        "eval_s": time.perf_counter() - t1,
        "cpu_s": time.process_time() - c0,
        "threads": torch.get_num_threads(),
    }
    (run_dir / ".complete").write_text(json.dumps(timings))
    return {"run_id": cfg.run_id, **timings}


def build_demo(
    out="runs/demo",
    seed: int = 0,
    steps: int | None = None,
    models=None,
    samples_per_city=None,
    cities=None,
    rebuild: bool = False,
    progress: bool = True,
    extra_overrides: tuple = (),
    workers: int | None = None,
) -> dict:
    """Build what is missing of the bundle; -> {run_id: metrics}. See the module docstring.

    workers: runs trained at once, each in its own process with one torch thread (default: the
    CPU count, at most 2). On 2 cores two one-thread runs finish sooner than one two-thread run
    after another: the demo model's ops are too small to split well across threads.
    """
    names = list(models or DEMO_MODELS)
    unknown = [n for n in names if n not in DEMO_MODELS]
    if unknown:
        raise ValueError(f"unknown demo model(s) {unknown}; choose from {list(DEMO_MODELS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict = {}
    split_csv = build_world(out / "world", seed, cities, samples_per_city, progress)
    timings["world_s"] = time.perf_counter() - t_start
    workers = max(1, min(workers or min(os.cpu_count() or 1, 2), len(names)))
    jobs = []
    for run_id in names:
        if (out / run_id / ".complete").is_file() and not rebuild:
            _log(f"{run_id}: already built", progress)
            continue
        config, over = DEMO_MODELS[run_id]
        over = list(over) + [
            f"run_id={run_id}",
            f"out_dir={out}",
            f"seed={seed}",
            f"data.table={split_csv}",
            f"data.root={split_csv.parent}",
            f"progress={progress and workers == 1}",
            *extra_overrides,
        ]
        if steps:
            over.append(f"steps={steps}")
        jobs.append(
            {
                "run_id": run_id,
                "config": str(CONFIG_DIR / config),
                "overrides": over,
                "threads": 1 if workers > 1 else 0,
            }
        )
    if jobs:
        _log(f"training {', '.join(j['run_id'] for j in jobs)}: {min(workers, len(jobs))} at a time", progress)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="demo runs", unit="run")
        # All runs in the pool, one thread each, even a last lone one: a lone 2-thread run is slower than a
        # one-thread run on 2 cores (README, "The demo bundle", has the timings), and the thread count
        # changes float reduction order, so one thread everywhere also keeps the bundle reproducible.
        n_pool = 0 if workers == 1 else len(jobs)
        pool = None
        if n_pool:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(workers)
        try:
            done = pool.imap_unordered(_build_run, jobs[:n_pool]) if pool is not None else iter(())
            for k, t in enumerate(itertools.chain(done, map(_build_run, jobs[n_pool:])), start=1):
                timings[t.pop("run_id")] = t
                if bar is not None:
                    bar.update(1)
                    bar.write(
                        f"[build_demo] {list(timings)[-1]}: trained in {t['train_s']:.0f} s, "
                        f"evaluated in {t['eval_s']:.0f} s "
                        f"({t['cpu_s']:.0f} s CPU, {t['threads']} thread(s))"
                    )
                if pool is not None and k == n_pool:  # the pool's work is done: free its cores
                    pool.close()
                    pool.join()
                    pool = None
        finally:
            if pool is not None:
                pool.terminate()
            if bar is not None:
                bar.close()
    results = {run_id: json.loads((out / run_id / "metrics.json").read_text()) for run_id in names}
    timings["total_s"] = time.perf_counter() - t_start
    write_results(out, results, timings)
    _log(f"done in {timings['total_s']:.0f} s\n" + results_markdown(results), progress)
    tmp = out / f".complete.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"models": names, "seed": seed, "timings": timings}))
    os.replace(tmp, out / ".complete")
    return results


def results_markdown(results: dict) -> str:
    head = "| model | median error (m) | mean error (m) | acc@100 m | acc@250 m | acc@500 m | recall@1 |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for run_id, m in results.items():
        lines.append(
            f"| {run_id} | {m['median_m']:.0f} | {m['mean_m']:.0f} | {m['acc@100m']:.3f} | {m['acc@250m']:.3f} | "
            f"{m['acc@500m']:.3f} | {m.get('recall@1', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def write_results(out: Path, results: dict, timings: dict) -> None:
    table = {run_id: {k: m.get(k) for k in TABLE_KEYS} for run_id, m in results.items()}
    atomic_write_json(out / "results.json", {"results": table, "timings": timings})
    atomic_write_bytes(out / "results.md", (results_markdown(results) + "\n").encode())
