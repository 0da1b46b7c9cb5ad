"""Training and evaluation under torchrun with 2 gloo ranks on the CPU (issue 11).

- resume: rank 0 decides the checkpoint step and every rank loads that step, or all
  ranks stop at once saying a shared run folder is needed (nodes that do not share one).
- evaluation: each rank encodes its shard of the images, rank 0 gathers; the artefacts
  equal the single-process evaluation's.

This file is also the ranks' worker (``python -m torch.distributed.run ... this_file MODE ...``),
as in tests/test_losses_distributed.py.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = [
    "model.gps_hidden=32",
    "device=cpu",
    "progress=false",
    "optim.warmup_steps=0",
    "batch_size=8",
    "data.synthetic=true",
    "data.synthetic_size=64",
    "run_id=run",
    "log_every=1",
    "tensorboard=false",
]


def config(out_dir, *extra):
    from swclip.training.config import load_config

    return load_config(
        ROOT / "swclip" / "training" / "configs" / "demo_clip.yaml", [*TINY, f"out_dir={out_dir}", *extra]
    )


def torchrun(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            __file__,
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A single-process run with checkpoints at steps 2 and 4."""
    from swclip.training.loop import train

    base = tmp_path_factory.mktemp("resume")
    train(config(base / "node0", "steps=4", "ckpt_every=2"))
    assert (base / "node0" / "run" / "checkpoints" / "step_00000004" / "meta.json").is_file()
    return base


@pytest.mark.slow
def test_ranks_without_a_shared_run_folder_stop_together_with_a_clear_error(checkpointed):
    empty = checkpointed / "node1-empty"
    proc = torchrun("resume", checkpointed, empty.name)
    assert proc.returncode != 0
    # both ranks raise the same error (not one rank resuming at step 4 while the other starts at 0)
    assert proc.stderr.count("needs a shared run folder") >= 2, proc.stderr[-3000:]
    assert "rank(s) [1] cannot see that checkpoint" in proc.stderr


@pytest.mark.slow
def test_every_rank_loads_the_step_rank_0_chose(checkpointed):
    # node 1 holds a copy of rank 0's checkpoints plus a newer stale one of its own: it must not pick it
    other = checkpointed / "node1-stale"
    shutil.copytree(checkpointed / "node0" / "run", other / "run")
    stale = other / "run" / "checkpoints" / "step_00000006"
    shutil.copytree(other / "run" / "checkpoints" / "step_00000004", stale)
    (stale / "meta.json").write_text(json.dumps({**json.loads((stale / "meta.json").read_text()), "step": 6}))
    proc = torchrun("resume", checkpointed, other.name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"[rank {rank}] resumed run from" in proc.stderr and "at step 4" in proc.stderr
    assert "at step 6" not in proc.stderr


@pytest.mark.slow
def test_sharded_evaluation_equals_single_process(tmp_path):
    import pandas as pd

    from swclip.data import read_table, spatial_split
    from swclip.synth import make_world
    from swclip.training.evaluation import evaluate_run
    from swclip.training.loop import train

    world = tmp_path / "world"
    # 45 eval + 15 gallery rows or so: not a multiple of 2, so the sampler's padding is exercised
    make_world(world, seed=1, cities=["Leeds"], samples_per_city=61, image_size=32, workers=1)
    spatial_split(read_table(world / "samples.csv"), test_frac=0.3, block_m=200, buffer_m=0, seed=0).to_csv(
        world / "split.csv", index=False
    )
    cfg = config(
        tmp_path,
        "steps=2",
        f"data.table={world / 'split.csv'}",
        f"data.root={world}",
        "data.synthetic=false",
        "data.preload=true",
        "data.augment=false",
    )
    run = train(cfg)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    shutil.copytree(run, single)
    shutil.copytree(run, sharded)
    metrics = evaluate_run(single, batch_size=7)
    proc = torchrun("evaluate", sharded)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_eval = int((pd.read_csv(world / "split.csv")["split"] == "test").sum())
    assert n_eval % 2 == 1 and metrics["n"] == n_eval
    a, b = np.load(single / "embeddings.npy"), np.load(sharded / "embeddings.npy")
    assert a.shape == b.shape == (n_eval, a.shape[1])
    # embeddings.npy is float16: a float32 last-bit difference between batchings can flip one float16 ulp
    np.testing.assert_allclose(
        b.astype(np.float32), a.astype(np.float32), rtol=0, atol=float(np.spacing(np.float16(0.5)))
    )  # one ulp for |x| < 1
    ga, gb = np.load(single / "image_gallery.npz"), np.load(sharded / "image_gallery.npz")
    for k in ga.files:
        if ga[k].dtype.kind == "f":
            np.testing.assert_allclose(gb[k], ga[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(gb[k], ga[k], err_msg=k)
    pa, pb = pd.read_parquet(single / "predictions.parquet"), pd.read_parquet(sharded / "predictions.parquet")
    pd.testing.assert_frame_equal(pb, pa, rtol=1e-5)
    ma, mb = json.loads((single / "metrics.json").read_text()), json.loads((sharded / "metrics.json").read_text())
    assert ma.keys() == mb.keys() and ma["median_m"] == pytest.approx(mb["median_m"], rel=1e-6)


def worker_evaluate(run_dir: str) -> None:
    import torch.distributed as dist

    from swclip.training.evaluation import evaluate_run

    dist.init_process_group("gloo")
    evaluate_run(run_dir, batch_size=7)  # 7: shares that end mid-batch
    dist.barrier()
    dist.destroy_process_group()


def worker_resume(base: str, rank1_dir: str) -> None:
    from swclip.training.loop import train

    rank = int(os.environ["RANK"])
    train(config(Path(base) / ("node0" if rank == 0 else rank1_dir), "steps=6", "ckpt_every=2"), resume="auto")


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"resume": worker_resume, "evaluate": worker_evaluate}[mode](*rest)
