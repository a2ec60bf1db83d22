"""Test-session settings: with pytest-xdist (the default, see pyproject.toml) each worker process gets one intra-op
thread, so that workers share the cores instead of thrashing them (tiny models gain nothing from a second thread)."""

import os

import torch


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
