"""The training config's place tolerance reaches the table reader; a bad value is refused by validate_config."""

import numpy as np
import pandas as pd
import pytest

from swclip.geo import haversine_m
from swclip.training.config import load_config
from swclip.training.loop import read_source


def test_place_tolerance_reaches_the_reader_and_is_checked(tmp_path):
    # two places 5 km apart, four photos each with their coordinates jittered by up to ~30 m
    rng = np.random.default_rng(0)
    centres = np.array([[48.85, 2.35], [48.85, 2.418]])
    latlon = np.repeat(centres, 4, axis=0) + rng.uniform(-2.5e-4, 2.5e-4, (8, 2))
    assert haversine_m(centres[0], centres[1]) > 4000
    pd.DataFrame(
        {"id": [f"p{i}" for i in range(8)], "image": [f"{i}.jpg" for i in range(8)], "lat": latlon[:, 0],
         "lon": latlon[:, 1], "city": "Paris"}
    ).to_csv(tmp_path / "t.csv", index=False)  # fmt: skip
    table = str(tmp_path / "t.csv")
    one_m = read_source(table, str(tmp_path), "table", "none", False, None, 1.0)
    wide = read_source(table, str(tmp_path), "table", "none", False, None, 1000.0)
    assert one_m["place_id"].nunique() == 8  # jittered photos are distinct places at 1 m
    assert wide["place_id"].nunique() <= 4 and wide["place_id"].nunique() >= 2  # km cells merge them (grid edges)
    cfg = load_config(None, ["data.place_tolerance_m=250"])
    assert cfg.data.place_tolerance_m == 250
    for bad in ("0", "-1", ".nan"):
        with pytest.raises(ValueError, match="data.place_tolerance_m must be a positive number of metres"):
            load_config(None, [f"data.place_tolerance_m={bad}"])
