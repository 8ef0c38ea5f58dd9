"""Locations and switches read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

DATA_HOME_ENV = "RKD_DATA_HOME"
CACHE_ENV = "RKD_CACHE"


def data_home() -> Path:
    """Where datasets live: ``$RKD_DATA_HOME``, else ``~/.cache/retrieval-kd/datasets``."""
    env = os.environ.get(DATA_HOME_ENV)
    return Path(env).expanduser().resolve() if env else cache_home() / "datasets"


def cache_home() -> Path:
    """Where fetched models and downloads live (never inside the repository)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "retrieval-kd"


def offline() -> bool:
    """True when network downloads must not be attempted (RKD_OFFLINE or HF_HUB_OFFLINE)."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("RKD_OFFLINE", "HF_HUB_OFFLINE")
    )
