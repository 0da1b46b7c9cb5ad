"""The CUDA training path's promises, checked on the CPU (issue 11).

Host syncs, memory layout on resume, precision flags, train_log.csv / TensorBoard
columns. The multi-rank ones (resume agreement, sharded evaluation) run 2 gloo
ranks under torchrun in a subprocess, as tests/test_losses_distributed.py does.
"""

import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.gps_hidden=32", "device=cpu", "progress=false", "optim.warmup_steps=0", "batch_size=16"]


def tiny_cfg(loss="swclip+nc", *extra):
    from swclip.training.config import load_config

    return load_config(
        ROOT / "swclip" / "training" / "configs" / "demo_swclip_nc.yaml", [*TINY, f"loss.name={loss}", *extra]
    )


def tiny_batch(b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(b, 3, 32, 32, generator=g),
        "latlon": torch.tensor([[51.5 + 0.0004 * i, -0.12 + 0.0003 * (i % 5)] for i in range(b)], dtype=torch.float64),
    }


# ----------------------------------------------------------------------------- host syncs

SYNC_OPS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select", "aten.item")
# every loss the trainer builds, with GeoCLIP's GPS queue too; the semivariogram loss with a fitted γ (refits
# every refit_every optimiser steps read the memory bank back by design; between them a step never does)
STEP_LOSSES = [
    ("clip",),
    ("swclip",),
    ("swclip+nc",),
    ("semivariogram",),
    ("semivariogram", "loss.variant=chen2025"),
    ("clip", "loss.gps_queue=24"),
    ("swclip", "loss.gps_queue=24"),
    ("semivariogram", "loss.gps_queue=24"),
    ("semivariogram", "loss.variant=chen2025", "loss.gps_queue=24"),
]


def step_trainer(loss, *extra):
    """A tiny Trainer for ``loss``; a semivariogram loss gets a fixed exponential γ and no refits."""
    from swclip.analysis.variogram import VariogramFit
    from swclip.method.semivariogram_loss import LossVariogram
    from swclip.training.loop import Trainer

    tr = Trainer(tiny_cfg(loss, "loss.refit_every=0", *extra))
    base = getattr(tr.loss_fn, "base", tr.loss_fn)
    if hasattr(base, "set_variogram"):
        fit = VariogramFit(ok=True, model="exponential", nugget=0.1, partial_sill=0.8, sill=0.9, range_m=200.0)
        base.set_variogram(LossVariogram(fit, 150.0, "practical", 0, 0))
    return tr


