"""The CLI on real data gone wrong: runs never silently replaced, one trusted data root, plain one-line errors.

Everything runs through ``swclip.cli.main`` in-process on a tiny rendered world (2 cities × 64 samples,
32 px), with a few optimiser steps of the demo model on the CPU.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from swclip import catalog, runs
from swclip.cli import main
from swclip.data import tiny_image_warning
from swclip.io import RunError, resolve_inside
from swclip.training.config import CONFIG_DIR

TINY = [
    "--config",
    str(CONFIG_DIR / "demo_clip.yaml"),
    "batch_size=16",
    "steps=3",
    "ckpt_every=1",
    "keep_last=5",
    "progress=false",
    "model.gps_hidden=32",
    "optim.warmup_steps=0",
    "device=cpu",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data folder (split.csv + images) kept apart from any runs folder."""
    from swclip.data import read_table, spatial_split
    from swclip.synth import make_world

    root = tmp_path_factory.mktemp("data") / "world"
    make_world(root, seed=0, cities=["London", "Bristol"], samples_per_city=64, image_size=32, workers=1)
    table = spatial_split(read_table(root / "samples.csv"), test_frac=0.25, block_m=200, buffer_m=20, seed=0)
    table.to_csv(root / "split.csv", index=False)
    return root


def train_argv(world, out, run_id, *extra, table=None):
    return [
        "train",
        *TINY,
        f"data.table={table or world / 'split.csv'}",
        f"data.root={world}",
        f"out_dir={out}",
        f"run_id={run_id}",
        *extra,
    ]


def evaluate_argv(run_dir):
    return ["evaluate", str(run_dir), "--quiet", "--device", "cpu", "--batch-size", "64"]


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def evaluated(world, tmp_path_factory):
    """A trained and evaluated run, under a runs folder apart from the data."""
    out = tmp_path_factory.mktemp("runs")
    assert main(train_argv(world, out, "base")) == 0
    assert main(evaluate_argv(out / "base")) == 0
    return out / "base"


# ------------------------------------------------------------------ 1. runs are never silently replaced


