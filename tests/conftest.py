"""Test-session settings: with pytest-xdist (the default, see pyproject.toml) each worker process gets one intra-op
thread, so that workers share the cores instead of thrashing them (tiny models gain nothing from a second thread)."""

import os

import pytest
import torch


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``),
    also without xdist: on two shared cores, OpenMP threads spin against each other and run tiny ops ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
