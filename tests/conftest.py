"""Shared test set-up: offline hub, fixed seeds, small hypothesis budgets on 2 cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a named pretrained tag fails at once, no ~45 s retry

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")
