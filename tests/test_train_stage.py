"""The training stage: label-only baseline, reruns, resume after SIGKILL, the ``rkd train`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval_kd.errors import RkdError
from tests.test_train_support import tiny_config, train_env, write_run  # noqa: F401 - fixture

RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_label_only_baseline_from_store_ranks_and_from_a_run(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.train.stage import train_stage

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "base", teacher="none", losses="infonce")
    man = json.loads((train_stage(cfg, progress=False) / "manifest.json").read_text())
    assert man["params"]["teacher"] == "none" and man["examples"]["filtered_by_teacher"] == 0
    assert man["examples"]["positives_from_teacher"] == 0 and man["examples"]["layout"] == "infonce"
    run = write_run(tmp_path / "overlap.trec", train_env["dataset"])
    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "base-run", teacher="none", losses="infonce",
                      scores=[], candidates=run, candidates_top_k=25)
    man2 = json.loads((train_stage(cfg, progress=False) / "manifest.json").read_text())
    assert man2["inputs"]["candidates"]["run_sha256"] and man2["inputs"]["score_stores"] == []
    # same qrels positives, same candidate ranks -> the same rows as from the store's ranks
    assert man2["examples"]["fingerprint"] == man["examples"]["fingerprint"]


@pytest.mark.slow
def test_finished_run_is_reused_and_a_changed_run_is_refused(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.train.stage import train_stage, work_dir

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "m")
    out = train_stage(cfg, progress=False)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert train_stage(cfg, progress=False) == out  # same run: nothing retrained
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(RkdError, match="already exists"):
        train_stage(cfg.model_copy(update={"lr": 5e-4}), progress=False)
    # checkpoints of another configuration are not resumed silently
    work = work_dir(tmp_path / "n")
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"run_key": "something-else"}))
    other = cfg.model_copy(update={"output": tmp_path / "n"})
    with pytest.raises(RkdError, match="different run"):
        train_stage(other, progress=False)
    assert train_stage(other, progress=False, restart=True).is_dir()


def test_store_of_another_dataset_is_an_error(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.train.stage import load_inputs
    from tests.beir import random_beir
    from tests.test_train_support import TRAIN_BEIR

    other = random_beir(tmp_path / "tinyds", seed=1, **TRAIN_BEIR)  # same name and ids, different texts
    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "x", dataset=str(other))
    with pytest.raises(RkdError, match="does not match"):
        load_inputs(cfg)


SLOW_TRAIN = """
import sys, time
from transformers import TrainerCallback
from retrieval_kd.train.config import TrainConfig
from retrieval_kd.train.stage import train_stage

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        time.sleep(0.4)

