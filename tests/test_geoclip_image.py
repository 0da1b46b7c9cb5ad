"""GeoCLIP on photos: the wheel's image head against a hand-written reference, the weights lookup, end to end."""

import argparse
import csv
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from reference import geoclip_head_reference
from safetensors.torch import save_file

from swclip.cli import main
from swclip.method import geoclip_image
from swclip.method.geoclip_image import (
    OPENAI_HF_REPO,
    GeoCLIPHead,
    GeoCLIPImage,
    find_vit_l14_weights,
    read_image_tower_state,
    softmax_topk,
)
from swclip.workflows.baseline import geoclip_gallery, geoclip_predictions


def wheel_file(relative: str) -> Path:
    """geoclip/model/<relative> of the installed wheel, found without importing it (its __init__ needs
    transformers)."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None:
        pytest.skip("geoclip wheel not installed")
    return Path(spec.submodule_search_locations[0]) / "model" / relative


def wheel_head():
    """(MLP state dict, t) straight from the wheel's files."""
    mlp = torch.load(wheel_file("weights/image_encoder_mlp_weights.pth"), map_location="cpu", weights_only=True)
    log_scale = torch.load(wheel_file("weights/logit_scale_weights.pth"), map_location="cpu", weights_only=True)
    return mlp, log_scale


def test_head_matches_geoclip_reference():
    mlp_state, log_scale = wheel_head()
    assert abs(float(log_scale) - 3.6810) < 1e-4  # the stored value (NOTES on the wheel): exp(t) ≈ 39.7
    g = torch.Generator().manual_seed(0)
    clip_features = torch.randn(64, 768, generator=g) * 0.5  # (B, 768), about CLIP's scale
    location_features = torch.randn(2000, 512, generator=g)  # (N, 512), unnormalised as the encoder gives them

    head = GeoCLIPHead()
    with torch.no_grad():
        ours = head(clip_features)  # (B, 512)
        prob, index = softmax_topk(ours, torch.nn.functional.normalize(location_features, dim=-1), head.scale(), 2000)
    image_ref, prob_ref = geoclip_head_reference(clip_features, mlp_state, log_scale, location_features)

    assert ours.shape == (64, 512) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().numpy(), image_ref.numpy(), atol=1e-5)
    assert float(head.scale()) == pytest.approx(np.exp(float(log_scale)), rel=1e-6)
    full = np.zeros_like(prob_ref.numpy())
    np.put_along_axis(full, index.numpy(), prob.double().numpy(), axis=1)  # top-N back in gallery order
    np.testing.assert_allclose(full, prob_ref.numpy(), atol=1e-5)
    assert np.all(np.diff(prob.numpy(), axis=1) <= 0)  # best first


def test_softmax_topk_refuses_k_outside_the_gallery():
    with pytest.raises(ValueError, match="top_k must be between 1 and the gallery's 3 places, got 4"):
        softmax_topk(torch.eye(3), torch.eye(3), 1.0, 4)


def test_open_clip_names_the_same_repository():
    import open_clip

    assert open_clip.get_pretrained_cfg("ViT-L-14", "openai")["hf_hub"].rstrip("/") == OPENAI_HF_REPO


