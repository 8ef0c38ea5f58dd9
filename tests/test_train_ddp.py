"""``rkd train`` in two processes (torchrun, gloo on CPU): one model written by rank 0 alone, the
same steps as one process with the global batch, and a resume after SIGKILL of either rank.

Each run goes through :data:`WORKER`, the real command line with two test-only additions: an
audit hook (:mod:`tests.kill_hook`'s events) that records every file a rank writes under the
models folder, and a trainer callback that records each optimiser step (and can slow the steps
down, so a rank can be killed mid-training).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, os, sys, time
from pathlib import Path

from tests.kill_hook import WATCHED, _path

watch, logs = os.environ["DDP_TEST_WATCH"], Path(os.environ["DDP_TEST_LOG"])
sleep = float(os.environ.get("DDP_TEST_SLEEP", "0"))
rank = os.environ.get("RANK", "?")
log = open(logs / f"rank{rank}.jsonl", "a", buffering=1)  # opened before the hook watches

def hook(event, args):
    if event in WATCHED:
        try:
            path = _path(event, args)
        except Exception:
            return
        if path and watch in path:
            log.write(json.dumps({"event": event, "path": path}) + "\\n")

sys.addaudithook(hook)

from transformers import TrainerCallback

import retrieval_kd.train.stage as stage

class Steps(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        log.write(json.dumps({"step": state.global_step}) + "\\n")
        time.sleep(sleep)

make = stage.make_trainer
stage.make_trainer = lambda cfg, model, data, out, callbacks=(), world=None: make(
    cfg, model, data, out, [*callbacks, Steps()], world)

from retrieval_kd.cli.main import main

sys.argv = ["rkd", *sys.argv[1:]]
main()
"""


def torchrun(tmp_path: Path, run: str, *args: str, sleep: float = 0.0) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2 WORKER args`` (logs under ``tmp_path/run``)."""
    logs = tmp_path / run
    logs.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "DDP_TEST_WATCH": str(tmp_path / "models"), "DDP_TEST_LOG": str(logs), "DDP_TEST_SLEEP": str(sleep)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, out, err


def records(tmp_path: Path, run: str, rank: int) -> list[dict]:
    f = tmp_path / run / f"rank{rank}.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def write_config(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "train.yaml"  # JSON is YAML
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    return path


def weights(folder: Path) -> dict:
    """Every tensor of a model folder's safetensors files, keyed by file and name."""
    from safetensors.torch import load_file

    return {f"{f.relative_to(folder)}:{k}": v for f in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(f)).items()}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bi-encoder", "colbert", "cross-encoder"])
def test_two_processes_write_one_model_and_step_as_one_process_with_the_global_batch(train_env, tmp_path, family):  # noqa: F811
    from retrieval_kd.train.stage import train_stage
    from retrieval_kd.train.students import FAMILY_CLASS, load_student

    models = tmp_path / "models"
    out = models / "ddp"
    # 12 kl rows: 2 per process x 2 processes = 3 steps; a checkpoint at step 2 (all ranks save state)
    cfg = tiny_config(train_env, family, out, batch_size=2, max_steps=-1, epochs=1, save_steps=2)
    code, stdout, stderr = finish(torchrun(tmp_path, "ddp", "train", "-c", str(write_config(tmp_path, cfg))))
    assert code == 0, stderr[-3000:]
    assert stdout.strip().splitlines() == [str(out)]  # rank 0 alone reports
    assert sorted(p.name for p in models.iterdir()) == ["ddp"]  # no work, temporary or lock left
    man = json.loads((out / "manifest.json").read_text())
    assert man["distributed"] == {"world_size": 2, "backend": "gloo", "per_device_batch_size": 2,
                                  "global_batch_size": 4}
    assert [s["world_size"] for s in man["sessions"]] == [2]
    rows = man["examples"]["rows"]
    assert rows == 12 and man["outputs"]["global_step"] == rows // 4
    for rank in (0, 1):  # both trained every global step
        assert [r["step"] for r in records(tmp_path, "ddp", rank) if "step" in r] == [1, 2, 3]
    # rank 1 wrote no file: it only made sure the checkpoints' folders exist (its own random state,
    # rng_state_1.pth, goes in by torch.save, which the audit hook does not see)
    written = [r for r in records(tmp_path, "ddp", 1) if "path" in r]
    assert written and all(r["event"] == "os.mkdir" and Path(r["path"]).name.startswith("checkpoint-")
                           for r in written), written
    assert (out / "README.md").is_file() and (out / "modules.json").is_file()
    renames = [r["path"] for r in records(tmp_path, "ddp", 0) if r.get("event") == "os.rename"]
    assert renames[-1].endswith(f" -> {out}")  # rank 0 put the model in place
    assert type(load_student(family, out)).__name__ == FAMILY_CLASS[family]

    # one process with the global batch: the same steps on the same rows, the same weights
    one = train_stage(cfg.model_copy(update={"output": tmp_path / "one", "batch_size": 4}), progress=False)
    man1 = json.loads((one / "manifest.json").read_text())
    assert man1["distributed"]["world_size"] == 1 and man1["run_key"] != man["run_key"]
    assert man1["outputs"]["global_step"] == man["outputs"]["global_step"]
    assert [e["loss"] for e in man1["loss_log"]] == pytest.approx([e["loss"] for e in man["loss_log"]], abs=1e-4)
    # Adam moves a weight by about lr a step whatever its gradient's size, so a near-zero gradient
    # whose sign rounding flips (a bias the loss hardly sees) may move the other way: compare
    # the share of weights apart by more than a tenth of one step (wrong gradients: about half)
    w1, w2 = weights(one), weights(out)
    assert sorted(w1) == sorted(w2)
    total = sum(v.numel() for v in w1.values())
    apart = sum(int(((w1[k] - w2[k]).abs() > cfg.lr / 10).sum()) for k in w1)
    assert apart < total / 1000, (apart, total)