def test_train_evaluate_retrain_the_same_id(world, tmp_path, capsys):
    out = tmp_path / "runs"
    run = out / "x"
    assert main(train_argv(world, out, "x")) == 0
    assert main(evaluate_argv(run)) == 0
    manifest = runs.read_manifest(run)
    # the artefacts record the weights they came from
    assert runs.artefact_weights(run) == {
        "predictions": manifest["weights_sha256"],
        "metrics": manifest["weights_sha256"],
    }
    assert runs.stale_artefacts(run, manifest) is None
    before = snapshot(run)
    assert {"predictions.parquet", "metrics.json", "embeddings.npy", "gallery.npz", "image_gallery.npz"} <= set(before)
    capsys.readouterr()

    # retrain the same id: refused by name, nothing touched
    assert main(train_argv(world, out, "x", "seed=1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("swclip: error: run ") and "--overwrite" in err[0], err
    assert snapshot(run) == before

    # --overwrite: every file of the old run goes first (artefacts, old checkpoints, old log rows)
    assert main(train_argv(world, out, "x", "seed=1", "steps=2", "--overwrite")) == 0
    left = set(snapshot(run))
    for gone in ("predictions.parquet", "metrics.json", "embeddings.npy", "gallery.npz", "image_gallery.npz"):
        assert gone not in left, gone
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
    assert len(pd.read_csv(run / "train_log.csv")) == 2
    old_events = {k for k in before if k.startswith("tensorboard/")}
    assert old_events and not (old_events & left), "the old run's TensorBoard events stay"
    assert runs.read_manifest(run)["weights_sha256"] != manifest["weights_sha256"]


def test_a_stale_run_is_marked_and_never_the_default(evaluated, world, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(evaluated, root / "fresh", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    shutil.copytree(evaluated, root / "forged", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    # what retraining over an evaluated run used to leave: new weights and manifest, old predictions and metrics
    other = tmp_path / "other"
    assert main(train_argv(world, other, "y", "seed=2")) == 0
    for name in ("model.safetensors", "manifest.json"):
        shutil.copy(other / "y" / name, root / "forged" / name)  # the newest manifest: first by time
    found, broken = catalog.discover_runs(root)
    assert not broken
    by_id = {r.run_id: r for r in found}
    assert by_id["fresh"].stale is None
    assert "predictions.parquet and metrics.json came from other weights" in by_id["forged"].stale
    assert "STALE" in by_id["forged"].label
    assert [r.run_id for r in found] == ["fresh", "forged"], "a stale run must never be the default main run"
    # a forged metrics.json alone is caught too
    m = json.loads((root / "fresh" / "metrics.json").read_text())
    m["weights_sha256"] = "0" * 64
    (root / "fresh" / "metrics.json").write_text(json.dumps(m))
    assert "metrics.json came from other weights" in runs.stale_artefacts(
        root / "fresh", runs.read_manifest(root / "fresh")
    )


def test_overwrite_never_removes_files_a_run_does_not_write(world, tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "my_notes.txt").write_text("field notes\n")
    (run / "predictions.parquet").write_bytes(b"old")
    assert main(train_argv(world, tmp_path / "runs", "x", "--overwrite")) == 2
    assert "my_notes.txt" in capsys.readouterr().err
    assert (run / "my_notes.txt").read_text() == "field notes\n" and (
        run / "predictions.parquet"
    ).read_bytes() == b"old"


def test_resume_still_continues_a_run(world, tmp_path):
    out = tmp_path / "runs"
    assert main(train_argv(world, out, "r", "steps=2")) == 0
    assert main(train_argv(world, out, "r", "steps=3", "--resume", "auto")) == 0
    assert len(pd.read_csv(out / "r" / "train_log.csv")) == 3


# ------------------------------------------------------------------------------- 6. failed train cleans up


def test_a_failed_train_removes_only_the_folder_it_created(world, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(train_argv(world, out, "new", "data.train_split=nosuchsplit")) == 2
    assert "nosuchsplit" in capsys.readouterr().err
    assert not (out / "new").exists(), "a failed run left its folder behind"
    (out / "kept").mkdir(parents=True)
    assert main(train_argv(world, out, "kept", "data.train_split=nosuchsplit")) == 2
    assert (out / "kept").is_dir(), "a folder that existed before is not training's to remove"


# ------------------------------------------------------------------------------- 6. the hostile inputs


def _bad_rows(world, tmp_path):
    df = pd.read_csv(world / "split.csv", dtype=str)
    df.loc[3, "lat"] = "200"
    path = tmp_path / "bad_rows.csv"
    df.to_csv(path, index=False)
    return path


def _header_only(world, tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text((world / "split.csv").read_text().splitlines()[0] + "\n")
    return path


def _symlinked_root(world, tmp_path):
    data_root = tmp_path / "data_root"
    data_root.mkdir()
    (data_root / "images").symlink_to(world)  # the images live elsewhere
    return data_root


# name -> (argv builder (world, tmp_path, evaluated run) -> argv, words the one line must hold)
HOSTILE = {
    "invalid rows": (
        lambda w, t, e: train_argv(w, t / "runs", "x", table=_bad_rows(w, t)),
        ["bad_rows.csv", "bad_coords", "--drop-invalid"],
    ),
    "empty csv": (
        lambda w, t, e: train_argv(w, t / "runs", "x", table=(t / "empty.csv", (t / "empty.csv").write_bytes(b""))[0]),
        ["empty.csv", "empty table file"],
    ),
    "header-only csv": (
        lambda w, t, e: train_argv(w, t / "runs", "x", table=_header_only(w, t)),
        ["header_only.csv", "has a header", "but no rows"],
    ),
    "missing table": (lambda w, t, e: train_argv(w, t / "runs", "x", table=t / "nowhere.csv"), ["nowhere.csv"]),
    "unknown config key": (lambda w, t, e: train_argv(w, t / "runs", "x", "loss.nme=clip"), ["loss.nme"]),
    "run exists": (lambda w, t, e: train_argv(w, e.parent, e.name), ["already exists", "--overwrite"]),
    "not a run": (lambda w, t, e: evaluate_argv(t), ["not a run directory"]),
    "unreadable photo": (
        lambda w, t, e: ["predict", "--run", str(e), (t / "x.jpg", (t / "x.jpg").write_text("not a jpeg"))[0]],
        ["x.jpg", "not an image"],
    ),
    "missing photo": (
        lambda w, t, e: ["predict", "--run", str(e), str(t / "gone.jpg")],
        ["gone.jpg", "does not exist"],
    ),
    "symlinked image folder": (
        lambda w, t, e: (
            lambda d: train_argv(
                w, t / "runs", "x", f"data.root={d / 'images'}", "--data-root", d, table=d / "images" / "split.csv"
            )
        )(_symlinked_root(w, t)),
        ["symlink", "data root", "split.csv"],
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_gives_one_named_line_and_loses_nothing(case, world, evaluated, tmp_path, capsys):
    build, words = HOSTILE[case]
    argv = [str(a) for a in build(world, tmp_path, evaluated)]
    kept = {"data": snapshot(world), "run": snapshot(evaluated), "inputs": snapshot(tmp_path)}
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("swclip: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert {"data": snapshot(world), "run": snapshot(evaluated), "inputs": snapshot(tmp_path)} == kept
    assert not (tmp_path / "runs" / "x").exists(), "a failed command left a run folder"
    # --debug: the traceback instead of the line
    with pytest.raises((ValueError, FileNotFoundError)):
        main([*argv, "--debug"])


# ------------------------------------------------------------------- 6. drop-invalid, predict goes on


def test_drop_invalid_drops_and_counts(world, tmp_path, capsys):
    bad = _bad_rows(world, tmp_path)
    n_train = int((pd.read_csv(bad)["split"] == "train").sum())
    lost_train = pd.read_csv(bad).loc[3, "split"] == "train"
    for flag in (["--drop-invalid"], ["data.drop_invalid=true"]):
        run_id = "d" + str(len(flag[0]))
        assert main(train_argv(world, tmp_path / "runs", run_id, *flag, table=bad)) == 0
        assert f"bad_rows.csv: dropped 1 of {len(pd.read_csv(bad))} row(s) (bad_coords 1)" in capsys.readouterr().err
        manifest = runs.read_manifest(tmp_path / "runs" / run_id)
        assert manifest["data"]["drop_invalid"] is True
        assert manifest["data"]["n_train"] == n_train - int(lost_train)


def test_predict_skips_unreadable_photos_and_warns_on_tiny_ones(evaluated, world, tmp_path, capsys):
    good = world / pd.read_csv(world / "split.csv")["image"].iloc[0]
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    rc = main(["predict", "--run", str(evaluated), str(good), str(tmp_path / "bad.jpg"), str(tmp_path / "dot.png")])
    assert rc == 1, "one photo failed: non-zero, after the others were predicted"
    captured = capsys.readouterr()
    assert f"{good}: knn-kde estimate" in captured.out and f"{tmp_path / 'dot.png'}: knn-kde estimate" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("swclip: error:")]
    assert len(errors) == 1 and "bad.jpg" in errors[0]
    assert any("dot.png is only 1×1 px" in line and "unreliable" in line for line in captured.err.splitlines())
    assert f"{good} is only" not in captured.err


def test_tiny_image_threshold():
    assert tiny_image_warning((1, 1), 32) is not None
    assert tiny_image_warning((15, 400), 32) is not None  # under the 16 px floor
    assert tiny_image_warning((16, 16), 32) is None
    assert tiny_image_warning((55, 80), 224) is not None  # under a quarter of ViT-B/32's 224 px
    assert tiny_image_warning((56, 56), 224) is None


# ----------------------------------------------------------------------------------------- 5. data root


def test_data_root_is_recorded_and_lets_the_app_read_images_outside_the_runs_folder(evaluated, world, tmp_path):
    out = tmp_path / "runs"
    assert main(train_argv(world, out, "dr", "--data-root", str(world.parent))) == 0
    manifest = runs.read_manifest(out / "dr")
    assert manifest["data"]["data_root"] == str(world.parent.resolve())
    # the app: the evaluated run lives in one folder, its images in another
    run = next(r for r in catalog.discover_runs(evaluated.parent)[0] if r.run_id == "base")
    assert catalog.image_root(run, evaluated.parent) is None  # without a data root: runs folder only
    img_root = catalog.image_root(run, evaluated.parent, data_root=world.parent)
    assert img_root == world.resolve()
    rel = runs.read_predictions(evaluated)["image"].iloc[0]
    trusted = catalog.trusted_root(evaluated.parent, world.parent)
    assert catalog.image_path(img_root, rel, trusted) == (world / rel).resolve()
    assert catalog.image_path(img_root, "../../../etc/passwd", trusted) is None
    assert catalog.table_path(run, evaluated.parent, data_root=world.parent) == (world / "split.csv").resolve()


def test_the_refusal_names_the_symlink(world, tmp_path):
    root = _symlinked_root(world, tmp_path)
    with pytest.raises(RunError, match=r"escapes the data root .* through the symlink .*images' -> "):
        resolve_inside(root, "images/split.csv", "image path", "data root")
    with pytest.raises(RunError) as e:  # a plain ../ escape is not blamed on a symlink
        resolve_inside(root, "../world/split.csv", "image path", "data root")
    assert "symlink" not in str(e.value)
    (root / "inside").mkdir()
    (root / "ok").symlink_to(root / "inside")  # a link that stays inside is fine
    assert resolve_inside(root, "ok") == (root / "inside").resolve()
