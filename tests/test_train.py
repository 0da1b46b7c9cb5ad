"""train/train.py + train/evaluate.py end to end on a tiny demo world, for every loss.

For each loss: an uninterrupted run; the same run SIGKILLed mid-epoch in a
subprocess (after its step-4 checkpoint), then resumed with --resume auto;
the final weights must match the uninterrupted run's. Then train/evaluate.py
writes the app's artefacts from the resumed run, checked against the table.
"""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from swclip.geo import haversine_m
from swclip.training.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
LOSS_CONFIG = {
    "clip": "demo_clip.yaml",
    "swclip": "demo_swclip.yaml",
    "swclip+nc": "demo_swclip_nc.yaml",
    "semivariogram": "demo_semivariogram.yaml",
}
# Batch 16 over the tiny world's training rows (the fixture checks 6-8 full batches per epoch):
# 9 steps cross an epoch, and the kill comes at step 5, mid-epoch 0, after the step-4 checkpoint.
TINY = [
    "batch_size=16",
    "steps=9",
    "ckpt_every=2",
    "keep_last=2",
    "progress=false",
    "model.gps_hidden=32",
    "optim.warmup_steps=2",
    "loss.bank_size=64",
    "loss.refit_every=2",
    "loss.min_fit_samples=32",
    "device=cpu",
]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"train_{name}", ROOT / "train" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from swclip.data import read_table, spatial_split
    from swclip.synth import make_world

    root = tmp_path_factory.mktemp("world")
    make_world(root, seed=0, cities=["London", "Bristol"], samples_per_city=64, image_size=32, workers=1)
    table = spatial_split(read_table(root / "samples.csv"), test_frac=0.25, block_m=200, buffer_m=20, seed=0)
    table.to_csv(root / "split.csv", index=False)
    # what the kill/resume test relies on, derived rather than copied: batches per epoch
    # (full batches only, as the sampler drops the last) put step 5 mid-epoch 0 and step 9 past it
    per_epoch = int((table["split"] == "train").sum()) // 16
    assert 5 < per_epoch < 9, per_epoch
    return root


def args_for(loss, world, out, run_id, *extra):
    return [
        "--config",
        str(CONFIG_DIR / LOSS_CONFIG[loss]),
        *TINY,
        f"data.table={world / 'split.csv'}",
        f"data.root={world}",
        f"out_dir={out}",
        f"run_id={run_id}",
        *extra,
    ]


