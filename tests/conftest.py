"""Fixtures and hooks only (shared functions and constants are in helpers.py): no network, the
demo dataset, a finished training run, and the ``slow`` marker on every test that uses one of
the end-to-end fixtures."""
from __future__ import annotations

import zlib  # noqa: F401  (before paddle)

import urllib.request
from pathlib import Path

import pytest

from helpers import base_args, make_data, run_cli
from helpers import *  # noqa: F401,F403  for tests written before helpers.py (from conftest import)

# Fixtures that train a model or run the CLI through a full mode: a test using any of them
# (directly or through another fixture) is marked slow, so ``make test-fast`` leaves it out
# and a new test that asks for ``run_dir`` is slow without anyone remembering to say so.
SLOW_FIXTURES = {"run_dir", "old_run", "run_v2"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any accidental download fails the test, except loopback (used to test offline errors)."""
    real = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        target = url if isinstance(url, str) else url.full_url
        if "127.0.0.1" not in target and "localhost" not in target:
            raise AssertionError(f"test tried to reach the network: {target}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """12 demo samples at 64x64; two val images have other sizes (mixed-size batches)."""
    return make_data(tmp_path_factory.mktemp("d") / "data")


@pytest.fixture(scope="session")
def run_dir(data, tmp_path_factory) -> Path:
    """A finished training run on ``data`` (shared by the train, predict and serving tests)."""
    out = tmp_path_factory.mktemp("run") / "out"
    r = run_cli(*base_args(data, out))
    assert r.returncode == 0, r.stderr + r.stdout
    return out
