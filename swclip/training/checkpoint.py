"""Checkpoints and RNG state.

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

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# --------------------------------------------------------------------------- RNG and files


def rng_state() -> dict:
    """Python, numpy and torch (CPU + CUDA) RNG states, as tensors / plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    out = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
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

    ckpt_dir = Path(ckpt_dir)
    for name in ("model.safetensors", "state.pt", "meta.json"):
        if not (ckpt_dir / name).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt_dir} is incomplete: {name} missing")
    weights = load_file(str(ckpt_dir / "model.safetensors"), device=str(map_location))
    state = torch.load(ckpt_dir / "state.pt", map_location=map_location, weights_only=True)
    meta = json.loads((ckpt_dir / "meta.json").read_text())
    return weights, state, meta


def resolve_resume(resume: str | os.PathLike, run_dir: Path | None = None) -> Path | None:
    """``--resume`` target -> checkpoint folder. Accepts a checkpoint folder, a run folder,
    or 'auto' (newest in run_dir; None if none)."""
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
