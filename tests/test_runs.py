"""Run directories: train a few steps, save, rebuild in a fresh process, refuse what does not fit."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from swclip import runs
from swclip.geo import haversine_m
from swclip.io import RunError, atomic_write
from swclip.method.losses import SoftClipLoss
from swclip.method.model import DEMO_CONFIG, SWCLIP
from swclip.retrieval.gallery import Gallery
from swclip.retrieval.predictor import Predictor
from swclip.runs import load_run, save_run

REPO = Path(__file__).resolve().parent.parent


def _world(n=64, seed=0):
    rng = np.random.default_rng(seed)
    latlon = np.column_stack([51.50 + rng.uniform(0, 0.03, n), -0.12 + rng.uniform(0, 0.04, n)])
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    return latlon, images


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny model trained for a few SW-CLIP steps and saved with every artefact."""
    root = tmp_path_factory.mktemp("runs")
    latlon, images = _world()
    model = SWCLIP(DEMO_CONFIG)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = SoftClipLoss(100.0)
    x = torch.stack([model.preprocess_train(im) for im in images])
    model.train()
    before = model.visual.proj.detach().clone()
    for step in range(3):
        loss = sum(loss_fn(**model(x, latlon)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, model.visual.proj)
    model.eval()
    gallery = Gallery.from_locations(model, latlon)
    emb = Predictor(model, gallery).encode(images[:8], progress=False)
    preds = pd.DataFrame({"id": [str(i) for i in range(8)], "lat": latlon[:8, 0], "lon": latlon[:8, 1]})
    run_dir = root / "tiny"
    save_run(
        run_dir,
        model,
        {"loss": {"name": "swclip", "sigma_m": 100.0}, "seed": 0},
        {
            "gallery": gallery,
            "embeddings": emb,
            "predictions": preds,
            "metrics": {"median_m": 12.5},
            "train_log": [{"step": 1, "loss": 4.1}, {"step": 2, "loss": 3.9}],
        },
    )
    return root, run_dir, model, images


def test_manifest_describes_the_run(trained_run):
    _, run_dir, model, _ = trained_run
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["schema_version"] == runs.SCHEMA_VERSION
    assert m["model"] == DEMO_CONFIG.to_dict()
    assert m["loss"] == {"name": "swclip", "sigma_m": 100.0}
    assert m["library_versions"]["torch"] == torch.__version__
    assert "git_commit" in m and len(m["weights_sha256"]) == 64
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [
            "manifest.json",
            "model.safetensors",
            "gallery.npz",
            "embeddings.npy",
            "predictions.parquet",
            "metrics.json",
            "train_log.csv",
        ]
    )


def test_artefacts_roundtrip(trained_run):
    _, run_dir, model, _ = trained_run
    run = load_run(run_dir)
    loaded_model, manifest, artefacts = run
    assert loaded_model is run.model and manifest["seed"] == 0 and artefacts.has("gallery")
    sha = manifest["weights_sha256"]
    assert run.metrics() == {"median_m": 12.5, "weights_sha256": sha}  # the weights it measured
    assert runs.artefact_weights(run_dir) == {"predictions": sha, "metrics": sha}
    assert run.train_log()["loss"].tolist() == [4.1, 3.9]
    assert run.predictions()["id"].tolist() == [str(i) for i in range(8)]
    assert run.embeddings().dtype == np.float16 and run.embeddings().shape == (8, model.embed_dim)
    g = run.gallery()
    assert len(g) == 64 and g.embeddings.dtype == np.float32