def count_host_syncs(fn):
    """Run fn and return the ops that would make the host wait for the device, with where they came from.

    Ops that read a value back (item, bool(), float()) and ops whose output size depends on
    the data (nonzero, boolean indexing, masked_select) block the host on CUDA, and so does
    ``torch.tensor`` / ``torch.as_tensor`` of host data (a blocking copy to the device): on the
    CPU that is a lift_fresh called from a line with ``tensor(`` in it (``x[i] = 0.0`` lifts its
    scalar too, but on CUDA fills it on the device). The non-capturable
    optimisers read their step count with .item(), but that tensor lives on the host on CUDA
    too, so torch/optim/ frames are left out.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    found = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
            bool_index = name == "aten.index" and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else []) or []
            )
            stack = traceback.extract_stack() if name == "aten.lift_fresh" else None
            host_copy = stack is not None and "tensor(" in (
                next((f.line for f in reversed(stack[:-1]) if "/torch/" not in f.filename), None) or ""
            )
            if name in SYNC_OPS or bool_index or host_copy:
                stack = stack or traceback.extract_stack()
                if not any("torch/optim/" in f.filename for f in stack):
                    found.append(
                        (name, [f"{Path(f.filename).name}:{f.lineno}" for f in stack if "swclip" in f.filename])
                    )
            return func(*args, **(kwargs or {}))

    with Watch():
        fn()
    return found


@pytest.mark.parametrize("loss", STEP_LOSSES, ids=" ".join)
def test_a_training_step_never_waits_for_the_device(loss):
    from swclip.training.loop import StepMetrics

    tr = step_trainer(*loss)
    tr.step(tiny_batch())  # first step outside: lazy set-up may look at values once
    metrics = StepMetrics()
    batch = tiny_batch(seed=1)
    terms = tr.step(batch)[0]
    if loss[0] == "semivariogram":  # the weighted path ran: some pair was re-weighted
        assert float(terms["false_negative_frac"] + terms["hard_negative_frac"]) > 0
    if "loss.gps_queue=24" in loss:  # the queue's columns took part (and wrapped round: 16 + 16 > 24)
        assert float(terms["gps_queue_fill"]) == 1.0

    def step():
        terms, out = tr.step(batch)
        metrics.add(tr.step_count, 0, terms, out["logit_scale"], tr.last_grad_norm, {"lr": 0.0}, 0.0)

    syncs = count_host_syncs(step)
    assert syncs == [], syncs
    # the watch does catch a sync: reading the loss back is one, and so is a tensor made from host data
    assert count_host_syncs(lambda: float(tr.step(batch)[0]["contrastive_loss"]))
    assert count_host_syncs(lambda: torch.tensor(1.0) + tr.step(batch)[0]["contrastive_loss"])


# ----------------------------------------------------------------------------- memory layout and precision flags


@pytest.mark.parametrize("saved, resumed", [(False, True), (True, False)])
def test_resume_across_memory_layouts_gives_the_optimiser_state_its_parameters_strides(saved, resumed, tmp_path):
    """A checkpoint written with one layout resumes under the other (CPU -> CPU here, CPU -> CUDA in real life).

    Fused AdamW needs each moment to have its parameter's strides; load_state_dict keeps the saved ones.
    """
    from swclip.training.checkpoint import rng_state, save_checkpoint
    from swclip.training.loop import Trainer

    tr = Trainer(tiny_cfg("clip", f"channels_last={str(saved).lower()}"))
    tr.step(tiny_batch())
    save_checkpoint(tmp_path, 1, tr.model, {**tr.state(), "rng": [rng_state()]}, {})
    tr2 = Trainer(tiny_cfg("clip", f"channels_last={str(resumed).lower()}"))
    tr2.load(tmp_path / "checkpoints" / "step_00000001")
    layout = torch.channels_last if resumed else torch.contiguous_format
    conv = [p for p in tr2.model.parameters() if p.ndim == 4]
    assert conv and all(p.is_contiguous(memory_format=layout) for p in conv)
    moments = 0
    for p, p_saved in zip(tr2.model.parameters(), tr.model.parameters()):
        for k, v in tr2.optimizer.state[p].items():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert v.stride() == p.stride(), (k, v.stride(), p.stride())
                torch.testing.assert_close(v, tr.optimizer.state[p_saved][k], rtol=0, atol=0)
                moments += p.ndim == 4
    assert moments == 2 * len(conv)  # exp_avg and exp_avg_sq of every conv kernel were checked
    terms, _ = tr2.step(tiny_batch(seed=1))
    assert torch.isfinite(terms["contrastive_loss"])


def test_a_cpu_checkpoint_resumed_by_fused_adamw_stays_fused(tmp_path, monkeypatch):
    """CUDA's trainer builds fused AdamW; a checkpoint from the CPU's unfused one must not switch it off.

    Fused AdamW runs on the CPU too, so the CUDA trainer's optimiser is stood in for by a fused one here.
    """
    import swclip.training.loop as loop
    from swclip.training.checkpoint import rng_state, save_checkpoint
    from swclip.training.optim import param_groups

    cpu = loop.Trainer(tiny_cfg("clip"))
    assert not any(g.get("fused") for g in cpu.optimizer.param_groups)
    cpu.step(tiny_batch())
    save_checkpoint(tmp_path, 1, cpu.model, {**cpu.state(), "rng": [rng_state()]}, {})
    monkeypatch.setattr(
        loop,
        "build_optimizer",
        lambda model, cfg, device: torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=True),
    )
    fused = loop.Trainer(tiny_cfg("clip"))
    fused.load(tmp_path / "checkpoints" / "step_00000001")
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    for p, p_saved in zip(fused.model.parameters(), cpu.model.parameters()):
        state, saved = fused.optimizer.state[p], cpu.optimizer.state[p_saved]
        assert state["step"].dtype == torch.float32 and state["step"].device == p.device  # where the kernel wants it
        assert float(state["step"]) == 1.0
        torch.testing.assert_close(state["exp_avg"], saved["exp_avg"], rtol=0, atol=0)
    terms, _ = fused.step(tiny_batch(seed=1))
    assert torch.isfinite(terms["contrastive_loss"])


def test_tf32_only_when_the_config_asks():
    from swclip.training.loop import Trainer

    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("high")  # as an earlier run in the process may have left them
        torch.backends.cudnn.allow_tf32 = True  # torch's own default
        Trainer(tiny_cfg("clip", "precision=fp32"))
        assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.allow_tf32 is False
        Trainer(tiny_cfg("clip", "precision=bf16"))  # bf16 autocast does not imply TF32 for the float32 ops
        assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.allow_tf32 is False
        Trainer(tiny_cfg("clip", "tf32=true"))
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


# ----------------------------------------------------------------------------- logs


def test_nan_guard_names_the_first_bad_step_and_term():
    from swclip.training.loop import StepMetrics
    from swclip.training.optim import NonFiniteLossError

    def add(m, step, **terms):
        grad = terms.pop("grad_norm", 1.0)
        m.add(
            step,
            0,
            {k: torch.tensor(v) for k, v in terms.items()},
            torch.tensor(14.0),
            torch.tensor(grad),
            {"lr": 1e-3},
            0.01,
        )

    m = StepMetrics()
    add(m, 7, contrastive_loss=2.0, nc_loss=0.1)
    add(m, 8, contrastive_loss=2.0, nc_loss=float("nan"))
    add(m, 9, contrastive_loss=float("inf"), nc_loss=0.1)
    with pytest.raises(NonFiniteLossError, match=r"step 8: loss term 'nc_loss' is nan"):
        m.collect(16)
    m = StepMetrics()
    add(m, 3, contrastive_loss=2.0, grad_norm=float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"step 3: the gradient norm is inf"):
        m.collect(16)
    m = StepMetrics()  # a statistic (not a *_loss term) may be NaN, e.g. a fraction of nothing: logged, not fatal
    add(m, 4, contrastive_loss=2.0, false_negative_frac=float("nan"))
    (row,) = m.collect(16)
    assert row["loss"] == 2.0 and row["step"] == 4 and row["lr"] == 1e-3 and row["logit_scale"] == 14.0


def test_objective_sums_loss_terms_only():
    from swclip.training.loop import objective

    terms = {
        "contrastive_loss": torch.tensor(2.0),
        "nc_loss": torch.tensor(0.5),
        "false_negative_frac": torch.tensor(0.3),
    }
    assert objective(terms).item() == 2.5


def test_train_log_and_tensorboard_have_every_term_and_the_run_columns(tmp_path):
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from swclip.training.loop import train

    cfg = tiny_cfg(
        "swclip+nc",
        "data.synthetic=true",
        "data.synthetic_size=64",
        "steps=5",
        "log_every=2",
        f"out_dir={tmp_path}",
        "run_id=logs",
    )
    run = train(cfg)
    log = pd.read_csv(run / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4, 5]
    columns = [
        "loss",
        "contrastive_loss",
        "nc_loss",
        "grad_norm",
        "lr",
        "logit_scale",
        "sigma_m",
        "images_per_s",
        "step_s",
        "data_wait_frac",
    ]
    assert set(columns) <= set(log.columns)
    assert log[columns].notna().all().all()
    assert (log["loss"] - log["contrastive_loss"] - log["nc_loss"]).abs().max() < 1e-5
    assert (
        log["sigma_m"].eq(150.0).all() and log["images_per_s"].gt(0).all() and log["data_wait_frac"].between(0, 1).all()
    )
    assert log["lr"].iloc[0] == pytest.approx(cfg.optim.lr)  # no warm-up: the first step ran at the base lr
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{c}" for c in columns} <= tags
    nc = [e.value for e in events.Scalars("train/nc_loss")]
    assert [e.step for e in events.Scalars("train/nc_loss")] == [1, 2, 3, 4, 5]
    assert nc == pytest.approx(log["nc_loss"].tolist(), rel=1e-6)


def test_semivariogram_fractions_reach_train_log_and_tensorboard(tmp_path):
    """The semivariogram loss's statistics (false / hard negative fractions, the split distance) are logged too."""
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from swclip.training.loop import train

    cfg = tiny_cfg(
        "semivariogram",
        "data.synthetic=true",
        "data.synthetic_size=64",
        "steps=3",
        "log_every=1",
        f"out_dir={tmp_path}",
        "run_id=sv",
    )
    run = train(cfg)
    log = pd.read_csv(run / "train_log.csv")
    stats = ["false_negative_frac", "hard_negative_frac", "variogram_range_m"]
    assert set(stats + ["contrastive_loss", "loss"]) <= set(log.columns) and log[stats].notna().all().all()
    assert (log["loss"] - log["contrastive_loss"]).abs().max() < 1e-6  # statistics are logged, not summed
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {f"train/{c}" for c in stats} <= set(events.Tags()["scalars"])


