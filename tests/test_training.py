"""swclip.training (config, objective, optim, checkpoint) and swclip.training.batches:
config, schedules, param groups, checkpoints, data order."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from swclip.method.losses import ClipLoss, SoftClipLoss
from swclip.method.model import DEMO_CONFIG, ModelConfig
from swclip.method.semivariogram_loss import SemivariogramWeightedLoss
from swclip.training.batches import PreloadedData, ResumableSampler, augment_batch, epoch_indices
from swclip.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from swclip.training.config import CONFIG_DIR, LossConfig, load_config, save_config
from swclip.training.objective import build_loss, sigma_at
from swclip.training.optim import clamp_logit_scale, lr_factor, param_groups

# ---------------------------------------------------------------- config


def test_config_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"steps": 10, "loss": {"name": "swclip", "sigma_m": 150}, "model": {"embed_dim": 32}}))
    cfg = load_config(p, ["loss.sigma_m=50", "optim.lr=1e-3", "data.preload=true", "model.embed_dim=16"])
    assert cfg.steps == 10 and cfg.loss.name == "swclip" and cfg.loss.sigma_m == 50
    assert cfg.optim.lr == 1e-3 and cfg.data.preload is True and cfg.model == {"embed_dim": 16}
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg


@pytest.mark.parametrize(
    "override, needle",
    [
        (["loss.sigmaa_m=5"], "loss.sigmaa_m"),
        (["stepz=5"], "stepz"),
        (["loss.name=triplet"], "triplet"),
        (["loss.name=swclip", "loss.kernel=box"], "box"),
        (["loss.name=swclip", "loss.sigma_m=-1"], "sigma_m"),
        (["batch_size=10", "optim.accum_steps=3"], "accum_steps"),
        (["precision=fp8"], "fp8"),
        (["run_id=../escape"], "run_id"),
        (["novalue"], "key.sub=value"),
    ],
)
def test_config_rejects_bad_settings_by_name(override, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        load_config(None, override)


def test_shipped_configs_load():
    configs = sorted(Path(__file__).resolve().parents[1].joinpath("train", "configs").glob("*.yaml")) + sorted(
        CONFIG_DIR.glob("*.yaml")
    )
    assert configs, "train/configs/*.yaml and swclip/training/configs/*.yaml missing"
    names = {c.stem for c in configs}
    assert any(n.startswith("demo_") for n in names) and any(n.startswith("vitb32_") for n in names)
    for c in configs:
        load_config(c)


def test_demo_configs_are_the_demo_model():
    """The demo configs name DEMO_CONFIG (`model: demo`) instead of copying it, so they cannot drift."""
    demo = sorted(CONFIG_DIR.glob("demo_*.yaml"))
    assert len(demo) == 4
    for c in demo:
        assert ModelConfig.from_dict(load_config(c).model) == DEMO_CONFIG, c.name
    # overrides still reach into the preset
    assert load_config(demo[0], ["model.gps_hidden=32"]).model["gps_hidden"] == 32


# ---------------------------------------------------------------- schedules


def test_lr_factor_matches_torch_linear_then_cosine():
    """Peer reference: torch's SequentialLR(LinearLR warmup, CosineAnnealingLR)."""
    total, warm, base, min_ratio = 50, 7, 0.1, 0.1
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    ref = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=base * min_ratio),
        ],
        milestones=[warm],
    )
    for step in range(total):
        # LinearLR reaches 1 at iteration warm-1; ours at step warm-1 as well: (step+1)/warm
        assert math.isclose(lr_factor(step, total, warm, min_ratio) * base, opt.param_groups[0]["lr"], rel_tol=1e-9), (
            step
        )
        opt.step()
        ref.step()


def test_sigma_schedule_geometric_then_flat():
    cfg = LossConfig(name="swclip", sigma_m=50, sigma_start_m=800, sigma_schedule_steps=100)
    assert sigma_at(cfg, 0, 1000) == pytest.approx(800)
    assert sigma_at(cfg, 50, 1000) == pytest.approx(200)  # sqrt(800·50)
    assert sigma_at(cfg, 100, 1000) == pytest.approx(50) and sigma_at(cfg, 500, 1000) == pytest.approx(50)
    assert sigma_at(LossConfig(sigma_m=75), 10, 100) == 75


# ---------------------------------------------------------------- optimiser


def test_param_groups_no_decay_on_norms_biases_logit_scale():
    import open_clip

    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    )
    groups = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    decay = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.2 and groups[1]["weight_decay"] == 0.0
    assert "logit_scale" in no_decay
    assert all(("ln" in n or "bias" in n or "logit_scale" in n or model.get_parameter(n).ndim < 2) for n in no_decay)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in decay
    assert (
        "visual.transformer.resblocks.0.ln_1.weight" in no_decay
        and "visual.transformer.resblocks.0.ln_1.bias" in no_decay
    )
    assert decay.isdisjoint(no_decay) and decay | no_decay == set(names.values())