def test_fresh_process_rebuilds_bit_identical_predictions(trained_run, tmp_path):
    root, run_dir, model, images = trained_run
    for i, im in enumerate(images[:6]):
        im.save(tmp_path / f"{i}.png")
    predictor = Predictor(model, runs.read_gallery(run_dir))
    here = predictor.predict(images[:6], top_k=5, progress=False)
    here_emb = predictor.encode(images[:6], progress=False)  # the same code path (and thread count) as there
    script = textwrap.dedent(f"""
        import numpy as np
        from PIL import Image
        from swclip.runs import load_predictor
        p = load_predictor({str(run_dir)!r}, runs_root={str(root)!r})
        ims = [Image.open({str(tmp_path)!r} + f"/{{i}}.png").convert("RGB") for i in range(6)]
        preds = p.predict(ims, top_k=5, progress=False)
        np.savez({str(tmp_path / "out.npz")!r}, emb=p.encode(ims, progress=False),
                 index=np.stack([q.index for q in preds]), prob=np.stack([q.prob for q in preds]),
                 est=np.array([q.estimate for q in preds]), radius=np.array([q.radius_m for q in preds]))
    """)
    # The child inherits this machine's environment (OPENBLAS_CORETYPE and the rest) and only adds
    # what it needs: a fresh process on the same machine, not a different machine.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120, env=env)
    out = np.load(tmp_path / "out.npz")
    # What a rebuild promises: the same weights and gallery give bit-identical torch embeddings, the
    # same faiss ranking and the same float32 probabilities (the same kernels run on the same inputs).
    assert out["emb"].tobytes() == here_emb.tobytes()
    assert np.array_equal(out["index"], np.stack([q.index for q in here]))
    assert out["prob"].tobytes() == np.stack([q.prob for q in here]).tobytes()
    # What it does not promise: knn-kde's float64 mean-shift and the weighted radius are numpy
    # reductions, whose last bits depend on the BLAS kernel the process picks (OPENBLAS_CORETYPE,
    # thread count), and a last-bit change can move the mean-shift's stop by one iteration, which
    # moves the estimate by less than knn_kde's stopping step (tol_m = 1 cm). Hence 2 cm, and 1e-6 m on the radius.
    moved_m = haversine_m(out["est"], np.array([q.estimate for q in here]))
    assert moved_m.max() < 0.02, moved_m
    np.testing.assert_allclose(out["radius"], np.array([q.radius_m for q in here]), rtol=0, atol=1e-6)


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in ("manifest.json", "model.safetensors"):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_corrupt_weights_are_refused(trained_run, tmp_path):
    _, run_dir, _, _ = trained_run
    bad = _copy_run(run_dir, tmp_path / "truncated")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="does not match the manifest's weights_sha256"):
        load_run(bad)
    m = json.loads((bad / "manifest.json").read_text())
    del m["weights_sha256"]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="not a readable safetensors file"):
        load_run(bad)


def test_mismatched_weights_are_refused(trained_run, tmp_path):
    _, run_dir, _, _ = trained_run
    bad = _copy_run(run_dir, tmp_path / "wrong_shape")
    m = json.loads((bad / "manifest.json").read_text())
    hidden = m["model"]["gps_hidden"]  # what the weights were trained with
    m["model"]["gps_hidden"] = hidden // 2
    del m["weights_sha256"]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=r"wrong shape .*location\.mlps\.0\.0\.weight"):
        load_run(bad)
    m["model"]["gps_hidden"] = hidden  # shapes right again: now only the number of scales is wrong
    m["model"]["gps_scales"] = m["model"]["gps_scales"][:-1]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=r"unexpected keys \['location\.mlps\.5"):
        load_run(bad)
    m["model"]["gps_scales"] += [2.0**16, 2.0**18]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=r"missing keys \['location\.mlps\.6"):
        load_run(bad)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(schema_version=99), "schema_version 99"),
        (lambda m: m.pop("schema_version"), "no schema_version"),
        (lambda m: m.pop("model"), "no 'model' config"),
        (lambda m: m["model"].update(colour="red"), "unknown key"),
    ],
)
def test_bad_manifests_are_refused(trained_run, tmp_path, edit, message):
    _, run_dir, _, _ = trained_run
    bad = _copy_run(run_dir, tmp_path / "bad")
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=message):
        load_run(bad)


def test_truncated_manifest_and_missing_run(trained_run, tmp_path):
    _, run_dir, _, _ = trained_run
    bad = _copy_run(run_dir, tmp_path / "bad")
    (bad / "manifest.json").write_text((run_dir / "manifest.json").read_text()[:50])
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(bad)
    with pytest.raises(RunError, match="no manifest.json"):
        load_run(tmp_path / "nothing")


def test_paths_escaping_the_runs_root_are_refused(trained_run, tmp_path):
    root, run_dir, _, _ = trained_run
    with pytest.raises(RunError, match="escapes the runs root"):
        load_run("../tiny/../..", runs_root=run_dir)
    with pytest.raises(RunError, match="escapes the runs root"):
        load_run(run_dir, runs_root=tmp_path)
    link_root = tmp_path / "root"
    link_root.mkdir()
    (link_root / "sneaky").symlink_to(run_dir)
    with pytest.raises(RunError, match="escapes the runs root"):
        load_run("sneaky", runs_root=link_root)
    assert load_run(run_dir.name, runs_root=root).manifest["seed"] == 0
    # an artefact that is a symlink out of the run directory is refused too
    linked = _copy_run(run_dir, tmp_path / "linked")
    (linked / "metrics.json").symlink_to(tmp_path / "outside.json")
    (tmp_path / "outside.json").write_text("{}")
    with pytest.raises(RunError, match="escapes"):
        runs.read_metrics(linked)


