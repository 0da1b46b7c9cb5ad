"""Device and process-group set-up: one process per device, torchrun's environment, autocast dtype."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# --------------------------------------------------------------------------- device and distributed


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_str: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_str != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


def pick_device(device_str: str, local_rank: int = 0) -> torch.device:
    if device_str == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device_str)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device_str!r} asked for, but CUDA is not available here; use device=cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None (float32) or the autocast dtype: 'auto' is bf16 on CUDA and float32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions: on only when the config asks (``tf32: true``).

    Process-wide flags (harmless on CPU). Off, float32 products stay IEEE float32, which the
    losses' float32 logits rely on; torch's own default leaves cuDNN convolutions in TF32, so
    both are set explicitly.
    """
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def setup_device(device: torch.device, tf32: bool = False) -> None:
    set_tf32(tf32)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
