"""SWCLIP model and location towers: shapes, losses, references from open_clip and pyproj, locking, weights."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from swclip.method.losses import ClipLoss, SoftClipLoss
from swclip.method.model import DEMO_CONFIG, SWCLIP, ModelConfig, PretrainedUnavailableError
from swclip.method.towers import (
    DEFAULT_TEMPLATE,
    EE_UNIT_KM,
    EE_X_MAX,
    format_locations,
    gps_wavelength_km,
    normalised_equal_earth,
)

LONDON = np.array([[51.50721, -0.12758], [51.50800, -0.12000], [51.49000, -0.13000], [51.51500, -0.10000]])


@pytest.fixture(scope="module")
def gps_model():
    return SWCLIP(DEMO_CONFIG)


@pytest.fixture(scope="module")
def text_model():
    return SWCLIP(dataclasses.replace(DEMO_CONFIG, location_tower="text", context_tokens=3))


def _images(n, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_returns_normalised_dict_the_losses_accept(gps_model):
    out = gps_model(_images(4), LONDON)
    assert set(out) == {"image_features", "location_features", "logit_scale", "latlon"}
    for k in ("image_features", "location_features"):
        assert out[k].shape == (4, gps_model.embed_dim) and out[k].dtype == torch.float32
        torch.testing.assert_close(out[k].norm(dim=1), torch.ones(4))
    assert out["logit_scale"].ndim == 0
    assert math.isclose(float(out["logit_scale"].detach()), 1 / 0.07, rel_tol=1e-5)
    torch.testing.assert_close(out["latlon"], torch.as_tensor(LONDON))
    total = 0
    for loss in (ClipLoss(), SoftClipLoss(100.0, nc_weight=0.5)):
        terms = loss(**out)
        assert all(torch.isfinite(v) for v in terms.values())
        total = total + sum(terms.values())
    total.backward()
    assert gps_model.logit_scale.grad is not None


def test_rebuilt_model_is_identical():
    a, b = SWCLIP(DEMO_CONFIG), SWCLIP(DEMO_CONFIG)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = SWCLIP(dataclasses.replace(DEMO_CONFIG, gps_seed=1))
    assert not torch.equal(sa["location.rff.0.b"], c.state_dict()["location.rff.0.b"])


def test_gps_tower_holds_no_text_tower(gps_model):
    names = [n for n, _ in gps_model.named_parameters()]
    assert not any("token_embedding" in n or n.startswith("text") for n in names)
    assert {n.split(".")[0] for n in names} == {"visual", "location", "logit_scale"}


def test_equal_earth_matches_pyproj():
    pyproj = pytest.importorskip("pyproj")
    rng = np.random.default_rng(0)
    ll = np.column_stack([rng.uniform(-89, 89, 200), rng.uniform(-180, 180, 200)])
    t = pyproj.Transformer.from_crs("+proj=longlat +R=1 +no_defs", "+proj=eqearth +R=1 +no_defs", always_xy=True)
    x, y = t.transform(ll[:, 1], ll[:, 0])
    x_max = abs(t.transform(180.0, 0.0)[0])  # pyproj wraps +180 to -180
    ours = normalised_equal_earth(torch.as_tensor(ll)).numpy()
    # the scale is GeoCLIP's SF / 180 (SF = 66.50336, towers.GEOCLIP_SF), which puts ±180° at |x| = 1 + 6.6e-8,
    # so a tower with GeoCLIP's weights computes GeoCLIP (tests/test_geoclip_init.py); the shape is pyproj's
    np.testing.assert_allclose(ours * EE_X_MAX, np.column_stack([x, y]), atol=1e-9)
    assert math.isclose(EE_X_MAX, x_max, rel_tol=1e-7)
    assert math.isclose(EE_UNIT_KM, EE_X_MAX * 6371.0088, rel_tol=1e-12)


def test_fourier_features_follow_their_formula(gps_model):
    rff = gps_model.location.rff[2]
    u = normalised_equal_earth(torch.as_tensor(LONDON))
    b = rff.b.double().numpy()
    expected = []
    for row in u.numpy():  # naive loop over frequencies
        phases = [2 * math.pi * (bj[0] * row[0] + bj[1] * row[1]) for bj in b]
        expected.append([math.cos(p) for p in phases] + [math.sin(p) for p in phases])
    np.testing.assert_allclose(rff(u).numpy(), np.array(expected), atol=1e-9)
    assert math.isclose(float(rff.b.std()), rff.frequency_scale, rel_tol=0.25)  # B ~ N(0, σ²)


def test_fine_scales_tell_street_level_neighbours_apart():
    """50 m apart: GeoCLIP's scales (finest ≈ 67 km) barely move; the demo's 2^16 scale (≈ 263 m) does."""
    pair = np.array([[51.50721, -0.12758], [51.50766, -0.12758]])  # 50 m north
    coarse = SWCLIP(ModelConfig(gps_rff_dim=64, gps_hidden=128, gps_depth=2))
    fine = SWCLIP(DEMO_CONFIG)
    with torch.no_grad():
        cos_coarse = float(torch.dot(*coarse.encode_location(pair)))
        cos_fine = float(torch.dot(*fine.encode_location(pair)))
    assert cos_coarse > 0.999
    assert cos_fine < cos_coarse - 0.005
    assert 0.2 < gps_wavelength_km(2**16) < 0.3


def test_location_text_template():
    assert format_locations(LONDON[:1], ["London"]) == [
        "a street view photo at latitude 51.50721, longitude -0.12758 in London"
    ]
    assert format_locations(LONDON[:1]) == ["a street view photo at latitude 51.50721, longitude -0.12758"]
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig(location_tower="text", template="{lat} {lon} {country}")
    with pytest.raises(ValueError, match="lat"):
        ModelConfig(location_tower="text", template="somewhere in {city}")


def test_text_tower_matches_open_clip_encode_text():
    import open_clip

    model = SWCLIP(dataclasses.replace(DEMO_CONFIG, location_tower="text"))
    clip = open_clip.create_model("swclip-tiny", force_custom_text=True)
    clip.text.load_state_dict(model.location.text.state_dict())
    texts = format_locations(LONDON, ["London"] * 4, DEFAULT_TEMPLATE)
    tokens = open_clip.get_tokenizer("swclip-tiny")(texts)
    with torch.no_grad():
        ref = clip.encode_text(tokens, normalize=True)
        ours = model.encode_location(LONDON, ["London"] * 4)
        ours_texts = model(_images(4), LONDON, texts=texts)["location_features"]
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_texts, ref)


def test_text_tower_with_context_tokens_trains(text_model):
    out = text_model(_images(4), LONDON, city=["London"] * 4)
    assert out["location_features"].shape == (4, text_model.embed_dim)
    sum(SoftClipLoss(200.0)(**out).values()).backward()
    assert text_model.location.context.grad is not None and text_model.location.context.grad.abs().sum() > 0
    tokens = text_model.location.tokenize(["a street view photo at latitude 1.00000, longitude 2.00000"])
    assert tokens.shape == (1, 48) and (tokens[0, 1:4] == 0).all()  # 3 context slots after the start token


def test_lit_lock_freezes_all_but_the_projections():
    model = SWCLIP(dataclasses.replace(DEMO_CONFIG, lock_image=True, lock_location=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = {
        f"location.mlps.{i}.{len(model.location.mlps[i]) - 1}.{w}"
        for i in range(len(model.location.mlps))
        for w in ("weight", "bias")
    }
    assert trainable == {"visual.proj", "logit_scale"} | heads
    out = model(_images(4), LONDON)
    sum(ClipLoss()(**out).values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert model.visual.proj.grad is not None

    rn = SWCLIP(dataclasses.replace(DEMO_CONFIG, arch="swclip-tiny-rn", lock_image=True))
    trainable = {n for n, p in rn.named_parameters() if p.requires_grad and n.startswith("visual")}
    assert trainable == {"visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias"}
    rn.train()
    assert all(not m.training for m in rn.visual.modules() if isinstance(m, torch.nn.BatchNorm2d))

    text = SWCLIP(dataclasses.replace(DEMO_CONFIG, location_tower="text", context_tokens=2, lock_location=True))
    trainable = {n for n, p in text.named_parameters() if p.requires_grad and n.startswith("location")}
    assert trainable == {"location.text.text_projection", "location.context"}


def test_dtype_and_grad_checkpointing():
    model = SWCLIP(dataclasses.replace(DEMO_CONFIG, dtype="bfloat16", grad_checkpointing=True))
    assert model.visual.proj.dtype == torch.bfloat16 and model.visual.transformer.grad_checkpointing
    out = model(_images(4), LONDON)
    assert out["image_features"].dtype == torch.float32
    sum(ClipLoss()(**out).values()).backward()
    assert model.visual.conv1.weight.grad is not None


def test_offline_pretrained_tag_fails_fast_naming_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # "Fast" means: offline, nothing waits on the network. Record every connection attempt
    # (the real socket still runs) instead of timing the call on a shared machine.
    import socket

    attempts = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def recording_getaddrinfo(host, *args, **kwargs):  # a name look-up is where a connection starts
        attempts.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def recording_connect(self, address):
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    with pytest.raises(PretrainedUnavailableError, match=r"'laion2b_s34b_b79k'.*no network"):
        SWCLIP(ModelConfig(arch="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert attempts == [], f"tried the network although HF_HUB_OFFLINE=1: {attempts}"
    with pytest.raises(ValueError, match="neither a file nor an open_clip tag"):
        SWCLIP(ModelConfig(arch="ViT-B-32", pretrained="no-such-tag"))
    with pytest.raises(FileNotFoundError, match="not found"):
        SWCLIP(ModelConfig(pretrained="/nonexistent/weights.safetensors"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_file_loads(tmp_path, suffix):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(123)
    clip = open_clip.create_model("swclip-tiny")  # a plain open_clip CLIP checkpoint
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)  # read back by open_clip with weights_only=True
    for tower in ("gps", "text"):
        model = SWCLIP(dataclasses.replace(DEMO_CONFIG, pretrained=str(path), location_tower=tower))
        torch.testing.assert_close(model.visual.proj, clip.visual.proj, rtol=0, atol=0)
    torch.testing.assert_close(model.location.text.token_embedding.weight, clip.token_embedding.weight, rtol=0, atol=0)


def test_config_roundtrip_and_unknown_keys():
    d = DEMO_CONFIG.to_dict()
    assert ModelConfig.from_dict(d) == DEMO_CONFIG
    with pytest.raises(ValueError, match="unknown key"):
        ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="location_tower"):
        ModelConfig(location_tower="radar")
