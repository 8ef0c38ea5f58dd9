"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval_kd.settings import DATA_HOME_ENV


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding the real dataset copies (e.g. ``scifact/``).

    ``$RKD_DATA_HOME`` when set (CI sets it to ``../shared/datasets``, resolved against the
    working directory the same way :func:`retrieval_kd.settings.data_home` does), else
    ``<repo>/../shared/datasets``.
    """
    env = os.environ.get(DATA_HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"