# swclip runs through the file-backed DataLoader (2 workers, per-batch augmentation) instead of preloaded tensors
LOADER = {"swclip": ["data.preload=false", "data.num_workers=2"]}


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(LOSS_CONFIG))
def test_kill_resume_evaluate(loss, world, tmp_path):
    train = load_script("train")
    extra = LOADER.get(loss, [])
    assert train.main(args_for(loss, world, tmp_path, "full", *extra)) == 0
    full = load_file(str(tmp_path / "full" / "model.safetensors"))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train" / "train.py"),
            *args_for(loss, world, tmp_path, "killed", "fault_at_step=5", *extra),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = tmp_path / "killed"
    assert not (killed / "manifest.json").exists()  # it never finished
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    meta = json.loads((killed / "checkpoints" / "step_00000004" / "meta.json").read_text())
    assert (meta["epoch"], meta["batch_in_epoch"]) == (0, 4)  # mid-epoch
    if loss == "semivariogram":  # the variogram had been fitted, and it travels with the checkpoint
        state = torch.load(killed / "checkpoints" / "step_00000004" / "state.pt", weights_only=True)
        loss_state = state["loss"]["_extra_state"]
        assert (
            loss_state["variogram"] is not None
            and loss_state["variogram"]["step"] in (2, 4)
            and loss_state["steps"] == 4
        )
        used = json.loads((tmp_path / "full" / "manifest.json").read_text())[
            "loss_variogram"
        ]  # what the loss ended with
        assert (
            used["variant"] == "swclip"
            and used["bank_size"] == 64
            and used["step"] in (2, 4, 6, 8)
            and used["split_m"] > 0
        )

    assert train.main(args_for(loss, world, tmp_path, "killed", "--resume", "auto", *extra)) == 0
    resumed = load_file(str(killed / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=1e-5, atol=1e-6, msg=k)
    log = pd.read_csv(killed / "train_log.csv")
    assert log["step"].tolist() == list(range(1, 10))  # rows after the checkpoint were redone, not duplicated
    ref_log = pd.read_csv(tmp_path / "full" / "train_log.csv")
    np.testing.assert_allclose(log["loss"], ref_log["loss"], rtol=1e-5)
    if loss == "swclip+nc":
        assert "nc_loss" in log.columns and (log["nc_loss"] > 0).all()
    for col in ("lr", "logit_scale", "images_per_s", "data_wait_frac", "contrastive_loss"):
        assert log[col].notna().all(), col

    evaluate = load_script("evaluate")
    assert evaluate.main([str(killed), "--quiet"]) == 0
    table = pd.read_csv(world / "split.csv")
    test = table[table["split"] == "test"].reset_index(drop=True)
    pred = pd.read_parquet(killed / "predictions.parquet")
    for col in (
        "id",
        "city",
        "lat",
        "lon",
        "pred_lat",
        "pred_lon",
        "error_m",
        "topk_lat",
        "topk_lon",
        "topk_prob",
        "image",
    ):
        assert col in pred.columns, col
    assert pred["id"].tolist() == test["id"].astype(str).tolist()
    np.testing.assert_allclose(
        pred["error_m"], haversine_m(test[["lat", "lon"]].to_numpy(), pred[["pred_lat", "pred_lon"]].to_numpy())
    )
    # every prediction is a training location (the gallery); the top-k is ranked by probability
    train_ll = {tuple(np.round(r, 7)) for r in table.loc[table["split"] == "train", ["lat", "lon"]].to_numpy()}
    assert all((round(a, 7), round(b, 7)) in train_ll for a, b in zip(pred["pred_lat"], pred["pred_lon"]))
    assert all(np.all(np.diff(p) <= 1e-9) for p in pred["topk_prob"])
    emb = np.load(killed / "embeddings.npy")
    assert emb.shape[0] == len(pred) and np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=1e-2)
    gallery = np.load(killed / "gallery.npz")
    assert len(gallery["latlon"]) == len(train_ll)
    # the image gallery: every training image, by path, embedded by the run's own image tower
    from swclip.data import open_image
    from swclip.retrieval.gallery import Gallery
    from swclip.runs import load_run

    images = Gallery.load(killed / "image_gallery.npz")
    train_rows = table[table["split"] == "train"].reset_index(drop=True)
    assert images.kind == "image" and images.ids.tolist() == train_rows["image"].astype(str).tolist()
    np.testing.assert_allclose(images.latlon, train_rows[["lat", "lon"]].to_numpy())
    model = load_run(killed).model.eval()
    with torch.no_grad():
        again = model.encode_image(torch.stack([model.preprocess_val(open_image(world / p)) for p in images.ids[:4]]))
    np.testing.assert_allclose(images.embeddings[:4], again.numpy(), atol=1e-5)
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["n"] == len(test) and metrics["median_m"] == pytest.approx(float(np.median(pred["error_m"])))
    assert set(metrics["per_city"]) == {"London", "Bristol"}
    for key in ("acc@100m", "acc@250m", "acc@500m", "acc@25km", "recall@1", "recall@5"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["image_knn"]["n"] == len(test)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["loss"]["name"] == loss and manifest["metrics"]["median_m"] == metrics["median_m"]

    if loss == "clip":  # a run trained elsewhere: run and data copied to new places, the manifest's paths now wrong
        import shutil

        elsewhere = tmp_path / "laptop"
        shutil.copytree(killed, elsewhere / "run", ignore=shutil.ignore_patterns("predictions.parquet", "metrics.json"))
        shutil.copytree(world, elsewhere / "data")
        with pytest.raises(FileNotFoundError):
            evaluate.main([str(elsewhere / "run"), "--quiet", "--table", str(tmp_path / "gone.csv"), "--debug"])
        assert evaluate.main([str(elsewhere / "run"), "--quiet", "--table", str(tmp_path / "gone.csv")]) == 2
        assert (
            evaluate.main(
                [
                    str(elsewhere / "run"),
                    "--quiet",
                    "--table",
                    str(elsewhere / "data" / "split.csv"),
                    "--root",
                    str(elsewhere / "data"),
                ]
            )
            == 0
        )
        again = pd.read_parquet(elsewhere / "run" / "predictions.parquet")
        pd.testing.assert_frame_equal(again, pred)

        # an earlier checkpoint plus the dataset: its weights become the run's, and the manifest says which step
        ckpt = elsewhere / "run" / "checkpoints" / "step_00000008"
        assert (
            evaluate.main(
                [
                    str(elsewhere / "run"),
                    "--quiet",
                    "--checkpoint",
                    str(ckpt),
                    "--table",
                    str(elsewhere / "data" / "split.csv"),
                    "--root",
                    str(elsewhere / "data"),
                ]
            )
            == 0
        )
        from swclip.runs import load_run

        run = load_run(elsewhere / "run")
        assert run.manifest["evaluated_checkpoint_step"] == 8
        step8 = load_file(str(ckpt / "model.safetensors"))
        assert all(torch.equal(v, step8[k]) for k, v in run.model.state_dict().items())
        assert not all(torch.equal(step8[k], full[k]) for k in full)  # it really is another model than the final one


def test_non_finite_loss_stops_with_step_and_term_and_keeps_checkpoint(world, tmp_path):
    from swclip.training.checkpoint import list_checkpoints, load_checkpoint
    from swclip.training.optim import NonFiniteLossError

    train = load_script("train")
    # an absurd learning rate blows the weights up within a few steps
    argv = args_for(
        "swclip",
        world,
        tmp_path,
        "nan",
        "optim.lr=1e30",
        "optim.grad_clip=0",
        "optim.warmup_steps=0",
        "ckpt_every=1",
        "steps=8",
    )
    with pytest.raises(
        NonFiniteLossError, match=r"step (\d+): (loss term 'contrastive_loss'|the gradient norm) is (nan|inf)"
    ) as e:
        train.main(argv)
    failed_step = int(str(e.value).split()[1].rstrip(":"))
    ckpts = list_checkpoints(tmp_path / "nan")
    assert ckpts and json.loads((ckpts[-1] / "meta.json").read_text())["step"] == failed_step - 1
    weights, _, _ = load_checkpoint(ckpts[-1])
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "nan" / "manifest.json").exists()


