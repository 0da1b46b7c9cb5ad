"""The Experiments page under AppTest, on the committed experiment-*.json (real grid output)."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from swclip.analysis import experiment_stats as es
from swclip.workflows import results as rx

pytestmark = [pytest.mark.xdist_group(name="app"), pytest.mark.slow]

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "experiments.py")
COMMITTED = rx.find_experiments(None)


def _app(monkeypatch, runs_root) -> AppTest:
    monkeypatch.setenv("SWCLIP_RUNS_DIR", str(runs_root))
    return AppTest.from_file(PAGE, default_timeout=180)


def _text(at) -> str:
    return "\n".join(str(m.value) for m in at.markdown) + "\n".join(str(c.value) for c in at.caption)


@pytest.mark.skipif(not COMMITTED, reason="no committed benchmarks/results/experiment-*.json")
def test_page_shows_the_committed_experiment(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path).run()
    assert not at.exception, [e.value for e in at.exception]
    exp = rx.load_experiment(COMMITTED[0])
    assert at.selectbox[0].value == f"committed: {COMMITTED[0].name}"
    assert at.selectbox[0].value == "committed: experiment-gaussian-b100.json", (
        "opens on the README's headline protocol"
    )
    assert exp["name"] in _text(at)
    assert ("Partial experiment" in "\n".join(str(w.value) for w in at.warning)) == (not exp["status"]["complete"])
    # the bootstrap table: one row per non-CLIP config, its Δ median is the library's, computed here independently
    table = es.summary_table(exp, n_boot=1000, seed=0)
    boot = at.dataframe[0].value.set_index("config")
    assert set(boot.index) == set(table["config"]) - {"clip"}
    row = table.set_index("config").loc[es.VAL_SIGMA]
    assert boot.loc[es.VAL_SIGMA, "Δ median (m)"] == pytest.approx(row["d_median_m"])
    ci = f"[{row['d_median_m_lo']:+.0f}, {row['d_median_m_hi']:+.0f}]"
    assert boot.loc[es.VAL_SIGMA, "Δ median 95 % CI (seeds + blocks)"] == ci
    assert boot.loc[es.VAL_SIGMA, "role"] == "headline (pre-registered)"
    assert (boot.drop(es.VAL_SIGMA)["role"] == "exploratory").all()
    assert "block-only CI (seeds fixed)" in boot.columns
    assert f"Pre-registered headline**: `{es.VAL_SIGMA}` against `clip`" in _text(at) and ci in _text(at)
    # per city: the same rows on the first city's test rows, against the library's table for that city
    city = es.held_out_cities(exp)[0]
    city_table = es.summary_table(exp, n_boot=1000, seed=0, city=city).set_index("config")
    shown = at.dataframe[-1].value.set_index("config")  # the last table: the per-city one
    assert shown.loc[es.VAL_SIGMA, "Δ median (m)"] == pytest.approx(city_table.loc[es.VAL_SIGMA, "d_median_m"])
    assert len(at.get("plotly_chart")) == 2  # σ curve + per-city bars
    at.selectbox[1].set_value("acc@250m").run()  # another metric redraws without error
    assert not at.exception


def test_page_reads_an_experiment_by_path_inside_the_runs_folder_only(monkeypatch, tmp_path):
    if not COMMITTED:
        pytest.skip("no committed experiment to copy")
    (tmp_path / "exp").mkdir()
    exp = json.loads(Path(COMMITTED[0]).read_text())
    exp["git_commits"] = ["0123456789abcdef0123456789abcdef01234567"]  # as a grid run since 2026-12-01 writes
    (tmp_path / "exp" / "experiment.json").write_text(json.dumps(exp))
    at = _app(monkeypatch, tmp_path).run()
    assert f"runs: {Path('exp') / 'experiment.json'}" in at.selectbox[0].options
    committed_commits = json.loads(Path(COMMITTED[0]).read_text()).get("git_commits")
    assert ("Code: " in _text(at)) == bool(committed_commits)  # files written before provenance name none
    at.text_input[0].set_value("exp/experiment.json").run()
    assert not at.exception and not at.error
    assert "Code: `0123456789ab`" in _text(at)  # the runs' commit, shortened
    at.text_input[0].set_value("../../etc/passwd").run()
    assert at.error and "Cannot open" in at.error[0].value


def test_page_says_what_to_do_without_any_experiment(monkeypatch, tmp_path):
    monkeypatch.setattr(rx, "RESULTS_DIR", tmp_path / "none")  # AppTest runs in this process
    at = _app(monkeypatch, tmp_path).run()
    assert not at.exception
    assert any("swclip experiment" in str(w.value) for w in at.warning)


def test_page_shows_the_controls_and_the_provenance(monkeypatch, tmp_path):
    """An experiment with control runs (here the committed CLIP runs relabelled, errors scaled) and provenance:
    the controls' comparison table lists SW-CLIP against each, and the machine caption names CPU and versions."""
    if not COMMITTED:
        pytest.skip("no committed experiment to copy")
    exp = json.loads(Path(COMMITTED[0]).read_text())
    old_kinds = {"clip", "swclip", "swclip-var", "swclip+nc", "semivariogram"}  # the grid before the controls
    exp["runs"] = [r for r in exp["runs"] if r["kind"] in old_kinds]
    clip = [r for r in exp["runs"] if r["kind"] == "clip"]
    for kind, config, scale in (("clip-tuned", "clip-t0.03-lr0.004", 0.97), ("smooth", "smooth-s150", 0.95)):
        for r in clip:
            e = [round(x * scale, 1) for x in r["test_error_m"]]
            exp["runs"].append(
                {**r, "name": f"{config}-seed{r['seed']}", "config": config, "kind": kind, "test_error_m": e}
            )
    exp["provenance"] = dict(
        git_commits=["abc"],
        cpu_models=["Test CPU 9000"],
        libraries={"torch": ["2.9"], "numpy": ["2.3"], "faiss": ["1.12"], "open_clip": ["3.2"]},
        threads=["torch 1, faiss 1"],
    )
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "experiment.json").write_text(json.dumps(exp))
    at = _app(monkeypatch, tmp_path).run()
    at.text_input[0].set_value("exp/experiment.json").run()
    assert not at.exception and not at.error
    assert "Machine: Test CPU 9000 · threads per run: torch 1, faiss 1 · torch 2.9, numpy 2.3, faiss 1.12" in _text(at)
    controls = at.dataframe[1].value
    assert list(controls["A"]) == ["clip", es.VAL_CLIP, es.VAL_SMOOTH]
    assert list(controls["role"]) == ["headline (pre-registered)", "exploratory", "exploratory"]
    table = es.comparisons_table(rx.load_experiment(tmp_path / "exp" / "experiment.json"), n_boot=1000, seed=0)
    assert list(controls["Δ median (m)"]) == list(table["d_median_m"].round(0))
