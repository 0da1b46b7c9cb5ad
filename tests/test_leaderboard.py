"""The Runs page's leaderboard: several runs scored on the photos they all hold, abstentions counted."""

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.analysis.metrics import leaderboard


def naive(runs: dict) -> tuple[dict, int]:
    """A plain reference: dicts and sets, statistics.median, a loop for coverage and acc@1km."""
    shared = set.intersection(*(set(ids) for ids, _ in runs.values()))
    out = {}
    for name, (ids, err) in runs.items():
        by_id = dict(zip(ids, err))
        errs = [by_id[i] for i in sorted(shared)]
        answered = [e for e in errs if not np.isnan(e)]
        out[name] = {
            "n": len(answered),
            "coverage": len(answered) / len(errs),
            "median_m": statistics.median(answered) if answered else float("nan"),
            "acc@1km": sum(e <= 1000 for e in answered) / len(answered) if answered else float("nan"),
        }
    return out, len(shared)


@st.composite
def runs_sharing_ids(draw):
    universe = [f"id{i}" for i in range(draw(st.integers(3, 30)))]
    out = {}
    for r in range(draw(st.integers(2, 4))):
        ids = draw(st.lists(st.sampled_from(universe), min_size=1, max_size=len(universe), unique=True))
        ids = ids + [i for i in universe[:2] if i not in ids]  # two ids every run holds
        err = [
            draw(st.one_of(st.just(float("nan")), st.floats(0, 5000, allow_nan=False, allow_infinity=False)))
            for _ in ids
        ]
        out[f"run{r}"] = (np.array(ids), np.array(err))
    return out


@settings(max_examples=150, deadline=None)
@given(runs_sharing_ids())
def test_leaderboard_scores_every_run_on_the_shared_ids_like_a_naive_loop(runs):
    board, n = leaderboard(runs)
    ref, n_ref = naive({k: (list(ids), list(err)) for k, (ids, err) in runs.items()})
    assert n == n_ref >= 2 and board.keys() == ref.keys()
    for name, r in ref.items():
        assert board[name]["n"] == r["n"] and board[name]["n_rows"] == n
        assert board[name]["coverage"] == pytest.approx(r["coverage"])
        if r["n"]:
            assert board[name]["median_m"] == pytest.approx(r["median_m"])
            assert board[name]["acc@1km"] == pytest.approx(r["acc@1km"])
        else:
            assert board[name]["geoscore"] == 0.0


def test_an_abstaining_run_keeps_its_gaps_and_runs_without_shared_ids_give_no_board():
    runs = {
        "a": (np.array(["x", "y", "z"]), np.array([10.0, 20.0, 30.0])),
        "b": (np.array(["z", "y", "w"]), np.array([np.nan, 5.0, 1.0])),  # no prediction for z; w not shared
    }
    board, n = leaderboard(runs)
    assert n == 2 and board["a"]["median_m"] == 25.0 and board["b"]["coverage"] == 0.5
    assert board["b"]["median_m"] == 5.0 and board["b"]["geoscore"] < board["b"]["geoscore_answered"]
    assert leaderboard({"a": runs["a"], "c": (np.array(["q"]), np.array([1.0]))}) == ({}, 0)
    with pytest.raises(ValueError, match="ids repeat"):
        leaderboard({"a": runs["a"], "d": (np.array(["x", "x"]), np.array([1.0, 2.0]))})