def test_train_cli_errors_are_clear(world, tmp_path, capsys):
    train = load_script("train")
    for extra, message in (
        (["loss.nme=clip"], "loss.nme"),
        (["--resume", str(tmp_path / "nowhere")], "no complete checkpoint"),
        (["data.train_split=nosuchsplit"], "split"),
    ):
        assert train.main(args_for("clip", world, tmp_path, "x", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("swclip: error: ") and message in err[0], err
        with pytest.raises((ValueError, FileNotFoundError), match=message):  # --debug: the exception itself
            train.main(args_for("clip", world, tmp_path, "x", *extra, "--debug"))


def test_gradient_accumulation_averages_micro_batches(world):
    """accum_steps=2: one optimiser step on the mean of the two half-batch losses (each its own contrastive batch)."""
    import copy

    from swclip.training.config import load_config
    from swclip.training.loop import Trainer

    cfg = load_config(
        CONFIG_DIR / "demo_swclip.yaml",
        ["batch_size=16", "optim.accum_steps=2", "model.gps_hidden=32", "device=cpu", "optim.warmup_steps=0"],
    )
    tr = Trainer(cfg)
    ref_model = copy.deepcopy(tr.model)
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randn(16, 3, 32, 32, generator=g),
        "latlon": torch.tensor([[51.5 + 0.001 * i, -0.12 + 0.0007 * i] for i in range(16)], dtype=torch.float64),
    }
    terms, _ = tr.step(batch)

    # the reference, written out by hand with torch alone (none of the trainer's helpers): the
    # SW-CLIP loss of the config, AdamW with decay on matrices only, lr at step 0 without warm-up
    # (cosine at progress 0: the base lr), and exp(t) clamped at 100
    from swclip.method.losses import SoftClipLoss

    assert cfg.loss.name == "swclip" and cfg.loss.sigma_start_m is None
    loss_fn = SoftClipLoss(cfg.loss.sigma_m, cfg.loss.kernel)
    with torch.no_grad():
        whole = float(loss_fn(**ref_model(batch["images"], batch["latlon"]))["contrastive_loss"])
    halves = [
        loss_fn(**ref_model(batch["images"][s], batch["latlon"][s]))["contrastive_loss"]
        for s in (slice(0, 8), slice(8, 16))
    ]
    ((halves[0] + halves[1]) / 2).backward()
    torch.nn.utils.clip_grad_norm_(ref_model.parameters(), cfg.optim.grad_clip)
    params = [(n, p) for n, p in ref_model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "logit_scale" not in n and "bias" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "logit_scale" not in n and "bias" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
    )
    opt.step()
    with torch.no_grad():
        for n, p in ref_model.named_parameters():
            if n.endswith("logit_scale"):
                p.clamp_(max=math.log(100.0))
    mean_of_halves = float((halves[0] + halves[1]).detach() / 2)
    assert float(terms["contrastive_loss"]) == pytest.approx(mean_of_halves, rel=1e-5)
    assert abs(whole - mean_of_halves) > 0.1  # and it is not the loss of the whole batch as one contrastive batch
    for (name, p), q in zip(tr.model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
