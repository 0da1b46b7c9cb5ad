"""Experiments: a grid of configs × seeds on the demo world, with a validation split, in one experiment.json.

    swclip experiment --out runs/experiments/gaussian-b100              # the main protocol
    swclip experiment --out runs/experiments/exp-b100 --covariance exponential --seeds 0 1 2
    swclip experiment --out /tmp/try --quick                            # 2 seeds, 3 σ
    swclip experiment --grid full --out runs/experiments --results benchmarks/results   # the committed three

The protocol (fixed before any test number is looked at):

- **World and split.** ``swclip.synth.make_world`` (Gaussian or exponential field
  covariance), split by ``swclip.data.spatial_split`` into spatial train / val / test
  blocks; every train row is more than ``buffer_m`` from every val and test row.
- **Seeds.** Each seed changes the model initialisation, the batch order and the
  augmentation (``TrainConfig.seed``); world and split stay fixed.
- **Configs, per seed** (``CONFIGS``): one-hot CLIP; SW-CLIP at each σ of the sweep;
  SW-CLIP at the σ that ``swclip.analysis.variogram.suggest_sigma_m`` gives from the variogram
  of the same seed's CLIP image embeddings on the training split; SW-CLIP + NC at that
  seed's validation-chosen σ, for each λ; semivariogram-weighted CLIP.
- **Selection on validation.** Per seed, σ is the sweep's value with the lowest
  validation ``select_metric`` (median error), and λ likewise among the NC runs. The
  selected configs ("swclip (val σ)", "swclip+nc (val σ, λ)") are then reported on
  test once, beside the whole sweep (labelled as a sweep).
- **Controls, kernel shape, convergence** (optional, ``controls``, ``kernels``,
  ``variogram_kernel``, ``long_seeds``): CLIP tuned over (temperature init, learning rate);
  label smoothing with SW-CLIP's off-diagonal mass at each σ (loss ``smooth``); SW-CLIP's
  kernel on shuffled locations at each σ (loss ``shuffled``), each chosen per seed on
  validation with the σ sweep's budget; the σ sweep with the exponential kernel; SW-CLIP with
  the kernel the variogram's fitted family picks; CLIP and the validation-chosen SW-CLIP at
  ``long_factor`` × the steps.
- **Statistics.** Mean and spread across seeds; against CLIP on test, a two-level paired
  bootstrap (seeds, then each city's test blocks) as the reported interval, the block-only one
  beside it; overall and per city (``swclip.analysis.experiment_stats``). The pre-registered
  headline is the validation-chosen σ against CLIP; every other comparison is exploratory.
- **Reproducibility.** Each run uses one torch and one faiss thread; its record holds the
  hash of its trained weights and its provenance (commit, CPU model, thread counts, library
  versions). The same job on the same CPU model and versions gives the same weights and
  numbers, bit for bit (tests/test_experiments.py reruns a tiny grid).

Layout of ``out``: ``world/`` (the world + split.csv), ``runs/<config>-seed<k>/`` (one
run each; ``record.json`` written last marks it finished, so a restart skips it), and
``experiment.json``, rewritten after every finished run. Runs are lean by default: they compute only
what the record holds (``run_job``); ``--artefacts`` writes the app's evaluation artefacts too.

One concept, the experiment grid (its protocol, its jobs, its runner and record), so one
module past 400 lines; the statistics are swclip.analysis.experiment_stats.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swclip.analysis.empirical_variogram import empirical_variogram
from swclip.analysis.experiment_stats import (
    CLIP_LONG,
    CLIP_TUNED,
    HEADLINE,
    SWCLIP_EXP,
    SWCLIP_LONG,
    SWCLIP_VAR,
    SWCLIP_VAR_KERNEL,
    experiment_summary,
    summary_table,
)
from swclip.analysis.metrics import summarize
from swclip.analysis.variogram import fit_best, kernel_for_model, suggest_sigma_m
from swclip.data import read_table, spatial_split
from swclip.geo import EARTH_RADIUS_M, unit_vectors
from swclip.io import atomic_write, atomic_write_json
from swclip.loss_names import CLIP, SEMIVARIOGRAM, SHUFFLED, SMOOTH, SWCLIP, SWCLIP_NC
from swclip.runs import git_commit, library_versions, load_run, read_predictions
from swclip.synth import make_world
from swclip.synth.world import load_world
from swclip.training.config import CONFIG_DIR, load_config
from swclip.training.evaluation import encode_images, evaluate, evaluate_run
from swclip.training.loop import train
from swclip.workflows.benchmark import cpu_model
from swclip.workflows.results import FORMAT, VERSION

RECORD_JOB_KEYS = ("name", "config", "seed", "kind", "sigma_m", "nc_weight", "kernel", "temperature", "lr")
RECORD_KEYS = ("n", "median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "acc@1km", "acc@25km", "recall@1")


# CLIP's tuning grid: (temperature init τ, so logit scale exp(t) = 1/τ; learning rate), six pairs for the six σ
# of the main sweep; the demo's own CLIP is (0.07, 2e-3)
CLIP_TUNING = ((0.07, 1e-3), (0.07, 2e-3), (0.07, 4e-3), (0.03, 1e-3), (0.03, 2e-3), (0.03, 4e-3))


@dataclass
class ExperimentConfig:
    """Everything that defines an experiment; recorded in experiment.json."""

    name: str = "gaussian-b100"
    # world
    covariance: str = "gaussian"  # latent fields' covariance (swclip.synth.fields.COVARIANCES)
    world_seed: int = 0
    cities: tuple = ("London", "Manchester", "Bristol", "Edinburgh")
    samples_per_city: int = 1500
    image_size: int = 32
    # split
    test_frac: float = 0.2
    val_frac: float = 0.2
    block_m: float = 400.0
    buffer_m: float = 100.0
    split_seed: int = 0
    # grid
    seeds: tuple = (0, 1, 2, 3, 4)
    sigmas_m: tuple = (25.0, 50.0, 100.0, 150.0, 250.0, 400.0)
    nc_weights: tuple = (0.25, 1.0)
    variogram: bool = True  # SW-CLIP at the variogram-suggested σ
    semivariogram: bool = True  # semivariogram-weighted CLIP
    select_metric: str = "median_m"  # lower is better
    # training (each run: one torch thread); 300 x 128, smaller than the demo bundle's runs, to fit the budget
    steps: int = 300
    batch_size: int = 128
    variogram_max_lag_m: float = 3000.0  # street-level lags only: the cities are tens of km apart
    # controls, each chosen per seed on validation with the σ sweep's budget (as many runs as sigmas_m):
    # CLIP tuned over (temperature init, learning rate) pairs; label smoothing with SW-CLIP's off-diagonal
    # mass at each σ (loss "smooth"); SW-CLIP's kernel on shuffled locations at each σ (loss "shuffled")
    controls: bool = False
    clip_tuning: tuple = CLIP_TUNING
    # kernel shape: the σ sweep once per kernel ("exponential" adds the exponential kernel's sweep), and
    # SW-CLIP with the kernel the variogram's fitted family picks, at the σ its range gives
    kernels: tuple = ("gaussian",)
    variogram_kernel: bool = False
    # convergence: on these seeds, CLIP and SW-CLIP at that seed's validation-chosen σ also train
    # long_factor × steps
    long_seeds: tuple = ()
    long_factor: int = 4


QUICK = dict(seeds=(0, 1), sigmas_m=(50.0, 150.0, 400.0))

# The whole grid behind docs/evidence.md's tables, one experiment each (``swclip experiment --grid full``): the main
# world with everything (the Gaussian and exponential kernels' σ sweeps, the variogram's σ and kernel, NC,
# semivariogram, the three controls with the sweep's budget, and CLIP and the validation-chosen SW-CLIP at 4×
# the steps on seeds 0-2); the second world (exponential covariance) with the kernel-shape runs but without
# the controls and long runs, to fit the budget; and the main world with a 30 m buffer (CLIP and three σ only:
# it asks how much of the gain is interpolation, not which σ). 296 runs, 314 run-lengths.
GRIDS = {
    "full": (
        ExperimentConfig(
            name="gaussian-b100",
            controls=True,
            kernels=("gaussian", "exponential"),
            variogram_kernel=True,
            long_seeds=(0, 1, 2),
        ),
        ExperimentConfig(
            name="exponential-b100",
            covariance="exponential",
            kernels=("gaussian", "exponential"),
            variogram_kernel=True,
        ),
        ExperimentConfig(
            name="gaussian-b30",
            buffer_m=30.0,
            sigmas_m=(50.0, 150.0, 400.0),
            nc_weights=(),
            variogram=False,
            semivariogram=False,
        ),
    ),
}


def job_name(config: str, seed: int) -> str:
    return f"{config}-seed{seed}"


def sigma_name(sigma_m: float, kernel: str = "gaussian") -> str:
    return f"swclip-s{sigma_m:g}" if kernel == "gaussian" else f"swclip-{kernel[:3]}-s{sigma_m:g}"


SWEEP_KIND = {"gaussian": SWCLIP, "exponential": SWCLIP_EXP}  # the kind of each kernel's σ sweep


def _job(name: str, config: str, seed: int, kind: str, after=(), **params) -> dict:
    base = dict(sigma_m=None, nc_weight=None, kernel=None, temperature=None, lr=None, steps=None)
    return dict(name=name, config=config, seed=seed, kind=kind, **{**base, **params}, after=list(after))


def plan_jobs(cfg: ExperimentConfig) -> list[dict]:
    """The grid as jobs, seed-major (a stopped grid leaves whole seeds), each with the jobs it waits for.

    Job: {name, config, seed, kind, sigma_m, nc_weight, kernel, temperature, lr, steps (None: the
    experiment's), after: [job names]}. Kinds: clip, swclip (the Gaussian σ sweep), swclip-exp (the
    exponential sweep), swclip-var, swclip-varkernel, swclip+nc, semivariogram, clip-tuned, smooth,
    shuffled, clip-long, swclip-long. Raises ValueError when the controls' budget differs from the sweep's.
    """
    if cfg.controls and len(cfg.clip_tuning) != len(cfg.sigmas_m):
        raise ValueError(
            f"clip_tuning has {len(cfg.clip_tuning)} configurations and the σ sweep {len(cfg.sigmas_m)}: "
            "the controls get the sweep's budget"
        )
    unknown = [k for k in cfg.kernels if k not in SWEEP_KIND]
    if unknown or "gaussian" not in cfg.kernels:
        raise ValueError(f"kernels must include gaussian and be among {tuple(SWEEP_KIND)}; got {cfg.kernels}")
    jobs = []
    for seed in cfg.seeds:
        clip = job_name("clip", seed)
        sweep = [job_name(sigma_name(s), seed) for s in cfg.sigmas_m]
        jobs.append(_job(clip, "clip", seed, CLIP))
        for kernel in cfg.kernels:
            for s in cfg.sigmas_m:
                name = sigma_name(s, kernel)
                jobs.append(_job(job_name(name, seed), name, seed, SWEEP_KIND[kernel], sigma_m=float(s), kernel=kernel))
        if cfg.semivariogram:
            jobs.append(_job(job_name("semivariogram", seed), "semivariogram", seed, SEMIVARIOGRAM))
        if cfg.variogram:
            jobs.append(_job(job_name(SWCLIP_VAR, seed), SWCLIP_VAR, seed, SWCLIP_VAR, [clip], kernel="gaussian"))
        if cfg.variogram_kernel:
            jobs.append(_job(job_name(SWCLIP_VAR_KERNEL, seed), SWCLIP_VAR_KERNEL, seed, SWCLIP_VAR_KERNEL, [clip]))
        for lam in cfg.nc_weights:
            cname = f"swclip-nc-l{lam:g}"
            jobs.append(_job(job_name(cname, seed), cname, seed, SWCLIP_NC, sweep, nc_weight=float(lam)))
        if cfg.controls:
            for temperature, lr in cfg.clip_tuning:
                cname = f"clip-t{temperature:g}-lr{lr:g}"
                jobs.append(
                    _job(job_name(cname, seed), cname, seed, CLIP_TUNED, temperature=float(temperature), lr=float(lr))
                )
            for kind in (SMOOTH, SHUFFLED):
                for s in cfg.sigmas_m:
                    cname = f"{kind}-s{s:g}"
                    jobs.append(_job(job_name(cname, seed), cname, seed, kind, sigma_m=float(s), kernel="gaussian"))
        if seed in cfg.long_seeds:
            steps = int(cfg.steps * cfg.long_factor)
            jobs.append(_job(job_name(CLIP_LONG, seed), CLIP_LONG, seed, CLIP_LONG, steps=steps))
            jobs.append(
                _job(job_name(SWCLIP_LONG, seed), SWCLIP_LONG, seed, SWCLIP_LONG, sweep, kernel="gaussian", steps=steps)
            )
    return jobs


# --------------------------------------------------------------------------- world and split


def prepare(out: Path, cfg: ExperimentConfig, progress: bool = True) -> Path:
    """Render the world and write split.csv (each skipped when there). -> split.csv."""

    world = out / "world"
    if not (world / "world.json").is_file():
        make_world(
            world,
            seed=cfg.world_seed,
            cities=list(cfg.cities),
            samples_per_city=cfg.samples_per_city,
            image_size=cfg.image_size,
            covariance=cfg.covariance,
            overwrite=True,
            progress=progress,
        )
    split_csv = world / "split.csv"
    if not split_csv.is_file():
        table = spatial_split(
            read_table(world / "samples.csv", world),
            test_frac=cfg.test_frac,
            val_frac=cfg.val_frac,
            block_m=cfg.block_m,
            buffer_m=cfg.buffer_m,
            seed=cfg.split_seed,
            block_column=True,
        )
        atomic_write(split_csv, lambda tmp: table.to_csv(tmp, index=False, float_format="%.7f"))
        (world / "split.json").write_text(json.dumps(table.attrs["split"], indent=1))
    return split_csv


def world_summary(world_dir: Path) -> dict:
    """The world's parameters for experiment.json: covariance, seed, and each city's true field ranges."""

    meta = load_world(world_dir)
    ranges = {c["name"]: sorted(f["range_m"] for f in c["fields"]) for c in meta["cities"]}
    allr = np.concatenate([np.asarray(r) for r in ranges.values()])
    return dict(
        covariance=meta.get("covariance", "gaussian"),
        seed=meta["seed"],
        image_size=meta["image_size"],
        samples_per_city=meta["samples_per_city"],
        cities=list(ranges),
        field_ranges_m=ranges,
        range_m=dict(min=float(allr.min()), median=float(np.median(allr)), max=float(allr.max())),
    )


def oracle_errors_m(table, split: str = "test") -> np.ndarray:
    """(N,) metres from each ``split`` row to its nearest training location: the floor of a
    top-1 prediction from the training-location gallery (no model can do better)."""
    from scipy.spatial import cKDTree

    train = unit_vectors(table.loc[table["split"] == "train", ["lat", "lon"]].to_numpy(np.float64))
    rows = unit_vectors(table.loc[table["split"] == split, ["lat", "lon"]].to_numpy(np.float64))
    chord, _ = cKDTree(train).query(rows, k=1)
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))


# --------------------------------------------------------------------------- one run


def variogram_sigma(clip_dir: Path, split_csv: Path, max_lag_m: float, kernel: str | None = "gaussian") -> dict:
    """σ from the CLIP run's image-embedding variogram on the training split.

    kernel: the soft-label kernel σ is for; None: the kernel the best-fitting model's family picks
    (``kernel_for_model``). -> {range_m (practical range of the best-fitting model), sigma_m
    (suggest_sigma_m for the kernel), kernel, model, shape, nugget_ratio, n}; sigma_m is None with a
    ``reason`` when no variogram fits.
    """
    import torch

    table = split_table(split_csv)
    train = table[table["split"] == "train"].reset_index(drop=True)
    run = load_run(clip_dir)
    run.model.eval()
    with torch.inference_mode():
        emb = encode_images(run.model, train, split_csv.parent)  # (N, D)
    emp = empirical_variogram(
        train[["lat", "lon"]].to_numpy(np.float64), embeddings=emb, dissimilarity="cosine", max_lag_m=max_lag_m, seed=0
    )
    fit = fit_best(emp)
    if not fit.ok:
        return dict(sigma_m=None, range_m=None, reason=f"no variogram fit: {fit.reason}", n=len(train))
    range_m = fit.practical_range_m()
    kernel = kernel or kernel_for_model(fit.model, fit.shape)
    return dict(
        sigma_m=suggest_sigma_m(range_m, kernel),
        range_m=range_m,
        kernel=kernel,
        model=fit.model,
        shape=fit.shape,
        nugget_ratio=float(fit.nugget_ratio),
        n=len(train),
    )


def _overrides(job: dict, cfg: ExperimentConfig, split_csv: Path, runs_dir: Path) -> tuple[str, list]:
    over = [
        f"run_id={job['name']}",
        f"out_dir={runs_dir}",
        f"seed={job['seed']}",
        f"data.table={split_csv}",
        f"data.root={split_csv.parent}",
        "data.eval_split=test",
        "progress=false",
        f"steps={job.get('steps') or cfg.steps}",
        f"batch_size={cfg.batch_size}",
    ]
    kind = job["kind"]
    if kind in (CLIP, CLIP_LONG):
        return "demo_clip.yaml", over
    if kind == CLIP_TUNED:
        t = math.log(1.0 / job["temperature"])
        return "demo_clip.yaml", over + [f"model.init_logit_scale={t!r}", f"optim.lr={job['lr']!r}"]
    soft = [f"loss.sigma_m={job['sigma_m']}", f"loss.kernel={job['kernel']}"]
    if kind in (SWCLIP, SWCLIP_EXP, SWCLIP_VAR, SWCLIP_VAR_KERNEL, SWCLIP_LONG):
        return "demo_swclip.yaml", over + soft
    if kind in (SMOOTH, SHUFFLED):
        return "demo_swclip.yaml", over + soft + [f"loss.name={kind}"]
    if kind == SWCLIP_NC:
        return "demo_swclip_nc.yaml", over + soft + [f"loss.nc_weight={job['nc_weight']}"]
    if kind == SEMIVARIOGRAM:
        return "demo_semivariogram.yaml", over + [f"loss.variogram_max_lag_m={cfg.variogram_max_lag_m}"]
    raise ValueError(f"unknown job kind {kind!r}")


_TABLE_CACHE: dict = {}  # one entry per worker process: the split table, keyed by its path, size and mtime


def split_table(split_csv: Path):
    """The experiment's split table (all rows), read and checked (swclip.data.read_table) once per worker
    process and file version. The same DataFrame for every run: callers must not set its columns in place
    (frames derived from it, such as a split's rows, never write back under pandas' copy-on-write). Not a
    copy on purpose: a copy consolidates the float columns, after which training's lat/lon arrays are
    read-only views (torch warns) instead of the fresh read's own arrays."""
    st = split_csv.stat()
    key = (str(split_csv.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _TABLE_CACHE:
        _TABLE_CACHE.clear()
        _TABLE_CACHE[key] = read_table(split_csv, split_csv.parent)
    return _TABLE_CACHE[key]


def run_job(job: dict) -> dict:
    """Train + evaluate one job on val and test (in a worker process, one torch thread). -> its record.

    ``job["artefacts"]`` False (the grid's default, lean): the split table is read once per worker and
    handed to training, and evaluation computes only what the record holds (no training-image gallery, no
    Recall-vs-Area or admin-level metrics, nothing written but record.json). True: training reads its own
    table, and the test split is evaluated by ``evaluate_run``, which writes the app's artefacts
    (predictions.parquet, embeddings, galleries, metrics.json) so the run opens in the app. The record's
    numbers are the same either way (tests/test_experiments.py runs a grid both ways).
    """
    import faiss
    import torch

    # one thread for torch and for faiss (whose OpenMP team defaults to every core): the same numbers
    # whatever the machine's core count and however many workers share it
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cfg = ExperimentConfig(**job["experiment"])
    split_csv, runs_dir = Path(job["split_csv"]), Path(job["runs_dir"])
    lean = not job.get("artefacts", False)
    t0, c0 = time.perf_counter(), time.process_time()
    record = {k: job.get(k) for k in RECORD_JOB_KEYS}
    if job["kind"] in (SWCLIP_VAR, SWCLIP_VAR_KERNEL):
        kernel = job["kernel"] if job["kind"] == SWCLIP_VAR else None  # None: the fitted family's kernel
        vg = variogram_sigma(runs_dir / job_name("clip", job["seed"]), split_csv, cfg.variogram_max_lag_m, kernel)
        record["variogram"] = vg
        if vg["sigma_m"] is None:
            record["skipped"] = vg["reason"]
            atomic_write_json(runs_dir / job["name"] / "record.json", record)
            return record
        job = {**job, "sigma_m": vg["sigma_m"], "kernel": vg["kernel"]}
        record["sigma_m"], record["kernel"] = vg["sigma_m"], vg["kernel"]
    record["steps"] = job.get("steps") or cfg.steps
    config, over = _overrides(job, cfg, split_csv, runs_dir)
    table = split_table(split_csv) if lean else read_table(split_csv, split_csv.parent)
    train_rows = table[table["split"] == "train"].reset_index(drop=True)
    # the grid owns its run folders: a job without record.json (killed, or new) trains from scratch
    run_dir = train(load_config(CONFIG_DIR / config, [*over, "overwrite=true"]), table=train_rows if lean else None)
    t1 = time.perf_counter()
    run = load_run(run_dir)
    model = run.model
    # the trained weights' hash: two runs of one job agree on it exactly when training was deterministic
    record["weights_sha256"] = run.manifest.get("weights_sha256")
    for split in ("val", "test"):
        rows = table[table["split"] == split].reset_index(drop=True)
        if lean or split == "val":
            res = evaluate(model, train_rows, rows, str(split_csv.parent), image_gallery=not lean, scale=not lean)
            m, pred = res["metrics"], res["predictions"]
        else:  # the app's path: the run's own table and test split (its manifest), artefacts written
            m, pred = evaluate_run(run_dir), read_predictions(run_dir, scalar_only=True)
        record[split] = {k: m[k] for k in RECORD_KEYS if k in m}
        if split == "test":
            if list(pred["id"].astype(str)) != list(rows["id"].astype(str)):
                raise RuntimeError("evaluation reordered the test rows")
            record["test_error_m"] = np.round(pred["error_m"].to_numpy(), 1).tolist()
    record["git_commit"] = git_commit()  # per run: a grid resumed across commits shows it (None outside a checkout)
    record["provenance"] = run_provenance()
    record["timings"] = dict(
        train_s=t1 - t0,
        eval_s=time.perf_counter() - t1,
        cpu_s=time.process_time() - c0,
        threads=torch.get_num_threads(),
        lean=lean,
    )
    atomic_write_json(run_dir / "record.json", record)
    return record


def run_provenance() -> dict:
    """What a run's numbers depend on beside the code: the CPU model, the thread counts and the library
    versions (torch, numpy, faiss, open_clip, ...: swclip.runs.library_versions)."""
    import faiss
    import torch

    return dict(
        cpu_model=cpu_model(),
        torch_threads=torch.get_num_threads(),
        faiss_threads=faiss.omp_get_max_threads(),
        python=sys.version.split()[0],
        libraries=library_versions(),
    )


def experiment_provenance(runs: list[dict]) -> dict:
    """The distinct commits, CPU models and library versions of the finished runs (one value each when the
    grid ran in one go; more when it was resumed elsewhere). Runs from before provenance was recorded count
    as None."""
    prov = [r.get("provenance") or {} for r in runs]
    libs = sorted({k for p in prov for k in p.get("libraries", {})})
    return dict(
        git_commits=sorted({str(r.get("git_commit")) for r in runs}),
        cpu_models=sorted({str(p.get("cpu_model")) for p in prov}),
        libraries={k: sorted({str(p.get("libraries", {}).get(k)) for p in prov}) for k in libs},
        threads=sorted({f"torch {p.get('torch_threads')}, faiss {p.get('faiss_threads')}" for p in prov}),
    )


# --------------------------------------------------------------------------- the grid


def _record_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / name / "record.json"


def _ready(job: dict, records: dict, cfg: ExperimentConfig) -> dict | None:
    """The job with its dependent parameters filled in, or None while it waits. Raises KeyError when a
    dependency failed (the caller skips the job)."""
    if any(a not in records for a in job["after"]):
        return None
    if job["kind"] in (SWCLIP_NC, SWCLIP_LONG):  # SW-CLIP's validation-chosen σ (and kernel) of this seed
        sweep = [records[a] for a in job["after"] if "val" in records[a]]
        if not sweep:
            raise KeyError("no finished sweep run to choose σ from")
        best = min(sweep, key=lambda r: r["val"][cfg.select_metric])
        return {**job, "sigma_m": best["sigma_m"], "kernel": best.get("kernel") or "gaussian"}
    return job


def run_experiment(
    out,
    cfg: ExperimentConfig | None = None,
    workers: int = 2,
    progress: bool = True,
    artefacts: bool = False,
    bar=None,
) -> dict:
    """Run (or resume) the grid; -> the experiment dict (also written to ``out``/experiment.json).

    workers: runs trained at once, each in its own spawned process with one torch thread
    (as the demo bundle: on 2 cores two one-thread runs beat one two-thread run after another).
    artefacts: each run also writes the app's evaluation artefacts on test (see ``run_job``); the
    recorded numbers are the same. bar: a tqdm bar to advance (``run_grid``'s, over several
    experiments; it is left open); default: one of its own when ``progress``.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    cfg = cfg or ExperimentConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "experiment_config.json"
    cfg_dict = dataclasses.asdict(cfg)
    if saved.is_file():
        old = json.loads(saved.read_text())
        fixed = (
            "covariance",
            "world_seed",
            "cities",
            "samples_per_city",
            "image_size",
            "test_frac",
            "val_frac",
            "block_m",
            "buffer_m",
            "split_seed",
            "steps",
            "batch_size",
        )
        changed = [k for k in fixed if json.dumps(old.get(k)) != json.dumps(cfg_dict[k])]
        if changed:
            raise ValueError(f"{out} holds an experiment with a different {', '.join(changed)}; use another --out")
    saved.write_text(json.dumps(cfg_dict, indent=1))
    split_csv = prepare(out, cfg, progress)
    runs_dir = out / "runs"
    jobs = plan_jobs(cfg)
    records: dict = {}
    for job in jobs:
        p = _record_path(runs_dir, job["name"])
        if p.is_file():
            records[job["name"]] = json.loads(p.read_text())
    pending = [j for j in jobs if j["name"] not in records]
    failed: dict = {}
    own_bar = bar is None and progress
    if own_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=f"experiment {cfg.name}", unit="run")
    base = dict(experiment=cfg_dict, split_csv=str(split_csv), runs_dir=str(runs_dir), artefacts=bool(artefacts))
    t_start = time.perf_counter()
    pool = ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"))
    running: dict = {}
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= max(1, workers):
                    break
                if any(a in failed for a in job["after"]):
                    failed[job["name"]] = f"skipped: {', '.join(a for a in job['after'] if a in failed)} failed"
                    pending.remove(job)
                    continue
                try:
                    ready = _ready(job, records, cfg)
                except KeyError as err:
                    failed[job["name"]] = f"skipped: {err.args[0]}"
                    pending.remove(job)
                    continue
                if ready is None:
                    continue
                running[pool.submit(run_job, {**base, **ready})] = job
                pending.remove(job)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                try:
                    records[job["name"]] = fut.result()
                except BrokenProcessPool:
                    raise  # a worker died (killed, out of memory): stop; a restart resumes
                except Exception as err:  # one broken run must not lose the grid; it is reported
                    failed[job["name"]] = f"{type(err).__name__}: {err}"
                    print(f"[experiment] {job['name']} failed: {failed[job['name']]}", file=sys.stderr, flush=True)
                if bar is not None:
                    bar.update(1)
                    r = records.get(job["name"], {})
                    if "test" in r:
                        bar.write(
                            f"[experiment {cfg.name}] {job['name']}: val median {r['val']['median_m']:.0f} m, "
                            f"test median {r['test']['median_m']:.0f} m ({r['timings']['cpu_s']:.0f} s CPU)"
                        )
                write_experiment(out, cfg, jobs, records, failed, split_csv, time.perf_counter() - t_start)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if own_bar:
            bar.close()
    exp = write_experiment(out, cfg, jobs, records, failed, split_csv, time.perf_counter() - t_start, summary=True)
    if progress:
        print(summary_markdown(exp))
    return exp


def grid_plan(grid: str, **size) -> list[ExperimentConfig]:
    """GRIDS[grid]'s experiments, with ``size`` (ExperimentConfig fields such as steps, batch_size,
    samples_per_city, block_m: for tests; the protocol's fields are the grid's) replacing each default."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
    return [dataclasses.replace(cfg, **size) for cfg in GRIDS[grid]]


def run_grid(
    out, grid: str = "full", workers: int = 2, progress: bool = True, artefacts: bool = False, results_dir=None, **size
) -> list[dict]:
    """Run (or resume) every experiment of GRIDS[grid], one after another, each in ``out``/<name>/,
    under one progress bar over all their runs; -> their experiment dicts.

    After each experiment its experiment.json is copied to ``results_dir``/experiment-<name>.json
    (default ``out``; ``benchmarks/results`` replaces the committed ones). A restart skips every
    finished run, as ``run_experiment`` does.
    """
    import shutil

    out = Path(out)
    results_dir = Path(results_dir) if results_dir is not None else out
    results_dir.mkdir(parents=True, exist_ok=True)
    cfgs = grid_plan(grid, **size)
    bar = None
    if progress:
        from tqdm import tqdm

        planned = sum(len(plan_jobs(c)) for c in cfgs)
        done = sum(1 for c in cfgs for j in plan_jobs(c) if _record_path(out / c.name / "runs", j["name"]).is_file())
        bar = tqdm(total=planned, initial=done, desc=f"grid {grid}", unit="run")
    t0 = time.perf_counter()
    exps = []
    try:
        for cfg in cfgs:
            exps.append(
                run_experiment(out / cfg.name, cfg, workers=workers, progress=progress, artefacts=artefacts, bar=bar)
            )
            shutil.copyfile(out / cfg.name / "experiment.json", results_dir / f"experiment-{cfg.name}.json")
    finally:
        if bar is not None:
            bar.close()
    if progress:
        runs = sum(e["status"]["finished"] for e in exps)
        print(
            f"grid {grid}: {runs} runs in {len(exps)} experiments, {time.perf_counter() - t0:.0f} s wall in this call; "
            f"wrote {', '.join(str(results_dir / f'experiment-{c.name}.json') for c in cfgs)}"
        )
    return exps


SUMMARY_BOOT = 1000  # bootstrap resamples of the summary written into experiment.json (seed 0)


def write_experiment(
    out: Path,
    cfg: ExperimentConfig,
    jobs: list,
    records: dict,
    failed: dict,
    split_csv: Path,
    elapsed_s: float,
    summary: bool = False,
) -> dict:
    """Assemble experiment.json from the finished records (atomically). -> the dict.

    summary: also the tables with their intervals, overall and per city (``experiment_summary``; tens of
    seconds for a full experiment, so only at the end of ``run_experiment``, not after every run).
    """

    table = split_table(split_csv)  # read once per process: this runs after every finished run
    test = table[table["split"] == "test"]
    split_meta = json.loads((split_csv.parent / "split.json").read_text())
    oracle = oracle_errors_m(table)

    exp = dict(
        format=FORMAT,
        version=VERSION,
        name=cfg.name,
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        status=dict(
            planned=len(jobs),
            finished=sum(1 for j in jobs if j["name"] in records),
            failed=failed,
            complete=all(j["name"] in records for j in jobs),
            elapsed_s=round(elapsed_s, 1),
        ),
        protocol=dict(
            dataclasses.asdict(cfg),
            selection=f"per seed: σ with the lowest validation {cfg.select_metric} "
            "among the sweep; λ likewise among the NC runs at that σ",
            machine=dict(cpus=os.cpu_count(), cpu_model=cpu_model(), threads_per_run=1),
        ),
        # the code the finished runs were trained with (usually one commit; more when resumed across commits)
        git_commits=sorted({str(records[j["name"]].get("git_commit")) for j in jobs if j["name"] in records}),
        provenance=experiment_provenance([records[j["name"]] for j in jobs if j["name"] in records]),
        world=world_summary(split_csv.parent),
        split=split_meta,
        oracle_test={k: v for k, v in summarize(oracle).items() if k in RECORD_KEYS},
        test_rows=dict(
            id=test["id"].astype(str).tolist(),
            city=test["city"].astype(str).tolist(),
            block=test["block"].astype(str).tolist(),
        ),
        runs=[records[j["name"]] for j in jobs if j["name"] in records],
    )
    if summary and exp["runs"]:
        exp["summary"] = experiment_summary(exp, n_boot=SUMMARY_BOOT, seed=0)
    atomic_write_json(out / "experiment.json", exp)
    return exp


def summary_markdown(exp: dict) -> str:
    """The printed summary: per config, mean ± sd across seeds of val and test metrics, and Δ test median
    against its baseline with the two-level interval (the reported one) and the block-only one."""

    df = summary_table(exp)
    head = (
        "| config | vs | seeds | val median (m) | test median (m) | test acc@250 m "
        "| Δ test median [95 % two-level CI] | block-only CI (seeds fixed) | role |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---|---|---|"]
    for _, r in df.iterrows():
        ci, block = "", ""
        if np.isfinite(r["d_median_m"]):
            ci = f"{r['d_median_m']:+.0f} [{r['d_median_m_lo']:+.0f}, {r['d_median_m_hi']:+.0f}]"
            block = f"[{r['d_median_m_block_lo']:+.0f}, {r['d_median_m_block_hi']:+.0f}]"
        lines.append(
            f"| {r['config']} | {r['vs']} | {r['n_seeds']} | {r['val_median_m']:.0f} ± {r['val_median_m_sd']:.0f} | "
            f"{r['test_median_m']:.0f} ± {r['test_median_m_sd']:.0f} | "
            f"{r['test_acc@250m']:.3f} ± {r['test_acc@250m_sd']:.3f} | {ci} | {block} | {r['role']} |"
        )
    st = exp["status"]
    lines.append(
        f"\n{st['finished']} of {st['planned']} runs finished"
        + ("" if st["complete"] else " (PARTIAL)")
        + (f"; failed: {st['failed']}" if st["failed"] else "")
        + f"\nHeadline (pre-registered): {HEADLINE[0]} vs {HEADLINE[1]}; every other row is exploratory "
        "(no correction for multiple comparisons)."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line (``swclip experiment``)


PROTOCOL_OPTIONS = (
    "name",
    "covariance",
    "seeds",
    "sigmas",
    "nc_weights",
    "buffer",
    "world_seed",
    "no_variogram",
    "no_semivariogram",
    "quick",
)  # what a --grid fixes
SIZE_OPTIONS = dict(steps="steps", batch_size="batch_size", samples_per_city="samples_per_city", block="block_m")


def configure(parser) -> None:
    d = ExperimentConfig()
    parser.description = (
        "Train and evaluate a grid of configs x seeds on the demo world (CLIP, SW-CLIP over a σ sweep, SW-CLIP at the "
        "variogram-suggested σ, SW-CLIP+NC at the validation-chosen σ, semivariogram-weighted CLIP), with spatial "
        "train/val/test blocks; writes <out>/experiment.json and prints a summary. Restarting skips finished runs. "
        "--grid full runs the whole evidence grid (docs/evidence.md) in one command: the main world with the "
        "controls (tuned CLIP, "
        "label smoothing, shuffled distances), both kernels and 4x-step runs; the exponential world with both "
        "kernels; the 30 m buffer (296 runs)."
    )
    parser.add_argument(
        "--out",
        required=True,
        help="experiment folder (world, runs, experiment.json); with --grid, "
        "the folder of the grid's experiments (<out>/<name>/)",
    )
    parser.add_argument(
        "--grid",
        choices=sorted(GRIDS),
        default=None,
        help="run a whole grid of experiments (full: gaussian-b100, exponential-b100, gaussian-b30, "
        "each at its protocol's seeds, σ, controls, kernels and long runs) under one progress bar; writes "
        "<results>/experiment-<name>.json for each",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="with --grid: where the experiment-<name>.json copies go "
        "(default: --out; benchmarks/results replaces the committed ones)",
    )
    parser.add_argument("--name", default=None, help="experiment name (default: <covariance>-b<buffer>)")
    parser.add_argument(
        "--covariance",
        choices=("gaussian", "exponential"),
        default=None,
        help=f"world's field covariance (default {d.covariance})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=f"training seeds (default {list(d.seeds)})")
    parser.add_argument(
        "--sigmas", type=float, nargs="+", default=None, help=f"σ sweep, metres (default {list(d.sigmas_m)})"
    )
    parser.add_argument(
        "--nc-weights",
        type=float,
        nargs="*",
        default=None,
        help=f"λ for SW-CLIP+NC (default {list(d.nc_weights)}; none: no NC runs)",
    )
    parser.add_argument(
        "--buffer", type=float, default=None, help=f"metres between train and held-out rows (default {d.buffer_m:g})"
    )
    parser.add_argument(
        "--block", type=float, default=None, help=f"held-out block side, metres (default {d.block_m:g})"
    )
    parser.add_argument("--steps", type=int, default=None, help=f"optimiser steps per run (default {d.steps})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"batch size (default {d.batch_size})")
    parser.add_argument(
        "--samples-per-city",
        type=int,
        default=None,
        help=f"world size: street samples per city (default {d.samples_per_city})",
    )
    parser.add_argument("--world-seed", type=int, default=None, help="world seed (default 0; the split seed stays 0)")
    parser.add_argument(
        "--no-variogram", action="store_true", default=None, help="skip SW-CLIP at the variogram-suggested σ"
    )
    parser.add_argument(
        "--no-semivariogram", action="store_true", default=None, help="skip semivariogram-weighted CLIP"
    )
    parser.add_argument(
        "--quick", action="store_true", default=None, help="2 seeds and 3 σ (50, 150, 400 m), to try it"
    )
    parser.add_argument(
        "--artefacts",
        action="store_true",
        help="each run also writes the app's evaluation artefacts on test (predictions, embeddings, "
        "galleries, metrics.json), so it opens in the app; slower, same numbers",
    )
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one torch thread each (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _given(args, dest: str, default):
    value = getattr(args, dest)
    return default if value is None else value


def size_from_args(args) -> dict:
    """The size options given on the command line, as ExperimentConfig fields."""
    return {field: getattr(args, dest) for dest, field in SIZE_OPTIONS.items() if getattr(args, dest) is not None}


def config_from_args(args) -> ExperimentConfig:
    d = ExperimentConfig()
    cfg = ExperimentConfig(
        covariance=_given(args, "covariance", d.covariance),
        world_seed=_given(args, "world_seed", d.world_seed),
        buffer_m=_given(args, "buffer", d.buffer_m),
        seeds=tuple(_given(args, "seeds", d.seeds)),
        sigmas_m=tuple(_given(args, "sigmas", d.sigmas_m)),
        nc_weights=tuple(_given(args, "nc_weights", d.nc_weights)),
        variogram=not args.no_variogram,
        semivariogram=not args.no_semivariogram,
        **size_from_args(args),
    )
    if args.quick:
        cfg = dataclasses.replace(cfg, **QUICK)
    return dataclasses.replace(
        cfg, name=args.name or f"{cfg.covariance}-b{cfg.buffer_m:g}" + ("-quick" if args.quick else "")
    )


def run(args) -> int:
    if args.grid is not None:
        fixed = [f"--{o.replace('_', '-')}" for o in PROTOCOL_OPTIONS if getattr(args, o) is not None]
        if fixed:
            raise SystemExit(
                f"--grid {args.grid} fixes the protocol; drop {', '.join(fixed)} "
                "(only --steps, --batch-size, --samples-per-city and --block resize it)"
            )
        exps = run_grid(
            args.out,
            args.grid,
            workers=args.workers,
            progress=not args.quiet,
            artefacts=args.artefacts,
            results_dir=args.results,
            **size_from_args(args),
        )
        return 0 if not any(e["status"]["failed"] for e in exps) else 1
    if args.results is not None:
        raise SystemExit("--results goes with --grid (one experiment writes <out>/experiment.json)")
    exp = run_experiment(
        args.out, config_from_args(args), workers=args.workers, progress=not args.quiet, artefacts=args.artefacts
    )
    return 0 if not exp["status"]["failed"] else 1
