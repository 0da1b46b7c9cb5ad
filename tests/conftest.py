"""Shared test set-up: offline hub, fixed seeds, small hypothesis budgets on 2 cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a named pretrained tag fails at once, no ~45 s retry
# pytest-xdist runs one worker per core: each worker computes on one thread, or
# torch's and faiss's OpenMP threads spin-wait for cores the other worker holds.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")