def fake_hub_cache(hub: Path, name: str = "open_clip_model.safetensors") -> Path:
    """The layout huggingface_hub leaves: models--org--name/refs/main and snapshots/<revision>/<file>."""
    repo = hub / ("models--" + OPENAI_HF_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    path = repo / "snapshots" / "0123abcd" / name
    save_file(
        {"visual.proj": torch.ones(2, 3), "visual.ln_post.bias": torch.zeros(2), "text_projection": torch.ones(1)}, path
    )
    return path


def test_weights_are_found_in_the_hugging_face_cache_and_read_as_the_image_tower(tmp_path):
    path = fake_hub_cache(tmp_path / "hub")
    assert find_vit_l14_weights(cache_dir=tmp_path / "hub") == path
    state = read_image_tower_state(path)
    assert sorted(state) == ["ln_post.bias", "proj"]  # visual.* only, prefix gone
    torch.save({"state_dict": {"module.visual.proj": torch.ones(2)}}, tmp_path / "ddp.pt")
    assert list(read_image_tower_state(tmp_path / "ddp.pt")) == ["proj"]


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path):
    path = tmp_path / "vit.pt"
    torch.save({"proj": torch.ones(2), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: not a tensors-only torch checkpoint"):
        read_image_tower_state(path)


def test_missing_weights_error_names_the_file_and_where_it_looked(tmp_path, monkeypatch, capsys):
    hub = tmp_path / "hub"
    monkeypatch.setattr(geoclip_image, "HF_HUB_CACHE", str(hub))  # not the user's own cache
    for call in (lambda: find_vit_l14_weights(), lambda: GeoCLIPImage()):
        with pytest.raises(FileNotFoundError) as err:
            call()
        msg = str(err.value)
        assert "open_clip_model.safetensors" in msg and "open_clip_pytorch_model.bin" in msg
        assert str(hub / "models--timm--vit_large_patch14_clip_224.openai") in msg
        assert "open_clip.create_model('ViT-L-14', pretrained='openai')" in msg and "--weights" in msg

    missing = tmp_path / "models" / "open_clip_model.safetensors"
    with pytest.raises(FileNotFoundError, match=f"GeoCLIP image weights {re.escape(str(missing))}: no such file"):
        GeoCLIPImage(weights=missing)
    table = tmp_path / "photos.csv"
    table.write_text("id,image,lat,lon,city\na,a.jpg,51.5,-0.1,London\n")
    argv = ["baseline", "geoclip", "--table", str(table), "--out", str(tmp_path / "run"), "--weights", str(missing)]
    assert main(argv) == 2  # one line, no traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("swclip: error: ") and str(missing) in err and "\n" not in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------- end to end, ViT-L-14


@pytest.fixture(scope="module")
def random_geoclip():
    """GeoCLIP with a randomly initialised ViT-L-14 (~300M parameters) and its 94,123-place gallery."""
    model = GeoCLIPImage(random_init=True)
    return model, geoclip_gallery(model)


def photos(root: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    for name, (w, h) in (("a.jpg", (320, 240)), ("b.png", (200, 300))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
    return pd.DataFrame(
        {
            "id": ["a", "b"],
            "image": ["a.jpg", "b.png"],
            "lat": [48.85, -33.9],
            "lon": [2.35, 151.2],
            "city": ["Paris", "Sydney"],
        }
    )


@pytest.mark.slow
def test_geoclip_predictions_end_to_end_on_a_random_vit_l14(random_geoclip, tmp_path):
    model, gallery = random_geoclip
    with open(wheel_file("gps_gallery/coordinates_100K.csv")) as f:
        rows = [(float(r["LAT"]), float(r["LON"])) for r in csv.DictReader(f)]
    assert len(rows) == 100_000 and len(gallery) == len(set(rows)) == 94_123  # each place once
    assert gallery.embeddings.shape == (94_123, 512)

    seen = []  # what the ViT hands the head: the (B, 768) projected embedding
    hook = model.visual.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    try:
        table = photos(tmp_path)
        pred, emb = geoclip_predictions(
            table, tmp_path, top_k=5, batch_size=2, device="cpu", model=model, gallery=gallery, progress=False
        )
    finally:
        hook.remove()

    assert len(seen) == 1 and seen[0].shape == (2, 768)  # one forward of the two photos
    ks = range(1, 6)
    assert list(pred.columns) == (
        ["id", "lat", "lon", "pred_lat", "pred_lon"]
        + [f"{c}_{k}" for k in ks for c in ("pred_lat", "pred_lon", "prob")]
        + ["image", "city"]
    )
    assert pred["id"].tolist() == ["a", "b"] and pred["city"].tolist() == ["Paris", "Sydney"]
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    mlp_state, log_scale = wheel_head()
    image_ref, prob_ref = geoclip_head_reference(seen[0], mlp_state, log_scale, torch.from_numpy(gallery.embeddings))
    np.testing.assert_allclose(emb, image_ref.numpy(), atol=1e-5)
    prob_ref = prob_ref.numpy()  # (2, 94123) GeoCLIP's softmax over the gallery
    np.testing.assert_allclose(prob_ref.sum(axis=1), 1.0, atol=1e-9)
    top = np.argsort(-prob_ref, axis=1)[:, :5]
    probs = pred[[f"prob_{k}" for k in ks]].to_numpy()
    np.testing.assert_allclose(probs, np.take_along_axis(prob_ref, top, axis=1), atol=1e-5)
    assert np.all(probs > 0) and np.all(probs.sum(axis=1) <= 1 + 1e-6)
    np.testing.assert_array_equal(pred[[f"pred_lat_{k}" for k in ks]].to_numpy(), gallery.latlon[top, 0])
    np.testing.assert_array_equal(pred[[f"pred_lon_{k}" for k in ks]].to_numpy(), gallery.latlon[top, 1])
    np.testing.assert_array_equal(pred[["pred_lat", "pred_lon"]].to_numpy(), gallery.latlon[top[:, 0]])
    assert pred.attrs["source"]["gallery"]["n_gallery"] == 94_123 and pred.attrs["source"]["image_weights"] is None

    # what `swclip baseline geoclip` then writes: an imported run the app opens, with the embeddings
    from swclip.workflows.importer import import_predictions

    run = import_predictions(
        pred, tmp_path / "run", model="geoclip", source=pred.attrs["source"], embeddings=emb, images_root=tmp_path
    )
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "imported" and manifest["model"] == "geoclip"
    stored = pd.read_parquet(run / "predictions.parquet")
    assert stored["id"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(
        stored[["pred_lat", "pred_lon"]].to_numpy(), pred[["pred_lat", "pred_lon"]].to_numpy()
    )
    np.testing.assert_allclose(np.load(run / "embeddings.npy", allow_pickle=False).astype(np.float32), emb, atol=1e-3)


@pytest.mark.slow
def test_weights_of_another_architecture_are_refused(random_geoclip, tmp_path):
    model, _ = random_geoclip
    path = tmp_path / "vit_b.safetensors"
    save_file({"visual.proj": torch.zeros(768, 512), "visual.class_embedding": torch.zeros(768)}, path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: not ViT-L-14 image-tower weights"):
        model._load_visual(path)
    save_file({"visual.class_embedding": torch.zeros(1024)}, path)
    with pytest.raises(ValueError, match=r"not an open_clip ViT-L-14 checkpoint: 295 image-tower tensor\(s\) missing"):
        model._load_visual(path)