def test_pickled_numpy_is_refused(tmp_path):
    np.save(tmp_path / "embeddings.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RunError, match="pickled objects are refused"):
        runs.read_embeddings(tmp_path)


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")

    def dies(tmp):
        tmp.write_bytes(b"half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new"


def test_list_runs_lists_good_and_broken_runs(trained_run, tmp_path):
    root, run_dir, _, _ = trained_run
    _copy_run(run_dir, tmp_path / "a")
    (tmp_path / "demo" / "b").mkdir(parents=True)
    (tmp_path / "demo" / "b" / "manifest.json").write_text("{broken")
    (tmp_path / "not_a_run").mkdir()
    found = runs.list_runs(tmp_path)
    assert [r.run_id for r in found] == ["a", "demo/b"]
    assert found[0].manifest["seed"] == 0 and found[0].error is None
    assert found[1].manifest is None and "not valid JSON" in found[1].error
    assert runs.list_runs(tmp_path / "missing") == []


def test_save_run_refuses_reserved_keys_and_unknown_artefacts(trained_run, tmp_path):
    _, _, model, _ = trained_run
    with pytest.raises(ValueError, match="written by save_run"):
        save_run(tmp_path / "x", model, {"schema_version": 7})
    with pytest.raises(ValueError, match="unknown artefact"):
        save_run(tmp_path / "x", model, {}, {"pictures": []})


def test_swclip_predict_cli(trained_run, tmp_path, capsys):
    from swclip.cli import main

    root, run_dir, model, images = trained_run
    images[0].save(tmp_path / "a.png")
    assert main(["predict", "--run", str(run_dir), "--runs-root", str(root), "--json", str(tmp_path / "a.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    [expected] = Predictor(model, runs.read_gallery(run_dir)).predict([images[0]], progress=False)
    assert [r["rank"] for r in out["top_k"]] == [1, 2, 3, 4, 5]
    assert [(r["lat"], r["lon"]) for r in out["top_k"]] == [tuple(x) for x in expected.latlon_topk.tolist()]
    assert out["estimate"] == list(expected.estimate)
    assert main(["predict", "--run", str(run_dir), str(tmp_path / "a.png")]) == 0
    assert "knn-kde estimate" in capsys.readouterr().out


def test_update_manifest_changes_keys_atomically_and_guards_the_weights(tmp_path):
    run_dir = runs.save_run(tmp_path / "run", SWCLIP(DEMO_CONFIG), {"loss": {"name": "clip"}})
    before = runs.read_manifest(run_dir)
    after = runs.update_manifest(run_dir, demo=True, metrics={"median_m": 12.5})
    assert after == runs.read_manifest(run_dir) == {**before, "demo": True, "metrics": {"median_m": 12.5}}
    for key in runs.RESERVED_KEYS:
        with pytest.raises(ValueError, match="save_run"):
            runs.update_manifest(run_dir, **{key: "x"})
    assert runs.read_manifest(run_dir) == after
    run = runs.Run.open(run_dir)
    assert run.model is None and run.update_manifest(note="hi")["note"] == "hi" and run.manifest["note"] == "hi"
    runs.load_run(run_dir)  # weights still match their sha256: nothing but the named keys changed


def test_gallery_keeps_ids_and_city_apart(tmp_path):
    emb = np.eye(3, 8, dtype=np.float32)
    g = Gallery(
        np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        emb,
        kind="image",
        ids=["a.jpg", "b.jpg", "c.jpg"],
        city=["Leeds", "Leeds", "York"],
    )
    back = Gallery.load(g.save(tmp_path / "g.npz"))
    assert back.ids.tolist() == ["a.jpg", "b.jpg", "c.jpg"] and back.city.tolist() == ["Leeds", "Leeds", "York"]
    model = SWCLIP(dataclasses.replace(DEMO_CONFIG, location_tower="text"))
    loc = Gallery.from_locations(model, np.array([[53.8, -1.55], [53.96, -1.08]]), city=["Leeds", "York"])
    assert loc.ids is None and loc.city.tolist() == ["Leeds", "York"]
    with pytest.raises(ValueError, match="city must be"):
        Gallery(np.array([[1.0, 2.0]]), emb[:1], city=["a", "b"])
