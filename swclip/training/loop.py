"""The training loop: one process per device, DDP across processes (torchrun).

``train(cfg)`` builds the model (``swclip.method.model.SWCLIP``), the loss
(``swclip.training.objective.build_loss``), AdamW with warmup + cosine, and runs
``cfg.steps`` optimiser steps over ``swclip.training.batches`` batches, writing
into ``<out_dir>/<run_id>/``:

    config.yaml        the resolved config
    train_log.csv      step, every loss term, loss, lr, logit_scale, sigma_m, images_per_s, step_s, data_wait_frac
    checkpoints/       every ckpt_every steps and at the end (swclip.training.checkpoint.save_checkpoint)
    model.safetensors + manifest.json   the final model, through swclip.runs.save_run

Device handling. CUDA: bf16 autocast, TF32 matmuls, channels-last images,
fused AdamW, optional torch.compile, pinned memory. CPU: the same code in
float32. Under torchrun (WORLD_SIZE > 1) the process group is NCCL on CUDA and
gloo on CPU; the losses gather features across ranks themselves, so the model
is wrapped in DDP only for the gradient all-reduce.

Resume. ``resume=...`` restores model, optimiser, scaler, scheduler, RNG
states, the loss's own state (the semivariogram memory bank and the data of
its last fit) and the data position (epoch, batch), all derived from the
checkpoint's step, so a run killed at any point and resumed ends with the
weights of an uninterrupted run.

One concept, the training loop (its step, its log, its checkpoints' use), so
one module past 400 lines; the pieces it calls live beside it in training/.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

import torch

from swclip.data import read_osv5m, read_table, table_hash
from swclip.geo import PLACE_TOLERANCE_M
from swclip.io import RunError, resolve_inside
from swclip.loss_names import SOFT_LABEL_LOSSES, SWCLIP_NC
from swclip.method.model import build_model
from swclip.runs import CONFIG, clear_run, refuse_existing, save_run, update_manifest
from swclip.training.batches import CLIP_MEAN, CLIP_STD, make_train_data
from swclip.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    unwrap,
)
from swclip.training.config import TrainConfig, config_to_dict, save_config, validate_config
from swclip.training.distributed import Dist, autocast_dtype, init_distributed, pick_device, setup_device
from swclip.training.objective import build_loss, sigma_at
from swclip.training.optim import (
    NonFiniteLossError,
    build_optimizer,
    build_scheduler,
    clamp_logit_scale,
    load_optimizer_state,
)

# --------------------------------------------------------------------------- model and data


def image_spec(model) -> tuple[int, tuple, tuple]:
    """(image_size, mean, std) the image tower expects (open_clip sets them on the tower)."""
    m = unwrap(model)
    visual = getattr(m, "visual", None)
    size = getattr(m, "image_size", None) or getattr(visual, "image_size", None) or 224
    if isinstance(size, (tuple, list)):
        size = size[0]
    mean = tuple(getattr(visual, "image_mean", None) or CLIP_MEAN)
    std = tuple(getattr(visual, "image_std", None) or CLIP_STD)
    return int(size), mean, std


def read_source(
    table: str,
    root: str | None = None,
    format: str = "table",
    check_images: str = "header",
    drop_invalid: bool = False,
    data_root: str | None = None,
    place_tolerance_m: float = PLACE_TOLERANCE_M,
):
    """The whole sample table of a data source (all splits).

    format "table": a CSV / TSV / parquet file read by swclip.data.read_table (images under root,
    default the table's folder). "osv5m": the OSV-5M folder ``root`` (``table`` unused), its train
    and test CSVs together, with split = train / test.
    drop_invalid: drop the rows validation flags, and say on stderr how many and why, instead of stopping.
    place_tolerance_m: a table without place_id gets one from its coordinates rounded to this (metres).
    data_root: the one trusted folder; the table and the image root must lie inside it, symlinks resolved
    (RunError naming the symlink otherwise).
    """
    import pandas as pd

    check = False if check_images == "none" else check_images
    if format == "osv5m":
        if not root:
            raise ValueError("data.format=osv5m needs data.root, the OSV-5M folder (train.csv, test.csv, images/)")
        if data_root:
            resolve_inside(data_root, root, "data.root", "data root")
        parts = [
            read_osv5m(root, s, check_images=check, drop_invalid=drop_invalid)
            for s in ("train", "test")
            if (Path(root) / f"{s}.csv").is_file()
        ]
        if not parts:
            raise FileNotFoundError(f"{root}: no train.csv or test.csv; not an OSV-5M folder")
        out = pd.concat(parts, ignore_index=True)
        out.attrs["root"] = str(Path(root).resolve())
    else:
        if not table:
            raise ValueError("data.table is empty: give a sample table (CSV / parquet) or set data.synthetic=true")
        if data_root:
            resolve_inside(data_root, table, "sample table", "data root")
            resolve_inside(data_root, root or Path(table).parent, "image root", "data root")
        with warnings.catch_warnings():  # the reader's multi-line report; one line per file below says it
            warnings.simplefilter("ignore" if drop_invalid else "default", UserWarning)
            out = read_table(
                table, root or None, check_images=check, drop_invalid=drop_invalid, place_tolerance_m=place_tolerance_m
            )
        parts = [out]
    if drop_invalid:  # one line per file: how many rows went, and why
        for part in parts:
            r = part.attrs.get("validation") or {}
            why = ", ".join(f"{k} {v['count']}" for k, v in (r.get("problems") or {}).items()) or "none invalid"
            n_dropped, n_rows = r.get("n_dropped", 0), r.get("n_rows")
            print(f"{r.get('source')}: dropped {n_dropped} of {n_rows} row(s) ({why})", file=sys.stderr)
    return out


def read_train_table(cfg: TrainConfig, split: str | None = None):
    """The sample table named by cfg.data, filtered to ``split`` (default: the training split)."""
    d = cfg.data
    table = read_source(
        d.table, d.root, d.format, d.check_images, d.drop_invalid, d.data_root or None, d.place_tolerance_m
    )
    split = d.train_split if split is None else split
    if split and "split" in table.columns:
        table = table[table["split"] == split].reset_index(drop=True)
        if len(table) == 0:
            raise ValueError(f"no rows with split == {split!r} in {d.table or d.root}")
    return table


def default_run_id(cfg: TrainConfig) -> str:
    name = cfg.loss.name.replace("+", "-")
    if cfg.loss.name in SOFT_LABEL_LOSSES:
        name += f"-s{cfg.loss.sigma_m:g}"
    return f"{name}-seed{cfg.seed}"


# --------------------------------------------------------------------------- logging


def objective(terms: dict):
    """The scalar that is backpropagated: the sum of the terms named ``*_loss``.

    A loss may return further named scalars (statistics such as the semivariogram loss's
    false-negative fraction); they are logged like the loss terms but never optimised.
    """
    return sum(v for k, v in terms.items() if k.endswith("_loss"))


class StepMetrics:
    """Every step's scalars kept as device tensors and brought to the host together.

    ``add`` costs no host sync; ``collect`` (every ``log_every`` steps, before every
    checkpoint and at the end, on every rank at the same steps) stacks them, averages them
    over ranks with one all_reduce, copies them to the host once, runs the NaN guard and
    returns one row per step. The guard names the first step and term that is not finite;
    as it runs before each checkpoint is written, the last checkpoint on disk predates it.
    Throughput columns (images_per_s, step_s, data_wait_frac) are averages over the
    interval since the previous collect: a single step's host time means little while
    the GPU runs asynchronously.
    """

    def __init__(self, world_size: int = 1, check_grad_norm: bool = True):
        self.world_size, self.check_grad_norm = world_size, check_grad_norm
        self.pending: list = []
        self.t_data = 0.0
        self.t_start = time.perf_counter()

    def add(self, step: int, epoch: int, terms: dict, logit_scale, grad_norm, host: dict, t_data: float) -> None:
        scalars = {k: v.detach().float().reshape(()) for k, v in terms.items()}
        scalars["logit_scale"] = logit_scale.detach().float().reshape(())
        scalars["grad_norm"] = grad_norm.detach().float().reshape(())
        self.pending.append((step, epoch, scalars, host))
        self.t_data += t_data

    def restart_clock(self) -> None:
        """Start the next interval now (a checkpoint's write time is not training time)."""
        self.t_start, self.t_data = time.perf_counter(), 0.0

    def collect(self, global_batch: int) -> list[dict]:
        if not self.pending:
            return []
        keys = list(self.pending[0][2])
        vals = torch.stack([torch.stack([p[2][k] for k in keys]) for p in self.pending])  # (n, K) on the device
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(vals)
            vals = vals / self.world_size
        host = vals.cpu().tolist()  # the one host sync of the interval
        interval_s = max(time.perf_counter() - self.t_start, 1e-9)
        n = len(self.pending)
        timing = {
            "images_per_s": global_batch * n / interval_s,
            "step_s": interval_s / n,
            "data_wait_frac": min(self.t_data / interval_s, 1.0),
        }
        rows = []
        for (step, epoch, _, extra), row_vals in zip(self.pending, host):
            named = dict(zip(keys, row_vals))
            for k in keys:
                bad = not math.isfinite(named[k])
                if bad and k.endswith("_loss"):
                    raise NonFiniteLossError(
                        f"step {step}: loss term {k!r} is {named[k]}; training stopped. The last good checkpoint "
                        "is left as it was; lower optim.lr or check the data."
                    )
                if bad and k == "grad_norm" and self.check_grad_norm:
                    raise NonFiniteLossError(
                        f"step {step}: the gradient norm is {named[k]}; training stopped. The last good checkpoint "
                        "is left as it was; lower optim.lr or check the data."
                    )
            loss = sum(v for k, v in named.items() if k.endswith("_loss"))
            rows.append({"step": step, "epoch": epoch, "loss": loss, **named, **extra, **timing})
        self.pending = []
        self.restart_clock()
        return rows


class TrainLog:
    """train_log.csv and TensorBoard event files (rank 0 only): one row per step.

    Columns: step, epoch, loss (the sum of the *_loss terms), every scalar the loss returns,
    grad_norm, lr, logit_scale, sigma_m, images_per_s, step_s, data_wait_frac. A column that
    first appears later (a statistic a loss reports once it has fitted something) widens the
    header; the file is then rewritten. On resume, rows after the checkpoint's step are
    dropped (they will be redone). TensorBoard scalars go to ``<run>/tensorboard`` under
    ``train/<column>``.
    """

    BASE = ("step", "epoch", "loss")
    TAIL = ("grad_norm", "lr", "logit_scale", "sigma_m", "images_per_s", "step_s", "data_wait_frac")

    def __init__(self, path: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path, self.fields = path, None
        if resume_step is not None and path.is_file():
            with path.open() as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [r for r in reader if int(r["step"]) <= resume_step]
            self._write_all(kept)
        elif path.exists():
            path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "tensorboard is not installed: pip install -r requirements.txt (it pins tensorboard), "
                    "or set tensorboard=false"
                ) from e
            self.tb = SummaryWriter(
                str(path.parent / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1
            )

    def _write_all(self, rows):
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields, restval="")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        names = list(dict.fromkeys(k for r in rows for k in r))
        new_fields = [k for k in names if k not in (self.fields or [])]
        if self.fields is None:
            terms = [k for k in names if k not in self.BASE and k not in self.TAIL]
            self.fields = list(self.BASE) + terms + [k for k in self.TAIL if k in names]
        elif new_fields:  # widen the header: rewrite what is there with empty cells for the new columns
            old = []
            if self.path.is_file():
                with self.path.open() as f:
                    old = list(csv.DictReader(f))
            tail = [k for k in self.fields if k in self.TAIL]
            self.fields = [k for k in self.fields if k not in self.TAIL] + new_fields + tail
            self._write_all(old)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore", restval="")
            if new:
                w.writeheader()
            w.writerows(rows)
        if self.tb is not None:
            for row in rows:
                for k, v in row.items():
                    if k not in ("step", "epoch"):
                        self.tb.add_scalar(f"train/{k}", v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- one step


class Trainer:
    """Model, loss, optimiser, scheduler and scaler for one process, and the optimiser step.

    ``step(batch)`` runs forward, loss, backward (over ``accum_steps``
    micro-batches), unscale, clip, optimiser and scheduler step, and the
    logit-scale clamp; it returns the loss terms (averaged over micro-batches,
    this rank's, as device tensors: nothing in a step waits for the GPU) and
    keeps the gradient norm in ``last_grad_norm``. train() and the step
    benchmark (swclip.workflows.bench) both drive this class.
    """

    def __init__(self, cfg: TrainConfig, dist_info: Dist | None = None, device: torch.device | None = None):
        self.cfg, self.dist = cfg, dist_info or Dist()
        self.device = device or pick_device(cfg.device, self.dist.local_rank)
        setup_device(self.device, cfg.tf32)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        seed_everything(cfg.seed)  # same initial weights on every rank
        self.model = build_model(cfg.model)
        self.model_cfg = self.model.config
        self.model.to(self.device)
        # the memory layout is fixed before the optimiser exists and before any state is loaded into it,
        # so parameters, gradients and AdamW's moments share strides (the fused kernel checks this)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg.loss, self.dist.world_size, self.dist.rank, model=self.model, seed=cfg.seed).to(
            self.device
        )
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.steps)
        if hasattr(self.loss_fn, "optimizer_step"):  # the semivariogram loss refits every N optimiser steps
            self.optimizer.register_step_post_hook(lambda *_: self.loss_fn.optimizer_step())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step_count = 0
        self._wrapped = None

    @property
    def train_model(self):
        """The model as the step runs it: DDP across ranks, compiled if asked (built once)."""
        if self._wrapped is None:
            m = self.model
            if self.dist.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                m = DDP(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.cfg.compile:
                m = torch.compile(m, backend=self.cfg.compile_backend)
            self._wrapped = m
        return self._wrapped

    def state(self) -> dict:
        """Optimiser, scheduler, scaler and loss state (this rank's RNG is added by the caller)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": dict(self.loss_fn.state_dict()),
        }

    def load(self, ckpt: Path) -> int:
        """Restore from a checkpoint folder; -> its step."""
        weights, state, meta = load_checkpoint(ckpt, map_location="cpu")
        self.model.load_state_dict(weights)
        load_optimizer_state(self.optimizer, state["optimizer"])
        match_state_layout(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.loss_fn.load_state_dict(state["loss"])
        set_rng_state(state["rng"][min(self.dist.rank, len(state["rng"]) - 1)])
        self.step_count = int(meta["step"])
        self.resumed_meta = meta
        return self.step_count

    def step(self, batch: dict) -> tuple[dict, dict]:
        """One optimiser step on ``batch`` {"images" (B, 3, H, W), "latlon" (B, 2)[, "tokens" (B, L)]}.

        -> (loss terms, last model output). "tokens": the locations as text tokens, made by the data
        pipeline for a text tower (swclip.training.batches), so the model's forward sees tensors only.
        """
        cfg, model = self.cfg, self.train_model
        model.train()
        self.loss_fn.train()
        if cfg.loss.name in SOFT_LABEL_LOSSES:
            self.loss_fn.sigma_m = sigma_at(cfg.loss, self.step_count, cfg.steps)
        images = batch["images"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        n_micro = cfg.optim.accum_steps
        micro = images.shape[0] // n_micro
        terms_sum: dict = {}
        for m in range(n_micro):
            sl = slice(m * micro, (m + 1) * micro)
            last = m == n_micro - 1
            ctx = model.no_sync() if (not last and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    tokens = batch.get("tokens")
                    out = model(images[sl], batch["latlon"][sl], tokens=None if tokens is None else tokens[sl])
                    terms = self.loss_fn(**out)
                self.scaler.scale(objective(terms) / n_micro).backward()
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v.detach() / n_micro
        self.scaler.unscale_(self.optimizer)
        # the norm is logged every step and checked by the NaN guard at the next log collect, not here:
        # testing it now would wait for the GPU on every step
        self.last_grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        clamp_logit_scale(self.model, cfg.optim.logit_scale_max)
        self.step_count += 1
        return terms_sum, out


def match_state_layout(optimizer) -> None:
    """Give every per-parameter optimiser tensor its parameter's strides.

    ``Optimizer.load_state_dict`` keeps the strides the state was saved with, so moments saved
    from a contiguous (CPU, channels_last=false) model would not match channels-last parameters,
    and the other way round; fused AdamW refuses such a mix.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


# --------------------------------------------------------------------------- the loop


def agree_resume(resume: str | None, run_dir: Path, dist_info: Dist) -> Path | None:
    """The checkpoint every rank resumes from: rank 0 decides, the others follow or all fail together.

    Only rank 0 writes checkpoints, so only its run folder is the truth: it resolves
    ``resume`` (``auto``, a run folder or a checkpoint folder) and broadcasts the step. Each
    rank then looks for that very checkpoint (``<run_dir>/checkpoints/step_X`` for ``auto``,
    the same path otherwise). If any rank cannot see it, e.g. nodes without a shared
    filesystem, every rank raises the same FileNotFoundError at once, naming the ranks and
    saying that a shared run folder is needed, instead of ranks resuming at different steps.
    """
    if dist_info.world_size == 1:
        return resolve_resume(resume, run_dir) if resume else None
    import torch.distributed as dist

    decision = [None]
    if dist_info.is_main:
        try:
            ckpt = resolve_resume(resume, run_dir) if resume else None
            decision[0] = {"path": None if ckpt is None else str(ckpt), "name": None if ckpt is None else ckpt.name}
        except (FileNotFoundError, ValueError) as e:  # every rank raises rank 0's error
            decision[0] = {"error": f"{type(e).__name__}: {e}"}
    dist.broadcast_object_list(decision, src=0)
    d = decision[0]
    if "error" in d:
        raise FileNotFoundError(f"rank 0 could not resolve --resume {resume}: {d['error']}")
    if d["path"] is None:
        return None
    mine = run_dir / "checkpoints" / d["name"] if str(resume) == "auto" else Path(d["path"])
    seen = [None] * dist_info.world_size
    dist.all_gather_object(seen, (mine / "meta.json").is_file())
    missing = [r for r, ok in enumerate(seen) if not ok]
    if missing:
        raise FileNotFoundError(
            f"rank 0 resumes from {d['path']}, but rank(s) {missing} cannot see that checkpoint "
            f"(rank {dist_info.rank} looked at {mine}). Only rank 0 writes checkpoints, so resuming on several "
            "nodes needs a shared run folder: put out_dir on a filesystem every node mounts at the same path."
        )
    return mine


def claim_run_dir(run_dir: Path, resume: str | None, overwrite: bool, dist_info: Dist) -> bool:
    """Make ``run_dir`` this training's own; -> whether this call created it (rank 0's answer on every rank).

    A folder that holds anything is refused (swclip.runs.RunExistsError) unless ``resume`` continues it
    or ``overwrite`` asks for it, which first removes every file of the old run (swclip.runs.clear_run).
    Rank 0 decides and acts; every rank raises its error, so all ranks stop together.
    """
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it; give one of them")
    decision, error = [None], None
    if dist_info.is_main:
        try:
            created = not run_dir.exists()
            if not resume:
                if overwrite:
                    removed = clear_run(run_dir)
                    if removed:
                        print(f"{run_dir}: removed the old run ({', '.join(removed)}) (--overwrite)", file=sys.stderr)
                else:
                    refuse_existing(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            decision[0] = {"created": created}
        except (OSError, ValueError) as e:  # RunExistsError is a ValueError
            error, decision[0] = e, {"error": f"{type(e).__name__}: {e}"}
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(decision, src=0)
    if error is not None:
        raise error
    if "error" in decision[0]:
        raise RunError(f"rank 0 refused the run folder {run_dir}: {decision[0]['error']}")
    return decision[0]["created"]


def train(cfg: TrainConfig, resume: str | None = None, table=None, then=None) -> Path:
    """Train as ``cfg`` says; -> the run directory. ``table``: an already-read training table (optional).

    then: ``then(run_dir, device)`` runs on every rank once the final model is on disk, before the
    process group is torn down: the CLI's ``--evaluate`` passes swclip.training.evaluation.evaluate_run,
    which then runs on the training device, sharded over the same ranks.
    """
    validate_config(cfg)
    dist_info = init_distributed(cfg.device)
    run_id = cfg.run_id or default_run_id(cfg)
    run_dir = Path(cfg.out_dir) / run_id
    created = claim_run_dir(run_dir, resume, cfg.overwrite, dist_info)
    try:
        return _train(cfg, resume, table, then, dist_info, run_id, run_dir)
    except BaseException:
        # a run that failed before its first checkpoint leaves nothing: the folder it created goes
        if created and dist_info.is_main and not list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(cfg: TrainConfig, resume, table, then, dist_info: Dist, run_id: str, run_dir: Path) -> Path:
    """train()'s body, in the run folder claim_run_dir made this run's."""
    if dist_info.is_main:
        save_config(cfg, run_dir / CONFIG)

    tr = Trainer(cfg, dist_info)
    device = tr.device
    image_size, mean, std = image_spec(tr.model)
    if table is None and not cfg.data.synthetic:
        table = read_train_table(cfg)
    data = make_train_data(
        cfg,
        image_size,
        device,
        dist_info.rank,
        dist_info.world_size,
        mean,
        std,
        table=table,
        transform=train_transform(tr.model, cfg),
        tokenize=location_tokenizer(tr.model, table),
    )
    ckpt = agree_resume(resume, run_dir, dist_info)
    start_step = tr.load(ckpt) if ckpt is not None else 0
    if ckpt is not None:
        print(f"[rank {dist_info.rank}] resumed {run_id} from {ckpt} at step {start_step}", file=sys.stderr)

    log = (
        TrainLog(
            run_dir / "train_log.csv", resume_step=start_step if ckpt is not None else None, tensorboard=cfg.tensorboard
        )
        if dist_info.is_main
        else None
    )
    meta_base = {
        "run_id": run_id,
        "steps_per_epoch": data.steps_per_epoch,
        "world_size": dist_info.world_size,
        "config_digest": hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16],
    }
    if ckpt is not None and dist_info.is_main:
        old = tr.resumed_meta
        changed = [k for k in ("config_digest", "steps_per_epoch", "world_size") if old.get(k) != meta_base[k]]
        if changed:  # allowed (e.g. more steps), but the run is then not the uninterrupted one
            print(
                f"warning: resuming {ckpt} with a different {', '.join(changed)} than it was written with; "
                "the data order or schedule after the resume differs from an uninterrupted run",
                file=sys.stderr,
            )

    global_batch = cfg.batch_size * dist_info.world_size
    metrics = StepMetrics(dist_info.world_size, check_grad_norm=not tr.scaler.is_enabled())
    progress = None
    if cfg.progress and dist_info.is_main:
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, initial=start_step, desc=run_id, unit="step", dynamic_ncols=True)

    def flush_log() -> None:
        """Collect the pending steps on every rank (NaN guard included); rank 0 writes them."""
        rows = metrics.collect(global_batch)
        if log is not None and rows:
            log.write(rows)
            if progress is not None:
                progress.set_postfix(loss=f"{rows[-1]['loss']:.3f}", img_s=f"{rows[-1]['images_per_s']:.0f}")

    def checkpoint(step: int) -> None:
        flush_log()  # the NaN guard runs before anything is written
        states = [rng_state()]
        if dist_info.world_size > 1:  # each rank's RNG, gathered to rank 0
            import torch.distributed as dist

            gathered = [None] * dist_info.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if dist_info.is_main:
            save_checkpoint(
                run_dir,
                step,
                tr.model,
                {**tr.state(), "rng": states},
                {**meta_base, "epoch": step // data.steps_per_epoch, "batch_in_epoch": step % data.steps_per_epoch},
                keep_last=cfg.keep_last,
            )
        metrics.restart_clock()  # the checkpoint's time is not the next steps'

    step = start_step
    epoch = step // data.steps_per_epoch
    batches = data.batches(epoch, step % data.steps_per_epoch)
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            epoch += 1
            batches = data.batches(epoch, 0)
            continue
        t_data = time.perf_counter() - t0
        if cfg.fault_at_step and step == cfg.fault_at_step:  # testing aid: die as a killed job would
            flush_log()
            os.kill(os.getpid(), signal.SIGKILL)
        lr = tr.scheduler.get_last_lr()[0]  # the rate this step uses (the scheduler steps at its end)
        terms, out = tr.step(batch)
        step = tr.step_count
        metrics.add(
            step,
            epoch,
            terms,
            out["logit_scale"],
            tr.last_grad_norm,
            {"lr": lr, "sigma_m": float(getattr(tr.loss_fn, "sigma_m", 0.0))},
            t_data,
        )
        if progress is not None:
            progress.update(1)
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps:
            checkpoint(step)
        elif step % cfg.log_every == 0:
            flush_log()
    flush_log()
    if progress is not None:
        progress.close()
    if log is not None:
        log.close()
        save_final(run_dir, tr.model, cfg, table, run_id)
        record = getattr(tr.loss_fn, "record", None)
        if record is not None and record() is not None:  # the variogram the loss used, as it ended
            update_manifest(run_dir, loss_variogram=record())
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # the final model is on disk before any rank evaluates it
    if then is not None:
        then(run_dir, device)
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def location_tokenizer(model, table=None):
    """The data pipeline's tokeniser for a text location tower (None for the GPS tower).

    Returns a picklable callable (latlon (B, 2) float64, index (B,) ints) -> (B, L) long
    tensor: the template with each sample's city (the table's ``city`` column, when there is
    one) through the tower's tokenizer. Tokenising in the data pipeline, as open_clip does,
    keeps strings and ``.numpy()`` out of the model's forward, so torch.compile captures it.
    """
    import functools

    tokenizer = getattr(unwrap(model).location, "location_tokenizer", None)
    if tokenizer is None:
        return None
    cities = table["city"].astype(str).to_numpy() if table is not None and "city" in table.columns else None
    return functools.partial(_tokenize_rows, tokenizer, cities)


def _tokenize_rows(tokenizer, cities, latlon, index):
    import numpy as np

    return tokenizer(latlon, None if cities is None else cities[np.asarray(index)].tolist())


def train_transform(model, cfg: TrainConfig):
    """Per-sample transform for the file-backed loader: the model's deterministic preprocess
    (augmentation runs per batch)."""
    if cfg.data.synthetic or cfg.data.preload:
        return None
    return unwrap(model).preprocess_val


def save_final(run_dir: Path, model, cfg: TrainConfig, table, run_id: str) -> None:
    """The final weights + manifest through swclip.runs.save_run."""

    manifest = {
        "run_id": run_id,
        "loss": config_to_dict(cfg)["loss"],
        "optim": config_to_dict(cfg)["optim"],
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "sigma_m": cfg.loss.sigma_m if cfg.loss.name in SOFT_LABEL_LOSSES else 0.0,
        "nc_weight": cfg.loss.nc_weight if cfg.loss.name == SWCLIP_NC else 0.0,
        "data": {
            "table": str(cfg.data.table),
            "root": str(cfg.data.root),
            "data_root": str(Path(cfg.data.data_root).resolve()) if cfg.data.data_root else "",
            "drop_invalid": cfg.data.drop_invalid,
            "format": cfg.data.format,
            "check_images": cfg.data.check_images,
            "train_split": cfg.data.train_split,
            "eval_split": cfg.data.eval_split,
            "gallery": cfg.data.gallery,
            "synthetic": cfg.data.synthetic,
            "hash": table_hash(table) if table is not None else None,
            "n_train": int(len(table)) if table is not None else None,
        },
    }
    save_run(run_dir, unwrap(model), manifest)
