"""Our GPS tower with gps_init=geoclip against GeoCLIP's own LocationEncoder (the geoclip wheel)."""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from swclip.method.model import SWCLIP, ModelConfig


def geoclip_location_encoder_class():
    """geoclip.model.location_encoder.LocationEncoder, GeoCLIP's own code.

    geoclip/__init__ imports its image encoder, which needs transformers (not a dependency
    of ours); its location encoder needs only torch. So the two package levels are entered as
    bare namespaces and the location-encoder module is imported from the wheel's files as is.
    """
    spec = importlib.util.find_spec("geoclip")
    if spec is None:
        pytest.skip("geoclip wheel not installed")
    root = spec.submodule_search_locations[0]
    saved = {k: sys.modules.get(k) for k in ("geoclip", "geoclip.model")}
    for name, path in (("geoclip", root), ("geoclip.model", f"{root}/model")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        sys.modules[name] = pkg
    try:
        from geoclip.model.location_encoder import LocationEncoder
    finally:  # the bare namespaces must not shadow the real package for later imports in this process
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return LocationEncoder


@pytest.fixture(scope="module")
def towers():
    LocationEncoder = geoclip_location_encoder_class()
    theirs = LocationEncoder(from_pretrained=True).eval()  # loads the wheel's weights itself
    ours = SWCLIP(ModelConfig(arch="swclip-tiny", embed_dim=512, gps_init="geoclip")).eval()
    return ours, theirs


def random_latlon(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.rand(n, generator=g, dtype=torch.float64) * 180 - 90,
            torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180,
        ],
        1,
    )


def test_gps_init_geoclip_equals_geoclip_location_encoder(towers):
    ours, theirs = towers
    ll = random_latlon()
    with torch.no_grad():
        got = ours.location(ll).double()
        ref64 = theirs.double()(ll).double()  # GeoCLIP's code in float64 (it sums the scales into a float32
        # buffer); as it runs in float32, its own rounding is 2.4e-5 here
        theirs.float()
        ref32 = theirs(ll.float()).double()
    assert (got - ref64).abs().max().item() < 5e-6  # measured 2.8e-6; our old x-normalisation gave 9.6e-6
    assert (got - ref32).abs().max().item() < 1e-4  # against GeoCLIP as it runs (float32)
    # and the normalised embedding the model hands to the loss
    emb = ours.encode_location(ll)
    torch.testing.assert_close(emb.double(), torch.nn.functional.normalize(ref64, dim=1), atol=1e-5, rtol=0)


def test_geoclip_needs_its_architecture():
    with pytest.raises(ValueError, match="gps_hidden=128"):
        SWCLIP(ModelConfig(arch="swclip-tiny", embed_dim=512, gps_init="geoclip", gps_hidden=128))
    with pytest.raises(ValueError, match="location_tower"):
        ModelConfig(location_tower="text", gps_init="geoclip")


def test_geoclip_gallery_is_the_wheels_csv():
    import csv

    from swclip.method.geoclip_wheel import GALLERY_FILE, geoclip_gallery_latlon, package_file

    latlon = geoclip_gallery_latlon()
    assert latlon.shape == (100_000, 2) and latlon.dtype == np.float64
    with open(package_file(GALLERY_FILE)) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["LAT", "LON"] and len(rows) == 100_001
    for k in (1, 500, 100_000):  # read back by hand, row by row
        assert latlon[k - 1].tolist() == [float(rows[k][0]), float(rows[k][1])]
    assert np.abs(latlon[:, 0]).max() <= 90 and np.abs(latlon[:, 1]).max() <= 180