# ----------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
@pytest.mark.parametrize("tower", ["text", "gps"])
def test_compiled_model_trains_without_graph_breaks_or_recompiles(tower):
    """The model's forward sees tensors only (the data pipeline tokenises), so dynamo captures it once.

    aot_eager traces forward and backward as inductor does, without inductor's C++ build (12 minutes
    for this tiny model on the shared 2-core machine); graph breaks and recompiles are dynamo's
    decisions, the same for every backend. benchmarks/gpu_check.sh runs inductor on the GPU.
    """
    import torch._dynamo
    from torch._dynamo.utils import counters

    from swclip.training.batches import SyntheticData
    from swclip.training.loop import Trainer, location_tokenizer

    cfg = tiny_cfg(
        "swclip", "compile=true", "compile_backend=aot_eager", f"model.location_tower={tower}", "batch_size=8"
    )
    tr = Trainer(cfg)
    data = SyntheticData(64, 32, 8, 0, torch.device("cpu"), tokenize=location_tokenizer(tr.model))
    assert ("tokens" in next(data.batches(0))) == (tower == "text")
    batches = data.batches(0)
    torch._dynamo.reset()
    counters.clear()
    tr.step(next(batches))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    for _ in range(2):
        terms, _ = tr.step(next(batches))
    assert counters["stats"]["unique_graphs"] == graphs, dict(counters["stats"])  # no recompiles after the first step
    assert dict(counters["graph_break"]) == {}  # and one graph: no break in the forward
    assert torch.isfinite(terms["contrastive_loss"])


