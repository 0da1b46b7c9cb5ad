"""Shared test set-up: offline hub, fixed seeds, small hypothesis budgets on 2 cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a named pretrained tag fails at once, no ~45 s retry
# pytest-xdist runs one worker per core: each worker computes on one thread, or
# torch's and faiss's OpenMP threads spin-wait for cores the other worker holds.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")


import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest installs the app script as ``__main__`` for good; put pytest's back.

    Otherwise a later test that starts processes with the "spawn" method (the
    demo builder's pool, the renderer's workers) re-imports app.py in each child.
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
