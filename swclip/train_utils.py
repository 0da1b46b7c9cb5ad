"""Training building blocks: config, loss selection, optimiser, schedules, checkpoints.

Everything here is independent of the data and of the model's architecture,
so each piece is testable on its own; ``swclip.training`` puts them together.

Config: a YAML file (``train/configs/*.yaml``) plus ``key.sub=value``
overrides, resolved into :class:`TrainConfig` and saved as ``config.yaml`` in
the run directory.

Checkpoints (``<run_dir>/checkpoints/step_00000200/``):
    model.safetensors   weights (safetensors; never pickled)
    state.pt            optimiser, scaler, RNG states, loss state: tensors and
                        plain Python values only, read back with
                        ``torch.load(weights_only=True)``
    meta.json           step, epoch position, config digest
A checkpoint is written to ``step_X.tmp`` and renamed in one ``os.replace``,
so a kill mid-write never leaves a half checkpoint under a final name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml

LOSSES = ("clip", "swclip", "swclip+nc", "semivariogram")
LOGIT_SCALE_MAX = 100.0


# --------------------------------------------------------------------------- config


@dataclass
class DataConfig:
    """Where the samples come from. ``table`` is read by ``swclip.data.read_table``."""

    table: str = ""  # CSV / parquet sample table (id, image, lat, lon, city[, split])
    root: str = ""  # image root; "" = the table's folder
    format: str = "table"  # table (CSV / TSV / parquet, swclip.data.read_table) | osv5m (root = the OSV-5M folder)
    check_images: str = "header"  # read_table's image check: header | decode | none (millions of images: none)
    train_split: str = "train"  # rows of the split column used for training
    eval_split: str = "test"  # rows evaluated by train/evaluate.py
    preload: bool = False  # decode every training image once into memory (small data sets: the demo)
    augment: bool = True  # augmentation on every step
    num_workers: int = 0  # DataLoader workers (file-backed path)
    synthetic: bool = False  # random tensors of the right shape, no files (benchmarks)
    synthetic_size: int = 4096


@dataclass
class LossConfig:
    """Loss selection; see swclip.losses for the formulas."""

    name: str = "clip"  # clip | swclip | swclip+nc | semivariogram
    sigma_m: float = 150.0  # swclip bandwidth, metres
    kernel: str = "gaussian"  # gaussian | exponential | onehot
    sigma_start_m: Optional[float] = None  # σ schedule: start here and shrink (geometrically) to sigma_m
    sigma_schedule_steps: int = 0  # ... over this many steps (0: whole run)
    nc_weight: float = 0.5  # λ for swclip+nc
    nc_temperature: float = 0.1  # τ_nc
    beta: float = 1.0  # semivariogram weighting strength
    bank_size: int = 4096  # memory bank rows
    refit_every: int = 100  # steps between variogram refits
    min_fit_samples: int = 256
    variogram_model: str = "exponential"  # skgstat model fitted to the bank (or "best")
    variogram_max_lag_m: Optional[float] = None  # lags beyond this are ignored; set it to a few km for street-level
                                                 # multi-city data, or the inter-city pairs swamp the bins


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
    logit_scale_max: float = LOGIT_SCALE_MAX


@dataclass
class TrainConfig:
    """The whole run. ``model`` is handed to ``swclip.model.ModelConfig(**model)``."""

    run_id: str = ""
    out_dir: str = "runs"
    seed: int = 0
    steps: int = 600  # optimiser steps
    batch_size: int = 256  # per rank; the global batch is batch_size · world_size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the model (CUDA)
    channels_last: bool = True  # on CUDA
    ckpt_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_last: int = 2
    log_every: int = 10
    progress: bool = True
    evaluate: bool = False  # run train/evaluate.py's logic at the end
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
        raise ValueError(f"unknown config key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    kw = {}
    for k, v in d.items():
        sub = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig}.get(k) if cls is TrainConfig else None
        kw[k] = _from_dict(sub, v, k) if sub is not None else _coerce(v, names[k].type, (where + "." if where else "") + k)
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


def load_config(path: Optional[str | os.PathLike] = None, overrides: tuple = ()) -> TrainConfig:
    """Read a YAML config (optional) and apply ``key.sub=value`` overrides; validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
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
    """Raise ValueError naming the first inconsistent setting."""
    from swclip.soft_labels import check_kernel

    if cfg.loss.name not in LOSSES:
        raise ValueError(f"loss.name {cfg.loss.name!r} unknown; choose one of {LOSSES}")
    if cfg.loss.name in ("swclip", "swclip+nc"):
        check_kernel(cfg.loss.kernel, float(cfg.loss.sigma_m))
    for name in ("steps", "batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.optim.accum_steps < 1 or cfg.batch_size % cfg.optim.accum_steps:
        raise ValueError(f"optim.accum_steps ({cfg.optim.accum_steps}) must be >= 1 and divide batch_size ({cfg.batch_size})")
    if cfg.data.format not in ("table", "osv5m"):
        raise ValueError(f"data.format {cfg.data.format!r} unknown; choose table or osv5m")
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
    from swclip.runs import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())


# --------------------------------------------------------------------------- losses


