"""Training configuration: YAML file + ``key.sub=value`` overrides -> :class:`TrainConfig`.

A config is a YAML file (``swclip/training/configs/demo_*.yaml`` for the CPU
demo, ``train/configs/*.yaml`` for GPU runs) plus overrides, resolved into
:class:`TrainConfig`, validated, and saved as ``config.yaml`` in the run
directory. ``model: demo`` in a YAML file stands for
``swclip.method.model.DEMO_CONFIG``, so the demo configs cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swclip.io import atomic_write_bytes
from swclip.kernels import check_kernel
from swclip.loss_names import LOSSES, SOFT_LABEL_LOSSES, SWCLIP_NC
from swclip.method.model import DEMO_CONFIG, MAX_LOGIT_SCALE
from swclip.method.semivariogram_loss import RANGE_KINDS, VARIANTS
from swclip.retrieval.gallery_source import check_gallery_source

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the demo configs, shipped as package data

MODEL_PRESET = "demo"  # `model: demo` in a YAML config means swclip.method.model.DEMO_CONFIG


# --------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    """Where the samples come from. ``table`` is read by ``swclip.data.read_table``."""

    table: str = ""  # CSV / parquet sample table (id, image, lat, lon, city[, split])
    root: str = ""  # image root; "" = the table's folder
    data_root: str = (
        ""  # the one trusted folder: table and image root must lie inside it (symlinks resolved); "" = none
    )
    drop_invalid: bool = False  # drop the rows validation flags (and say how many) instead of stopping
    place_tolerance_m: float = 1.0  # a table without place_id: photos whose coordinates round together are one place
    format: str = "table"  # table (CSV / TSV / parquet, swclip.data.read_table) | osv5m (root = the OSV-5M folder)
    check_images: str = "header"  # read_table's image check: header | decode | none (millions of images: none)
    train_split: str = "train"  # rows of the split column used for training
    eval_split: str = "test"  # rows evaluated by train/evaluate.py
    gallery: str = (
        "split"  # evaluation's candidate places: split (train_split's locations) | geoclip100k (GeoCLIP's 100K)
    )
    preload: bool = False  # decode every training image once into memory (small data sets: the demo)
    augment: bool = True  # augmentation on every step
    num_workers: int = 0  # DataLoader workers (file-backed path)
    synthetic: bool = False  # random tensors of the right shape, no files (benchmarks)
    synthetic_size: int = 4096


@dataclass
class LossConfig:
    """Loss selection; see swclip.method.losses for the formulas."""

    name: str = "clip"  # clip | swclip | swclip+nc | semivariogram
    sigma_m: float = 150.0  # swclip bandwidth, metres
    kernel: str = "gaussian"  # gaussian | exponential | onehot
    sigma_start_m: float | None = None  # σ schedule: start here and shrink (geometrically) to sigma_m
    sigma_schedule_steps: int = 0  # ... over this many steps (0: whole run)
    nc_weight: float = 0.5  # λ for swclip+nc
    nc_temperature: float = 0.1  # τ_nc
    beta: float = 1.0  # semivariogram weighting strength
    variant: str = (
        "swclip"  # semivariogram: swclip (ours) | chen2025 (Chen et al. 2025); swclip.method.semivariogram_loss
    )
    margin: float = 0.0  # semivariogram: only pairs with r > margin are re-weighted
    range_kind: str = "practical"  # semivariogram swclip: near/far split at the practical or the effective range
    variogram_bin_rad: float = 1e-3  # chen2025: lag bin width, radians (theirs: 0.001, about 6.4 km)
    rho_step_rad: float = 1e-2  # chen2025: grid step for ρ, radians
    rho_slope: float = 1e-2  # chen2025: ρ where dγ/dh first falls below this, per radian
    bank_size: int = 4096  # memory bank rows
    refit_every: int = 100  # optimiser steps between variogram refits
    min_fit_samples: int = 256
    variogram_model: str = "exponential"  # skgstat model fitted to the bank (or "best")
    variogram_max_lag_m: float | None = None  # lags beyond this are ignored; set it to a few km for street-level
    # multi-city data, or the inter-city pairs swamp the bins
    gps_queue: int = 0  # GeoCLIP's GPS queue: this many recent coordinates as extra negatives (0: none)
    gps_noise_m: float = 150.0  # with the queue: noise on the positives' coordinates (GeoCLIP, Chen et al.)
    queue_noise_m: float = 1000.0  # with the queue: noise on the queue's coordinates


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    accum_steps: int = 1  # micro-batches per optimiser step (each micro-batch is its own contrastive batch)
    logit_scale_max: float = MAX_LOGIT_SCALE


@dataclass
class TrainConfig:
    """The whole run. ``model`` is handed to ``swclip.method.model.ModelConfig(**model)``."""

    run_id: str = ""
    out_dir: str = "runs"
    seed: int = 0
    steps: int = 600  # optimiser steps
    batch_size: int = 256  # per rank; the global batch is batch_size · world_size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the model
    compile_backend: str = "inductor"  # torch.compile backend (inductor; aot_eager / eager to debug graph breaks)
    channels_last: bool | None = None  # channels-last image layout; None: on CUDA only
    tf32: bool = False  # TF32 float32 matmuls / convolutions on CUDA (faster, ~1e-3 relative error)
    tensorboard: bool = True  # TensorBoard event files in <run>/tensorboard (rank 0)
    ckpt_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 2
    log_every: int = 10
    progress: bool = True
    evaluate: bool = False  # run train/evaluate.py's logic at the end
    overwrite: bool = False  # train into an existing run folder: remove every file of the old run first
    fault_at_step: int = 0  # testing aid: SIGKILL this process just before step N+1 (0 = never)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _from_dict(cls, d: dict, where: str = ""):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys by name."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"config section {where or cls.__name__!r} must be a mapping, got {type(d).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kw = {}
    for k, v in d.items():
        sub = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig}.get(k) if cls is TrainConfig else None
        kw[k] = (
            _from_dict(sub, v, k) if sub is not None else _coerce(v, names[k].type, (where + "." if where else "") + k)
        )
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return cls(**kw)


def _coerce(value: Any, type_name: str, key: str) -> Any:
    """Check / convert a config value to its field's type; YAML reads '1e-3' as a string, so accept numeric strings."""
    optional = type_name.startswith("Optional[")
    base = type_name[9:-1] if optional else type_name
    if value is None and optional:
        return None
    try:
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if base == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {key} must be {type_name}, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """'loss.sigma_m=50' -> (['loss', 'sigma_m'], 50). The value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ValueError(f"override key {key!r} is not a dotted name")
    return key.split("."), yaml.safe_load(value) if value != "" else ""


def load_config(path: str | os.PathLike | None = None, overrides: tuple = ()) -> TrainConfig:
    """Read a YAML config (optional) and apply ``key.sub=value`` overrides; validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
    if raw.get("model") == MODEL_PRESET:  # the demo configs name the demo model instead of copying it
        raw["model"] = DEMO_CONFIG.to_dict()
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    cfg = _from_dict(TrainConfig, raw)
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first inconsistent setting: every rule a config must meet, in one place."""

    if cfg.loss.name not in LOSSES:
        raise ValueError(f"loss.name {cfg.loss.name!r} unknown; choose one of {LOSSES}")
    if cfg.loss.name in SOFT_LABEL_LOSSES:
        check_kernel(cfg.loss.kernel, float(cfg.loss.sigma_m))
    if cfg.loss.name == SWCLIP_NC and cfg.loss.nc_weight <= 0:
        raise ValueError("loss swclip+nc needs loss.nc_weight > 0")
    if cfg.loss.variant not in VARIANTS:
        raise ValueError(f"loss.variant {cfg.loss.variant!r} unknown; choose one of {VARIANTS}")
    if cfg.loss.range_kind not in RANGE_KINDS:
        raise ValueError(f"loss.range_kind {cfg.loss.range_kind!r} unknown; choose one of {RANGE_KINDS}")
    if cfg.loss.margin < 0 or cfg.loss.gps_queue < 0 or cfg.loss.gps_noise_m < 0 or cfg.loss.queue_noise_m < 0:
        raise ValueError("loss.margin, loss.gps_queue, loss.gps_noise_m and loss.queue_noise_m must be >= 0")
    for name in ("steps", "batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.optim.accum_steps < 1 or cfg.batch_size % cfg.optim.accum_steps:
        raise ValueError(
            f"optim.accum_steps ({cfg.optim.accum_steps}) must be >= 1 and divide batch_size ({cfg.batch_size})"
        )
    if not (math.isfinite(cfg.data.place_tolerance_m) and cfg.data.place_tolerance_m > 0):
        tol = cfg.data.place_tolerance_m
        raise ValueError(f"data.place_tolerance_m must be a positive number of metres, got {tol!r}")
    if cfg.data.format not in ("table", "osv5m"):
        raise ValueError(f"data.format {cfg.data.format!r} unknown; choose table or osv5m")
    check_gallery_source(cfg.data.gallery, "data.gallery")
    if cfg.data.check_images not in ("header", "decode", "none"):
        raise ValueError(f"data.check_images {cfg.data.check_images!r} unknown; choose header, decode or none")
    if cfg.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision {cfg.precision!r} unknown; choose auto, fp32, bf16 or fp16")
    if cfg.optim.lr <= 0 or cfg.optim.warmup_steps < 0 or not 0 <= cfg.optim.min_lr_ratio <= 1:
        raise ValueError("optim.lr must be > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")
    if cfg.keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {cfg.keep_last}")
    if cfg.run_id and not re.fullmatch(r"[\w.+-]+", cfg.run_id):
        raise ValueError(f"run_id {cfg.run_id!r} may only hold letters, digits, '_', '-', '+' and '.'")


def config_to_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["optim"]["betas"] = list(d["optim"]["betas"])
    return d


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
