"""The demo bundle: a synthetic world plus small CPU-trained runs, built once (train/build_demo.py).

    <out>/world/            swclip.synth.make_world output + split.csv (the sample table with a split column)
    <out>/<run_id>/         one run per model (manifest.json, model.safetensors, artefacts), .complete when built
    <out>/osv5m/            real photos: OSV-5M's published predictions on its public test sample
                            (assets/osv5m_sample), imported runs plonk, baseline and plonk-71, and images/
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
import shutil
import time
from pathlib import Path

import pandas as pd

from swclip.data import read_table, spatial_split
from swclip.io import atomic_write, atomic_write_bytes, atomic_write_json, sha256_file
from swclip.runs import update_manifest
from swclip.synth import make_world
from swclip.training.config import CONFIG_DIR, load_config
from swclip.training.evaluation import evaluate_run
from swclip.training.loop import train
from swclip.workflows.importer import import_predictions

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


# OSV-5M's public sample (assets/osv5m_sample/ATTRIBUTION.md): its game tables with their model's and
# their baseline's predictions. run id -> (table file, {schema name: column}, model name).
OSV5M_SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "osv5m_sample"
OSV5M_RUNS: dict[str, tuple[str, dict, str]] = {
    # gastruc/osv5m HEAD game/select.csv: 50 rows, pred_lat/pred_lon their best model ("Plonk-AI")
    "plonk": ("osv5m_game_select_head.csv", {"pred_lat": "pred_lat", "pred_lon": "pred_lon"}, "osv5m-plonk"),
    # the same table's pred_lat_base/pred_lon_base ("Baseline-AI")
    "baseline": (
        "osv5m_game_select_head.csv",
        {"pred_lat": "pred_lat_base", "pred_lon": "pred_lon_base"},
        "osv5m-baseline",
    ),
    # gastruc/osv5m@0a7efba game/select.csv: 71 rows, an earlier prediction of their model, every photo present
    "plonk-71": ("osv5m_game_select_0a7efba.csv", {}, "osv5m-plonk (game table at 0a7efba)"),
}


def build_osv5m_sample(out: Path, sample_dir: Path = OSV5M_SAMPLE, progress: bool = True) -> list[Path]:
    """Import OSV-5M's published predictions on its public sample into ``out`` (OSV5M_RUNS); -> the runs.

    The photos are copied to ``out/images`` (the app reads nothing outside its runs directory); a row
    whose photo neither repository ships gets an empty image cell. Skipped when built (.complete) and
    when the sample is absent (an installed package without the repository's assets).
    """
    out = Path(out)
    if (out / ".complete").is_file():
        _log(f"{out.name}: already built", progress)
        return [out / r for r in OSV5M_RUNS]
    if not (sample_dir / "images").is_dir():
        _log(f"no OSV-5M sample at {sample_dir}: its runs are left out", progress)
        return []
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for src in sorted((sample_dir / "images").glob("*.jpg")):
        if not (images / src.name).is_file():
            shutil.copy2(src, images / src.name)
    # the sample's attribution travels with its photos
    shutil.copy2(sample_dir / "ATTRIBUTION.md", out / "ATTRIBUTION.md")
    written = []
    for run_id, (table_name, columns, model) in OSV5M_RUNS.items():
        table = pd.read_csv(sample_dir / table_name, dtype={"id": str})
        have = table["id"].map(lambda i: (images / f"{i}.jpg").is_file())
        table["image"] = ["" if not ok else f"{i}.jpg" for i, ok in zip(table["id"], have)]
        source = {
            "path": str(Path("assets") / "osv5m_sample" / table_name),
            "sha256": sha256_file(sample_dir / table_name),
            "format": "csv",
            "description": "OSV-5M public test sample (CC BY-SA 4.0), see ATTRIBUTION.md",
        }
        run_dir = import_predictions(
            table, out / run_id, model=model, source=source, columns=columns, images_root=images, force=True
        )
        written.append(run_dir)
        _log(f"osv5m/{run_id}: imported {len(table)} rows of {model} ({int(have.sum())} with photos)", progress)
    atomic_write_bytes(out / ".complete", b"")
    return written


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
    # before training: the trained runs, written later, stay the newest and so the app's default selection
    t_osv = time.perf_counter()
    build_osv5m_sample(out / "osv5m", progress=progress)
    timings["osv5m_s"] = time.perf_counter() - t_osv
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
        # one-thread run on 2 cores (docs/benchmarks.md has the timings), and the thread count
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
