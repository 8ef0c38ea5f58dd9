"""eval/device_check.sh's parts that need no GPU: the plan (--dry-run), the one-line exit on a
machine without one, each step's 'skipped' record, and the report built from step records."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "eval" / "device_check.sh"


def no_gpu_env(tmp_path: Path) -> dict[str, str]:
    """PATH without nvidia-smi, torch told to see no CUDA device."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    path = f"{bin_dir}:/usr/bin:/bin"
    if shutil.which("nvidia-smi", path=path):
        pytest.skip("nvidia-smi is on the system PATH")
    return {**os.environ, "PATH": path, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable,
            "TMPDIR": str(tmp_path)}


def test_dry_run_prints_the_plan_within_eight_minutes(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--work", str(tmp_path / "w")], cwd=REPO,
                       env=no_gpu_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    budget = int(re.search(r"budget (\d+) s of 480", r.stdout).group(1))
    assert budget <= 480
    limits = [int(s) for s in re.findall(r"\((\d+) s\)", r.stdout)]
    assert sum(limits) == budget and len(limits) == 6  # install, 4 steps, report
    for step in ("1. faiss", "2. train", "3. ray", "4. server", "device-check.{json,md}"):
        assert step in r.stdout
    assert "gpus seen now:   0" in r.stdout and "would stop at once with status 3" in r.stdout
    assert not (tmp_path / "w").exists()


def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    before = sorted((REPO / "eval/results").rglob("device-check.*"))
    r = subprocess.run(["bash", str(SCRIPT), "--work", str(tmp_path / "w")], cwd=REPO, env=no_gpu_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    assert r.stdout.strip().splitlines() == [
        "device_check: no GPU found (nvidia-smi and torch see none): nothing to check; run this on a GPU machine"]
    assert not (tmp_path / "w").exists()
    assert sorted((REPO / "eval/results").rglob("device-check.*")) == before


def test_unknown_option_is_one_error(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--fast"], cwd=REPO, env=no_gpu_env(tmp_path), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "unknown option '--fast'" in r.stderr


def test_steps_without_a_gpu_are_skipped_with_the_reason(tmp_path, monkeypatch):
    from eval import device_check as dc

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("RKD_DEVICE_LLM", raising=False)
    faiss = dc.step_faiss(tmp_path)
    assert faiss["status"] == "skipped" and "sees no GPU" in faiss["why"]
    assert dc.step_train(tmp_path) == {"status": "skipped", "why": "torch sees no CUDA device"}
    assert dc.step_server(tmp_path)["status"] == "skipped"
    assert not list(tmp_path.iterdir())  # nothing built for a skipped step


def test_report_renders_the_step_records(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "faiss.json").write_text(json.dumps({"status": "ok", "faiss": "1.9", "gpus": 1, "n": 1000, "dim": 8,
                                                 "queries": 10, "rows": [
        {"index": "flat", "device": "gpu", "build_s": 0.1, "qps": 5000.0, "recall@10_of_flat": 1.0},
        {"index": "ivfpq", "device": "gpu", "build_s": 1.5, "qps": 9000.0, "recall@10_of_flat": 0.97}]}))
    (work / "train.json").write_text(json.dumps({"status": "ok", "gpus": 1, "runs": [
        {"procs": 1, "status": "ok", "examples_per_s": 812.5}]}))
    (work / "ray.json").write_text(json.dumps({"status": "skipped", "why": "Ray is not installed (extra 'scale')"}))
    out = tmp_path / "out" / "device-check"
    r = subprocess.run([sys.executable, "-m", "eval.device_check", "report", "--work", str(work), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    md = out.with_suffix(".md").read_text()
    assert "| faiss (1,000 x 8) | ok | flat on gpu: build 0.1 s, 5,000 QPS, recall@10 1.0; ivfpq on gpu" in md
    assert "| train (torchrun, nccl) | ok | 1 GPU(s): 812.5 examples/s |" in md
    assert "| ray | skipped | Ray is not installed (extra 'scale') |" in md
    assert "| server | not run |" in md
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["steps"]["train"]["runs"][0]["examples_per_s"] == 812.5 and "versions" in rec