cfg = TrainConfig.model_validate_json(open(sys.argv[1]).read())
train_stage(cfg, progress=False, callbacks=[Slow()])
"""


@pytest.mark.slow
@pytest.mark.parametrize("rows", ["scores", "corpus-embed", "corpus-tokens"])
def test_killed_run_resumes_from_its_last_checkpoint(train_env, tmp_path, rows):  # noqa: F811
    from transformers import TrainerCallback

    from retrieval_kd.train.stage import CHECKPOINTS, train_stage, work_dir

    out = tmp_path / "resumed"
    extra = {} if rows == "scores" else {
        "losses": "embed", "scores": [], "embed_on": "corpus",
        "embed_teacher": {"kind": "bi-encoder", "model": str(train_env["bi-encoder"]), "max_length": 32}}
    family = "colbert" if rows == "corpus-tokens" else "bi-encoder"  # ColBERT: the token stage
    cfg = tiny_config(train_env, family, out, max_steps=10, save_steps=2, **extra)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "slow.py").write_text(SLOW_TRAIN)
    ckpts = work_dir(out) / CHECKPOINTS
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), str(tmp_path / "cfg.json")],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (ckpts / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written at the output
    done = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*")
                  if (p / "trainer_state.json").is_file())
    assert done and done[-1] < 10
    last = done[-1]

    seen: dict[str, int] = {}

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen["begin"] = state.global_step

        def on_step_end(self, args, state, control, **kw):
            seen.setdefault("first_step", state.global_step)

    train_stage(cfg, progress=False, callbacks=[Watch()])
    assert seen["first_step"] == last + 1  # continued, not from step 1
    man = json.loads((out / "manifest.json").read_text())
    assert man["outputs"]["global_step"] == 10
    first, second = man["sessions"]
    assert first["start_step"] == 0 and "end_step" not in first  # the killed session
    assert second["start_step"] == last and second["resumed_from"] == f"checkpoint-{last}"
    assert [e["step"] for e in man["loss_log"]][-1] == 10
    assert not work_dir(out).exists()


def rkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*RKD, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
                          check=False)


@pytest.mark.slow
def test_cli_trains_from_yaml_with_flag_overrides_and_reports_errors_in_one_line(train_env, tmp_path):  # noqa: F811
    (tmp_path / "train.yaml").write_text(
        f"family: colbert\ninit: {train_env['colbert']}\nscores: [{train_env['store']}]\n"
        f"dataset: {train_env['dataset']}\nsplit: train\nlosses: kl+infonce:0.5\nkl_passages: 4\n"
        "negatives: 3\nrank_window: [2, 25]\nbatch_size: 4\nmax_steps: 2\nmax_length: 32\n"
        "query_max_length: 8\ncolbert_dim: 16\n")
    r = rkd("train", "-c", "train.yaml", "--lr", "0.001", "--filter-margin", "0.5", "-o", "models/cb",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = Path(r.stdout.strip().splitlines()[-1])
    assert (tmp_path / out).resolve() == (tmp_path / "models/cb").resolve()
    man = json.loads((tmp_path / "models/cb/manifest.json").read_text())
    assert man["params"]["lr"] == 0.001 and man["params"]["query_max_length"] == 8
    assert "MultiVectorEncoder trained 2 steps" in r.stderr
    r = rkd("train", "-c", "train.yaml", "--dump-examples", "rows.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[0])
    assert list(row) == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    r = rkd("train", "-c", "train.yaml", "--no-filter", "--positive-floor", "100", "--dump-examples",
            "fixed.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for line in (tmp_path / "fixed.jsonl").read_text().splitlines():  # every positive raised
        lab = json.loads(line)["label"]
        assert lab[0] == pytest.approx(max(lab[1:]) + 100)
    r = rkd("train", "-c", "train.yaml", "--loss", "kl", "--label-only", "-o", "x", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "infonce" in r.stderr
    r = rkd("train", "-c", "train.yaml", "--scores", str(tmp_path / "nostore"), "-o", "y", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "score store" in r.stderr


def test_run_key_ignores_a_later_field_at_its_default_only():
    from retrieval_kd.artifacts import sha256_json
    from retrieval_kd.train.config import TrainConfig
    from retrieval_kd.train.examples import ExampleStats
    from retrieval_kd.train.stage import LATER_FIELDS, RUNTIME_KEYS, run_key

    stats = ExampleStats(fingerprint="f")
    cfg = TrainConfig(family="bi-encoder", init="x", dataset="d", scores=["s"])
    # at its default a later field is absent from the key: the key a run got before it existed
    old = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RUNTIME_KEYS and k not in LATER_FIELDS}
    assert run_key(cfg, stats, "sha") == sha256_json({"params": old, "examples": "f", "init": "sha"})[:16]
    # set to anything else, it changes the key
    assert run_key(cfg.model_copy(update={"teacher_scale": 0.05}), stats, "sha") != run_key(cfg, stats, "sha")


def test_yaml_config_takes_the_flags_names_and_names_the_line_of_a_bad_value(tmp_path):
    from retrieval_kd.errors import DataError
    from retrieval_kd.train.config import load_config

    p = tmp_path / "t.yaml"
    p.write_text("family: bi-encoder\ninit: minilm-l6\nscores: [s]\nloss: kl+infonce:0.5\nno_filter: true\n")
    cfg = load_config(p)
    assert [(t.name, t.weight) for t in cfg.losses] == [("kl", 1.0), ("infonce", 0.5)]
    assert cfg.filter_margin is None and cfg.teacher == "store"
    p.write_text("family: bi-encoder\ninit: minilm-l6\nscores: [s]\nlabel_only: true\nloss: infonce\n")
    assert load_config(p).teacher == "none"
    p.write_text("family: bi-encoder\ninit: minilm-l6\nbatch_size: 8\nloss: klx\n")
    with pytest.raises(DataError, match=r"t\.yaml:4: loss 'klx'"):
        load_config(p)
    p.write_text("family: bi-encoder\ninit: minilm-l6\nlr: fast\n")
    with pytest.raises(DataError, match=r"t\.yaml:3: lr: Input should be a valid number"):
        load_config(p)
    with pytest.raises(DataError, match=r"t\.yaml: lr:"):  # the bad value came from a flag
        load_config(p, lr="slow")
    p.write_text("family: bi-encoder\ninit: minilm-l6\nloss: kl\nlosses: kl\n")
    with pytest.raises(Exception, match="give 'loss' or 'losses', not both"):
        load_config(p)
