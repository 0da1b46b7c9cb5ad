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
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from swclip.data import read_osv5m, read_table, table_hash
from swclip.method.model import build_model
from swclip.runs import save_run
from swclip.training.batches import CLIP_MEAN, CLIP_STD, make_train_data
from swclip.training.checkpoint import (
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
from swclip.training.optim import NonFiniteLossError, build_optimizer, build_scheduler, check_finite, clamp_logit_scale

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


def read_source(table: str, root: Optional[str] = None, format: str = "table", check_images: str = "header"):
    """The whole sample table of a data source (all splits).

    format "table": a CSV / TSV / parquet file read by swclip.data.read_table (images under root,
    default the table's folder). "osv5m": the OSV-5M folder ``root`` (``table`` unused), its train
    and test CSVs together, with split = train / test.
    """
    import pandas as pd


    check = False if check_images == "none" else check_images
    if format == "osv5m":
        if not root:
            raise ValueError("data.format=osv5m needs data.root, the OSV-5M folder (train.csv, test.csv, images/)")
        parts = [read_osv5m(root, s, check_images=check) for s in ("train", "test") if (Path(root) / f"{s}.csv").is_file()]
        if not parts:
            raise FileNotFoundError(f"{root}: no train.csv or test.csv; not an OSV-5M folder")
        out = pd.concat(parts, ignore_index=True)
        out.attrs["root"] = str(Path(root).resolve())
        return out
    if not table:
        raise ValueError("data.table is empty: give a sample table (CSV / parquet) or set data.synthetic=true")
    return read_table(table, root or None, check_images=check)


def read_train_table(cfg: TrainConfig, split: Optional[str] = None):
    """The sample table named by cfg.data, filtered to ``split`` (default: the training split)."""
    d = cfg.data
    table = read_source(d.table, d.root, d.format, d.check_images)
    split = d.train_split if split is None else split
    if split and "split" in table.columns:
        table = table[table["split"] == split].reset_index(drop=True)
        if len(table) == 0:
            raise ValueError(f"no rows with split == {split!r} in {d.table or d.root}")
    return table


def default_run_id(cfg: TrainConfig) -> str:
    name = cfg.loss.name.replace("+", "-")
    if cfg.loss.name in ("swclip", "swclip+nc"):
        name += f"-s{cfg.loss.sigma_m:g}"
    return f"{name}-seed{cfg.seed}"


# --------------------------------------------------------------------------- logging


class TrainLog:
    """train_log.csv (rank 0 only): one row per step; the header grows with the loss terms of the first row.

    On resume, rows after the checkpoint's step are dropped (they will be redone).
    """

    BASE = ("step", "epoch", "loss")
    TAIL = ("lr", "logit_scale", "sigma_m", "images_per_s", "step_s", "data_wait_frac")

    def __init__(self, path: Path, resume_step: Optional[int] = None):
        self.path, self.rows, self.fields = path, [], None
        if resume_step is not None and path.is_file():
            with path.open() as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [r for r in reader if int(r["step"]) <= resume_step]
            self._write_all(kept)
        elif path.exists():
            path.unlink()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:  # tensorboard is optional
            pass

    def _write_all(self, rows):
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def add(self, row: dict) -> None:
        if self.fields is None:
            terms = [k for k in row if k not in self.BASE and k not in self.TAIL]
            self.fields = list(self.BASE) + terms + list(self.TAIL)
        self.rows.append(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def flush(self) -> None:
        if not self.rows:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(self.rows)
        self.rows = []
        if self.tb is not None:
            self.tb.flush()


# --------------------------------------------------------------------------- one step


class Trainer:
    """Model, loss, optimiser, scheduler and scaler for one process, and the optimiser step.

    ``step(batch)`` runs forward, loss, backward (over ``accum_steps``
    micro-batches), unscale, clip, optimiser and scheduler step, and the
    logit-scale clamp; it returns the loss terms (averaged over micro-batches,
    this rank's). train() and train/bench.py both drive this class.
    """

    def __init__(self, cfg: TrainConfig, dist_info: Optional[Dist] = None, device: Optional[torch.device] = None):
        validate_config(cfg)
        if cfg.loss.name == "swclip+nc" and cfg.loss.nc_weight <= 0:
            raise ValueError("loss swclip+nc needs loss.nc_weight > 0")
        self.cfg, self.dist = cfg, dist_info or Dist()
        self.device = device or pick_device(cfg.device, self.dist.local_rank)
        setup_device(self.device)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        seed_everything(cfg.seed)  # same initial weights on every rank
        self.model = build_model(cfg.model)
        self.model_cfg = self.model.config
        self.model.to(self.device)
        self.loss_fn = build_loss(cfg.loss, self.dist.world_size, self.dist.rank).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step_count = 0
        self._wrapped = None

    @property
    def train_model(self):
        """The model as the step runs it: channels-last on CUDA, DDP across ranks, compiled if asked (built once)."""
        if self._wrapped is None:
            m = self.model
            if self.device.type == "cuda" and self.cfg.channels_last:
                m = m.to(memory_format=torch.channels_last)
            if self.dist.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                m = DDP(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.cfg.compile:
                m = torch.compile(m)
            self._wrapped = m
        return self._wrapped

    def state(self) -> dict:
        """Optimiser, scheduler, scaler and loss state (this rank's RNG is added by the caller)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "loss": dict(self.loss_fn.state_dict())}

    def load(self, ckpt: Path) -> int:
        """Restore from a checkpoint folder; -> its step."""
        weights, state, meta = load_checkpoint(ckpt, map_location="cpu")
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.loss_fn.load_state_dict(state["loss"])
        set_rng_state(state["rng"][min(self.dist.rank, len(state["rng"]) - 1)])
        self.step_count = int(meta["step"])
        self.resumed_meta = meta
        return self.step_count

    def step(self, batch: dict) -> tuple[dict, dict]:
        """One optimiser step on ``batch`` {"images" (B, 3, H, W), "latlon" (B, 2)}. -> (loss terms, last model output)."""
        cfg, model = self.cfg, self.train_model
        model.train()
        self.loss_fn.train()
        if cfg.loss.name in ("swclip", "swclip+nc"):
            self.loss_fn.sigma_m = sigma_at(cfg.loss, self.step_count, cfg.steps)
        images = batch["images"]
        if self.device.type == "cuda" and cfg.channels_last:
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
                    city = batch.get("city")
                    out = model(images[sl], batch["latlon"][sl], city=None if city is None else city[sl])
                    terms = self.loss_fn(**out)
                check_finite(terms, self.step_count + 1)
                self.scaler.scale(sum(terms.values()) / n_micro).backward()
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v.detach() / n_micro
        self.scaler.unscale_(self.optimizer)
        if cfg.optim.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            if not self.scaler.is_enabled() and not torch.isfinite(gnorm):
                raise NonFiniteLossError(f"step {self.step_count + 1}: the gradient norm is {float(gnorm)}; training "
                                            "stopped. The last good checkpoint is left as it was.")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        clamp_logit_scale(self.model, cfg.optim.logit_scale_max)
        self.step_count += 1
        return terms_sum, out


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: Optional[str] = None, table=None) -> Path:
    """Train as ``cfg`` says; -> the run directory. ``table``: an already-read training table (optional)."""
    validate_config(cfg)
    dist_info = init_distributed(cfg.device)
    run_id = cfg.run_id or default_run_id(cfg)
    run_dir = Path(cfg.out_dir) / run_id
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    tr = Trainer(cfg, dist_info)
    device = tr.device
    image_size, mean, std = image_spec(tr.model)
    if table is None and not cfg.data.synthetic:
        table = read_train_table(cfg)
    data = make_train_data(cfg, image_size, device, dist_info.rank, dist_info.world_size, mean, std, table=table,
                           transform=_train_transform(tr.model, cfg))

    # the text tower reads the city in its template ("... in London"); the GPS tower needs no names
    cities = None
    if tr.model_cfg.location_tower == "text" and table is not None and "city" in table.columns:
        cities = table["city"].astype(str).to_numpy()
    ckpt = resolve_resume(resume, run_dir) if resume else None
    start_step = tr.load(ckpt) if ckpt is not None else 0
    if ckpt is not None and dist_info.is_main:
        print(f"resumed {run_id} from {ckpt} at step {start_step}", file=sys.stderr)

    log = TrainLog(run_dir / "train_log.csv", resume_step=start_step if ckpt is not None else None) if dist_info.is_main else None
    meta_base = {"run_id": run_id, "steps_per_epoch": data.steps_per_epoch, "world_size": dist_info.world_size,
                 "config_digest": hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]}
    if ckpt is not None and dist_info.is_main:
        old = tr.resumed_meta
        changed = [k for k in ("config_digest", "steps_per_epoch", "world_size") if old.get(k) != meta_base[k]]
        if changed:  # allowed (e.g. more steps), but the run is then not the uninterrupted one
            print(f"warning: resuming {ckpt} with a different {', '.join(changed)} than it was written with; "
                  "the data order or schedule after the resume differs from an uninterrupted run", file=sys.stderr)

    def checkpoint(step: int) -> None:
        states = [rng_state()]
        if dist_info.world_size > 1:  # each rank's RNG, gathered to rank 0
            import torch.distributed as dist

            gathered = [None] * dist_info.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if dist_info.is_main:
            log.flush()
            save_checkpoint(run_dir, step, tr.model, {**tr.state(), "rng": states},
                               {**meta_base, "epoch": step // data.steps_per_epoch, "batch_in_epoch": step % data.steps_per_epoch},
                               keep_last=cfg.keep_last)

    progress = None
    if cfg.progress and dist_info.is_main:
        from tqdm import tqdm

        progress = tqdm(total=cfg.steps, initial=start_step, desc=run_id, unit="step", dynamic_ncols=True)

    global_batch = cfg.batch_size * dist_info.world_size
    step = start_step
    epoch = step // data.steps_per_epoch
    batches = data.batches(epoch, step % data.steps_per_epoch)
    t_prev = time.perf_counter()
    while step < cfg.steps:
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            epoch += 1
            batches = data.batches(epoch, 0)
            continue
        if cities is not None:
            batch["city"] = cities[batch["index"].cpu().numpy()].tolist()
        t_data = time.perf_counter() - t0
        if cfg.fault_at_step and step == cfg.fault_at_step:  # testing aid: die as a killed job would
            if log is not None:
                log.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        terms, out = tr.step(batch)
        step = tr.step_count
        if dist_info.world_size > 1:
            import torch.distributed as dist

            keys = sorted(terms)
            vals = torch.stack([terms[k].float() for k in keys])
            dist.all_reduce(vals)
            terms = {k: v / dist_info.world_size for k, v in zip(keys, vals)}
        if log is not None:
            now = time.perf_counter()
            step_s, t_prev = now - t_prev, now
            row = {"step": step, "epoch": epoch, "loss": float(sum(terms.values()))}
            row.update({k: float(v) for k, v in terms.items()})
            row.update({"lr": tr.scheduler.get_last_lr()[0], "logit_scale": float(out["logit_scale"].detach().float()),
                        "sigma_m": float(getattr(tr.loss_fn, "sigma_m", 0.0)), "images_per_s": global_batch / max(step_s, 1e-9),
                        "step_s": step_s, "data_wait_frac": min(t_data / max(step_s, 1e-9), 1.0)})
            log.add(row)
            if step % cfg.log_every == 0:
                log.flush()
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{row['images_per_s']:.0f}")
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps:
            checkpoint(step)
            t_prev = time.perf_counter()  # the checkpoint's time is not the next step's
    if progress is not None:
        progress.close()
    if log is not None:
        log.flush()
        save_final(run_dir, tr.model, cfg, table, run_id)
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def _train_transform(model, cfg: TrainConfig):
    """Per-sample transform for the file-backed loader: the model's deterministic preprocess (augmentation runs per batch)."""
    if cfg.data.synthetic or cfg.data.preload:
        return None
    return unwrap(model).preprocess_val


def save_final(run_dir: Path, model, cfg: TrainConfig, table, run_id: str) -> None:
    """The final weights + manifest through swclip.runs.save_run."""

    manifest = {
        "run_id": run_id,
        "loss": config_to_dict(cfg)["loss"],
        "optim": config_to_dict(cfg)["optim"],
        "steps": cfg.steps, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "sigma_m": cfg.loss.sigma_m if cfg.loss.name in ("swclip", "swclip+nc") else 0.0,
        "nc_weight": cfg.loss.nc_weight if cfg.loss.name == "swclip+nc" else 0.0,
        "data": {"table": str(cfg.data.table), "root": str(cfg.data.root), "format": cfg.data.format,
                 "check_images": cfg.data.check_images, "train_split": cfg.data.train_split,
                 "eval_split": cfg.data.eval_split, "synthetic": cfg.data.synthetic,
                 "hash": table_hash(table) if table is not None else None,
                 "n_train": int(len(table)) if table is not None else None},
    }
    save_run(run_dir, unwrap(model), manifest)

