"""Shared fixtures: small BEIR folders, and the real data and models (skipped, with the reason,
when they are not here).

Markers (registered in pyproject.toml): ``slow`` (left out of the fast subset,
``pytest -m "not slow"``), ``shared_data`` (real datasets under ``$RKD_DATA_HOME`` or
``../shared/datasets``, or real fetched models), ``pyserini`` (pyserini and its JVM),
``llm_server`` (starts a real llama.cpp OpenAI-compatible server), ``network`` (needs the internet).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval_kd.settings import DATA_HOME_ENV
from tests.beir import tiny_beir

# The tests pin stage keys and compare backends against torch fp32, so they run with the old
# default; the ``auto`` choice itself is tested in test_backends.py (RKD_BACKEND set by the caller wins).
os.environ.setdefault("RKD_BACKEND", "torch:fp32")

# The suite loads torch, ONNX Runtime, OpenVINO and llama.cpp into one process. On 2026-12-02 one
# of three full runs printed "784 passed" and then died in interpreter teardown (exit 139, a
# segfault in native library finalisation, seen once). The session's own exit status
# is what a test run means, so after pytest has finished and written every report the process
# ends with it, skipping native teardown. RKD_TEST_NATIVE_TEARDOWN=1 keeps the normal teardown
# (scripts/test.sh sets PYTHONFAULTHANDLER, so a crash there names its thread).
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    if _EXIT_STATUS and os.environ.get("RKD_TEST_NATIVE_TEARDOWN") != "1":
        import sys

        from retrieval_kd.numba_cache import remove_run_cache

        remove_run_cache()  # os._exit skips the atexit hook that removes it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


@pytest.fixture
def tiny_ds(tmp_path: Path) -> Path:
    """The three-document BEIR folder of :func:`tests.beir.tiny_beir`, at ``tmp_path / "tiny"``."""
    return tiny_beir(tmp_path / "tiny")


# --------------------------------------------------------------------------- real data and models


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


@pytest.fixture(scope="session")
def shared_dataset(shared_data: Path) -> Callable[..., Path]:
    """``shared_dataset(name, *files)``: the real copy ``<shared_data>/<name>``, or a skip whose
    reason names the missing folder or file (``files`` are paths inside it that the test reads)."""

    def get(name: str, *files: str) -> Path:
        root = shared_data / name
        for need in (root, *(root / f for f in files)):
            if not need.exists():
                pytest.skip(f"shared data missing: {need} (no {name} copy; set {DATA_HOME_ENV} "
                            f"to the folder holding {name}/)")
        return root

    return get


@pytest.fixture(scope="session")
def scifact_dir(shared_dataset) -> Path:
    """The real SciFact copy (``corpus.jsonl`` and its qrels), or a skip naming what is missing."""
    return shared_dataset("scifact", "corpus.jsonl", "queries.jsonl", "qrels/test.tsv")


@pytest.fixture(scope="session")
def fetched_model() -> Callable[[str], Path]:
    """``fetched_model(name)``: the folder of a registered model already fetched into the user
    cache, or a skip naming it (the tests never fetch: that needs the network)."""

    def get(name: str) -> Path:
        from retrieval_kd.models.fetch import FETCH_RECORD, get_spec, model_dir

        folder = model_dir(get_spec(name))
        if not (folder / FETCH_RECORD).is_file():
            pytest.skip(f"model missing: {name} is not fetched into {folder} "
                        f"(run `rkd models fetch {name}` where the network is reachable)")
        return folder

    return get