def test_clamp_logit_scale():
    m = torch.nn.Module()
    m.logit_scale = torch.nn.Parameter(torch.tensor(math.log(500.0)))
    clamp_logit_scale(m, 100.0)
    assert m.logit_scale.exp().item() == pytest.approx(100.0)


def test_build_loss_selection():
    assert isinstance(build_loss(LossConfig(name="clip")), ClipLoss)
    sw = build_loss(LossConfig(name="swclip", sigma_m=40, kernel="exponential"))
    assert isinstance(sw, SoftClipLoss) and sw.sigma_m == 40 and sw.kernel == "exponential" and sw.nc_weight == 0
    nc = build_loss(LossConfig(name="swclip+nc", sigma_m=40, nc_weight=0.3, nc_temperature=0.2))
    assert nc.nc_weight == pytest.approx(0.3) and nc.nc.temperature == 0.2
    sv = build_loss(
        LossConfig(name="semivariogram", beta=2, bank_size=64, refit_every=5), fit_fn=lambda embeddings, latlon: None
    )
    assert isinstance(sv, SemivariogramWeightedLoss) and sv.beta == 2 and sv.bank.size == 64 and sv.refit_every == 5


# ---------------------------------------------------------------- RNG and checkpoints


def test_rng_state_round_trip_and_weights_only(tmp_path):
    seed_everything(3)
    state = rng_state()
    torch.save(state, tmp_path / "s.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    set_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_checkpoint_atomic_keep_last_and_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    for step in (2, 4, 6):
        save_checkpoint(
            tmp_path, step, model, {"optimizer": opt.state_dict(), "rng": [rng_state()]}, {"epoch": 0}, keep_last=2
        )
    # a half-written checkpoint left by a killed writer is never picked
    (tmp_path / "checkpoints" / "step_00000008.tmp123").mkdir()
    (tmp_path / "checkpoints" / "step_00000009").mkdir()  # no meta.json: incomplete
    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step_00000004", "step_00000006"]
    assert resolve_resume("auto", tmp_path) == found[-1] and resolve_resume(str(tmp_path)) == found[-1]
    weights, state, meta = load_checkpoint(found[-1])
    assert meta["step"] == 6
    assert torch.equal(weights["weight"], model.weight.detach())
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    model = torch.nn.Linear(2, 2)
    ck = save_checkpoint(tmp_path, 1, model, {"x": torch.zeros(1)}, {})
    torch.save({"evil": Path("/etc")}, ck / "state.pt")  # an arbitrary Python object needs unpickling
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(ck)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    assert resolve_resume("auto", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_resume(str(tmp_path))


# ---------------------------------------------------------------- data order and augmentation


@given(n=st.integers(8, 200), bs=st.integers(1, 16), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_two_ranks_see_the_single_process_global_batches(n, bs, seed, epoch):
    """Rank r's batch k and rank r' batch k together = the single process's batch k of size 2·bs (as sets)."""
    single = epoch_indices(n, epoch, seed, 0, 1)
    ranks = [epoch_indices(n, epoch, seed, r, 2) for r in range(2)]
    steps = (n // 2) // bs
    for k in range(steps):
        both = np.concatenate([r[k * bs : (k + 1) * bs] for r in ranks])
        assert sorted(both) == sorted(single[k * 2 * bs : (k + 1) * 2 * bs])


def test_resumable_sampler_starts_mid_epoch():
    s = ResumableSampler(50, 8, seed=1)
    s.set_position(2, 0)
    full = list(s)
    s.set_position(2, 3)
    rest = list(s)
    assert rest == full[24:48] and len(s) == len(rest) and all(e == 2 for e, _ in rest)


def test_batch_augmentation_is_fixed_by_its_position():
    from open_clip.constants import OPENAI_DATASET_MEAN as M
    from open_clip.constants import OPENAI_DATASET_STD as S

    x = torch.randn(4, 3, 16, 16)
    a = augment_batch(x, 0, 1, 2, 0, M, S)
    assert torch.equal(a, augment_batch(x, 0, 1, 2, 0, M, S))
    for other in [(1, 1, 2, 0), (0, 2, 2, 0), (0, 1, 3, 0), (0, 1, 2, 1)]:  # seed, epoch, batch, rank each matter
        assert not torch.equal(a, augment_batch(x, *other, M, S))


def test_preloaded_batches_resume_exactly():
    imgs = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    latlon = np.column_stack([np.linspace(48, 48.01, 40), np.full(40, 11.0)])
    d = PreloadedData(imgs, latlon, 8, seed=3, device=torch.device("cpu"))
    full = list(d.batches(1))
    tail = list(d.batches(1, start_batch=2))
    assert len(full) == 5 and len(tail) == 3
    for a, b in zip(full[2:], tail):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["index"], b["index"])
    assert torch.allclose(full[0]["latlon"], torch.as_tensor(latlon)[full[0]["index"]])
    with pytest.raises(ValueError, match="cannot fill one batch"):
        PreloadedData(imgs[:5], latlon[:5], 8, 0, torch.device("cpu"))