# ----------------------------------------------------------------------- on a GPU (benchmarks/gpu_check.sh runs these)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("loss", STEP_LOSSES, ids=" ".join)
def test_cuda_step_in_bf16_never_syncs(loss):
    from swclip.training.loop import StepMetrics

    tr = step_trainer(*loss, "device=cuda", "precision=bf16")
    assert tr.channels_last and tr.optimizer.defaults.get("fused")
    batch = {k: v.cuda() for k, v in tiny_batch().items()}
    tr.step(batch)
    tr.step(batch)  # the GPS queue is filled from the second step on
    metrics = StepMetrics()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the step raises
    try:
        for _ in range(2):
            terms, out = tr.step(batch)
            metrics.add(tr.step_count, 0, terms, out["logit_scale"], tr.last_grad_norm, {"lr": 0.0}, 0.0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    rows = metrics.collect(16)
    assert len(rows) == 2 and all(r["contrastive_loss"] > 0 for r in rows)


@pytest.mark.cuda
@needs_cuda
def test_cuda_resumes_a_cpu_checkpoint_with_fused_adamw_and_channels_last(tmp_path):
    from swclip.training.checkpoint import rng_state, save_checkpoint
    from swclip.training.loop import Trainer

    cpu = Trainer(tiny_cfg("clip"))
    cpu.step(tiny_batch())
    save_checkpoint(tmp_path, 1, cpu.model, {**cpu.state(), "rng": [rng_state()]}, {})
    gpu = Trainer(tiny_cfg("clip", "device=cuda", "precision=bf16"))
    gpu.load(tmp_path / "checkpoints" / "step_00000001")
    assert all(g["fused"] for g in gpu.optimizer.param_groups)  # the checkpoint's unfused groups did not win
    terms, _ = gpu.step({k: v.cuda() for k, v in tiny_batch(seed=1).items()})  # fused AdamW: strides must agree
    assert torch.isfinite(terms["contrastive_loss"]).item()
