"""swclip.workflows.benchmark: the result files say what they were measured on, load included."""

import json
import os

import pytest

from swclip.workflows import benchmark


@pytest.mark.skipif(not hasattr(os, "getloadavg"), reason="no load average on this platform")
def test_result_files_record_the_machine_and_its_load(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "RESULTS_DIR", tmp_path)
    before = os.getloadavg()
    path = benchmark.write_result("probe", {"rows": [1, 2]})
    after = os.getloadavg()
    data = json.loads(path.read_text())
    assert path.parent == tmp_path and path.name == f"probe-{benchmark.machine_tag()}.json"
    assert data["rows"] == [1, 2] and data["machine"]["cpu_cores"] == os.cpu_count()
    if os.path.exists("/proc/cpuinfo"):  # the model name as the kernel reports it
        models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        assert data["machine"]["cpu_model"] == (models[0] if models else None)
    load = data["machine"]["load_average"]
    assert len(load) == 3
    for got, lo, hi in zip(load, before, after):  # the 1/5/15-min averages read while writing
        assert min(lo, hi) - 0.01 <= got <= max(lo, hi) + 0.01