def build_loss(cfg: LossConfig, world_size: int = 1, rank: int = 0, fit_fn=None):
    """The loss module named by ``cfg.name``; ``fit_fn`` defaults to swclip.variogram's."""
    from swclip import losses

    if cfg.name == "clip":
        return losses.ClipLoss(world_size=world_size, rank=rank)
    if cfg.name in ("swclip", "swclip+nc"):
        sigma = cfg.sigma_start_m if cfg.sigma_start_m is not None else cfg.sigma_m
        return losses.SoftClipLoss(float(sigma), cfg.kernel, nc_weight=cfg.nc_weight if cfg.name == "swclip+nc" else 0.0,
                                   nc_temperature=cfg.nc_temperature, world_size=world_size, rank=rank)
    if cfg.name == "semivariogram":
        if fit_fn is None:
            fit_fn = variogram_fit_fn(cfg)
        return losses.SemivariogramWeightedLoss(beta=cfg.beta, bank_size=cfg.bank_size, refit_every=cfg.refit_every,
                                                min_fit_samples=cfg.min_fit_samples, fit_fn=fit_fn,
                                                world_size=world_size, rank=rank)
    raise ValueError(f"loss.name {cfg.name!r} unknown; choose one of {LOSSES}")


def variogram_fit_fn(cfg: LossConfig):
    """swclip.variogram.fit_embedding_variogram with the config's model and max lag."""
    import functools

    from swclip.variogram import fit_embedding_variogram

    return functools.partial(fit_embedding_variogram, model=cfg.variogram_model, max_lag_m=cfg.variogram_max_lag_m)


def sigma_at(cfg: LossConfig, step: int, total_steps: int) -> float:
    """σ (metres) at optimiser step ``step``: geometric from sigma_start_m to sigma_m, then flat."""
    if cfg.sigma_start_m is None:
        return float(cfg.sigma_m)
    n = cfg.sigma_schedule_steps or total_steps
    frac = min(max(step / max(n, 1), 0.0), 1.0)
    lo, hi = max(float(cfg.sigma_m), 1e-3), max(float(cfg.sigma_start_m), 1e-3)
    return float(hi * (lo / hi) ** frac) if cfg.sigma_m > 0 else float(cfg.sigma_start_m) * (1 - frac)


# --------------------------------------------------------------------------- optimiser


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices / conv kernels; none on biases, norms, embeddings' scales, logit scale.

    The rule, as in open_clip and nanoGPT: parameters with ndim < 2 (biases,
    LayerNorm / BatchNorm gains) and any name containing ``logit_scale`` get no
    weight decay.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel on CUDA."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             **({"fused": True} if fused else {}))


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warmup to 1, then cosine to min_lr_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio))


def clamp_logit_scale(model: torch.nn.Module, max_scale: float = LOGIT_SCALE_MAX) -> None:
    """Keep exp(t) ≤ max_scale (CLIP's 100) for every parameter named *logit_scale (t is the log scale)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.clamp_(0, math.log(max_scale))


class NonFiniteLossError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite; the message names the step and the term."""


def check_finite(terms: dict, step: int) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value.detach()).all():
            raise NonFiniteLossError(
                f"step {step}: loss term {name!r} is {float(value.detach().float().reshape(-1)[0])}; training stopped. "
                "The last good checkpoint is left as it was; lower optim.lr or check the data.")


# --------------------------------------------------------------------------- RNG and files


def rng_state() -> dict:
    """Python, numpy and torch (CPU + CUDA) RNG states, as tensors / plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    out = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- checkpoints

CKPT_RE = re.compile(r"^step_(\d{8})$")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def model_state(model: torch.nn.Module) -> dict:
    """Contiguous, de-aliased CPU tensors for safetensors (tied weights are stored once per name)."""
    out = {}
    for k, v in unwrap(model).state_dict().items():
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and CKPT_RE.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def save_checkpoint(run_dir, step: int, model, state: dict, meta: dict, keep_last: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep_last``. -> its folder."""
    from safetensors.torch import save_file

    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f"step_{step:08d}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state(model), str(tmp / "model.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=1))
    if final.exists():  # a rerun of the same step: replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob("step_*.tmp*"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(ckpt_dir: str | os.PathLike, map_location="cpu") -> tuple[dict, dict, dict]:
    """-> (model_state, state, meta). Never unpickles: safetensors + torch.load(weights_only=True)."""
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    for name in ("model.safetensors", "state.pt", "meta.json"):
        if not (ckpt_dir / name).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_dir} is incomplete: {name} missing")
    weights = load_file(str(ckpt_dir / "model.safetensors"), device=str(map_location))
    state = torch.load(ckpt_dir / "state.pt", map_location=map_location, weights_only=True)
    meta = json.loads((ckpt_dir / "meta.json").read_text())
    return weights, state, meta


def resolve_resume(resume: str | os.PathLike, run_dir: Optional[Path] = None) -> Optional[Path]:
    """``--resume`` target -> checkpoint folder. Accepts a checkpoint folder, a run folder, or 'auto' (newest in run_dir; None if none)."""
    if str(resume) == "auto":
        found = list_checkpoints(run_dir) if run_dir is not None else []
        return found[-1] if found else None
    p = Path(resume)
    if (p / "meta.json").is_file():
        return p
    found = list_checkpoints(p)
    if not found:
        raise FileNotFoundError(f"--resume {p}: no complete checkpoint there (looked for {p}/checkpoints/step_*/)")
    return found[-1]