def rank_pid(proc: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker of ``rank`` (None while it has not started)."""
    import psutil

    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            env = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("RANK") == str(rank) and "DDP_TEST_LOG" in env:
            return child.pid
    return None


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_a_rank_killed_mid_training_resumes_on_every_rank_from_the_last_checkpoint(train_env, tmp_path, victim):  # noqa: F811
    from retrieval_kd.train.stage import CHECKPOINTS, work_dir
    from retrieval_kd.train.students import load_student

    out = tmp_path / "models" / "resumed"
    # label-only InfoNCE (gathered across the processes), 10 steps, a checkpoint every 2
    cfg = tiny_config(train_env, "bi-encoder", out, teacher="none", losses="infonce", batch_size=2,
                      max_steps=10, save_steps=2)
    args = ("train", "-c", str(write_config(tmp_path, cfg)))
    ckpts = work_dir(out) / CHECKPOINTS
    proc = torchrun(tmp_path, "first", *args, sleep=0.4)
    try:
        deadline = time.time() + 180
        while not (ckpts / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        time.sleep(0.2)
        pid = rank_pid(proc, victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        code, _, stderr = finish(proc, timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert code != 0  # torchrun reports the killed rank and stops the other one
    assert not out.exists()  # nothing half-written at the output
    done = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert done and done[-1] < 10, done

    code, stdout, stderr = finish(torchrun(tmp_path, "again", *args))
    assert code == 0, stderr[-3000:]
    man = json.loads((out / "manifest.json").read_text())
    killed, resumed = man["sessions"]
    assert killed["start_step"] == 0 and "end_step" not in killed
    last = resumed["start_step"]
    assert last > 0 and resumed["resumed_from"] == f"checkpoint-{last}" and resumed["world_size"] == 2
    assert f"resuming from checkpoint-{last}" in stderr
    for rank in (0, 1):  # every rank went on from the same checkpoint
        steps = [r["step"] for r in records(tmp_path, "again", rank) if "step" in r]
        assert steps == list(range(last + 1, 11)), (rank, steps)
    assert man["outputs"]["global_step"] == 10 and [e["step"] for e in man["loss_log"]][-1] == 10
    assert not work_dir(out).exists() and sorted(p.name for p in out.parent.iterdir()) == ["resumed"]
    assert load_student("bi-encoder", out).encode(["cell protein"]).shape[0] == 1


def test_run_key_counts_the_processes_only_when_there_are_several():
    from retrieval_kd.train.config import TrainConfig
    from retrieval_kd.train.examples import ExampleStats
    from retrieval_kd.train.stage import run_key

    cfg, stats = TrainConfig(family="bi-encoder", init="x", dataset="d", scores=["s"]), ExampleStats(fingerprint="f")
    assert run_key(cfg, stats, "sha", 1) == run_key(cfg, stats, "sha")  # one process: the key it always had
    assert len({run_key(cfg, stats, "sha", n) for n in (1, 2, 4)}) == 3  # resumed only in as many processes


def test_a_world_of_one_without_a_launcher_and_a_clear_error_without_its_rendezvous(monkeypatch):
    from retrieval_kd.errors import RkdError
    from retrieval_kd.train.distributed import World, is_main_process, world

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world() == World() and not world().active and is_main_process()
    assert World().broadcast("x") == "x" and World().gather("x") == ["x"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RkdError, match=r"MASTER_ADDR.*torchrun or accelerate launch"):
        world()


def test_a_torn_random_state_is_dropped_and_its_checkpoint_kept(tmp_path):
    import torch

    from retrieval_kd.train.stage import last_checkpoint

    ckpt = tmp_path / "checkpoints" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    torch.save({"cpu": torch.random.get_rng_state()}, ckpt / "rng_state_0.pth")
    whole = (ckpt / "rng_state_0.pth").read_bytes()
    (ckpt / "rng_state_1.pth").write_bytes(whole[: len(whole) // 2])  # a rank killed while saving it
    assert last_checkpoint(tmp_path / "checkpoints") == ckpt
    assert sorted(p.name for p in ckpt.iterdir()) == ["rng_state_0.pth", "trainer_state.json"]


@pytest.mark.parametrize("family", ["bi-encoder", "splade", "colbert", "cross-encoder"])
def test_infonce_compares_with_every_process_rows_where_the_loss_can(train_env, tmp_path, family):  # noqa: F811
    from retrieval_kd.train.losses import build_loss
    from retrieval_kd.train.stage import gather_in_batch
    from retrieval_kd.train.students import build_student

    cfg = tiny_config(train_env, family, tmp_path / "m", losses="kl+infonce:0.5")
    model, _ = build_student(family, str(train_env[family]), max_length=32, colbert_dim=16)
    loss = build_loss(family, model, cfg)
    changed = gather_in_batch(loss)
    if family == "cross-encoder":  # its in-batch negatives stay the process's own rows
        assert changed == []
    else:
        assert len(changed) == 1 and "MultipleNegativesRankingLoss" in changed[0]
        assert [m.gather_across_devices for m in loss.modules() if hasattr(m, "gather_across_devices")] == [True]
