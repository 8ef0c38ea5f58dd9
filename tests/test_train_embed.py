"""Embedding distillation (retrieval_kd/train/embed.py): targets, config rules, the loss on a
fixed batch, and a finished run recognised by its key. Tiny random-weight models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval_kd.errors import DataError
from tests.test_train_students import fixed_batch_losses
from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture


def _embed(env, **kw):
    spec = {"kind": "bi-encoder", "model": str(env["bi-encoder"]), "max_length": 32}
    return {"embed_teacher": spec, **kw}


def test_principal_targets_rotate_centre_and_cut():
    from retrieval_kd.train.embed import principal_targets

    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 3, 8)).astype(np.float32)
    full = principal_targets(v, 8)
    flat, got = v.reshape(-1, 8).astype(np.float64), full.reshape(-1, 8).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    # a rotation of the centred vectors: every pairwise distance kept
    d0 = np.linalg.norm(centred[:, None] - centred[None], axis=-1)
    d1 = np.linalg.norm(got[:, None] - got[None], axis=-1)
    assert np.allclose(d0, d1, atol=1e-4)
    cut = principal_targets(v, 2)
    assert cut.shape == (6, 3, 2) and np.allclose(cut, full[..., :2], atol=1e-5)
    # axis 0 carries the most variance; padding adds zero axes
    assert got.var(axis=0)[0] >= got.var(axis=0)[1] >= got.var(axis=0)[-1]
    wide = principal_targets(v, 12)
    assert wide.shape == (6, 3, 12) and np.all(wide[..., 8:] == 0)
    assert np.array_equal(principal_targets(v, 8), full)  # deterministic


def test_split_labels_scores_then_targets():
    import torch

    from retrieval_kd.train.losses import split_labels

    emb = [torch.zeros(2, 4) for _ in range(3)]  # 3 columns of width 4
    labels = torch.arange(2 * 15, dtype=torch.float32).view(2, 15)
    scores, targets = split_labels(labels, emb)
    assert scores.shape == (2, 3) and targets.shape == (2, 12) and targets[0, 0] == 3
    one, _ = split_labels(labels[:, 2:], emb)
    assert one.shape == (2,) and one[1] == 17  # a lone margin comes back as a vector
    none, _ = split_labels(labels[:, 3:], emb)
    assert none is None


def test_embed_needs_its_teacher_and_a_family_that_has_it(train_env, tmp_path):  # noqa: F811
    with pytest.raises(Exception, match="embed loss and embed_teacher go together"):
        tiny_config(train_env, "bi-encoder", tmp_path / "o", losses="infonce+embed", teacher="none",
                    scores=[], candidates=train_env["dataset"])
    with pytest.raises(Exception, match="applies to bi-encoder, colbert"):
        tiny_config(train_env, "cross-encoder", tmp_path / "o", losses="kl+embed", **_embed(train_env))
    with pytest.raises(Exception, match="token vectors of the corpus: embed_on: corpus"):  # ColBERT: tokens
        tiny_config(train_env, "colbert", tmp_path / "o", losses="kl+embed", **_embed(train_env))
    with pytest.raises(Exception, match="label-only"):
        tiny_config(train_env, "bi-encoder", tmp_path / "o", losses="embed", teacher="none", scores=[],
                    candidates=train_env["dataset"], **_embed(train_env))
    from retrieval_kd.train.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("family: bi-encoder\ninit: x\nloss: kl+embed\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.yaml"):
        load_config(bad)


@pytest.mark.parametrize("loss", ["kl+infonce:0.5+embed:2", "margin-mse+embed"])
def test_embed_loss_falls_with_teacher_scores(train_env, tmp_path, loss):  # noqa: F811
    from retrieval_kd.train.embed import student_width
    from retrieval_kd.train.stage import load_inputs, make_examples
    from retrieval_kd.train.students import build_student

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "o", losses=loss, **_embed(train_env))
    width = student_width(build_student("bi-encoder", cfg.init, max_length=32)[0])
    data, stats = make_examples(cfg, load_inputs(cfg), width)
    texts = len([c for c in data.column_names if c != "label"])
    scores = {"margin-mse": 1}.get(cfg.score_loss_names[0], texts - 1)
    assert len(data[0]["label"]) == scores + texts * width
    assert stats.embed["width"] == width and stats.embed["teacher"]["kind"] == "bi-encoder"
    losses = fixed_batch_losses(cfg, tmp_path, width=width)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses


def test_label_only_embed_run_is_recognised_when_done(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.artifacts import read_manifest
    from retrieval_kd.train.stage import train_stage

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "m", losses="infonce+embed:4", teacher="none",
                      filter_margin=None, **_embed(train_env))
    out = train_stage(cfg, progress=False)
    m = read_manifest(out)
    assert m["examples"]["embed"]["columns"] == 1 + cfg.negatives + 1
    assert {"embed", "infonce"} <= {k.split("/")[-1].removeprefix("train_") for e in m["loss_log"] for k in e}
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert train_stage(cfg, progress=False) == out  # the same key: nothing retrained
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    other = cfg.model_copy(update={"embed_teacher": {**cfg.embed_teacher, "max_length": 16}})
    with pytest.raises(Exception, match="already exists"):
        train_stage(other, progress=False)


def test_corpus_stage_trains_on_every_document_alone(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.artifacts import read_manifest
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.train.stage import train_stage

    with pytest.raises(Exception, match="embed_on: corpus trains with the embed loss alone"):
        tiny_config(train_env, "bi-encoder", tmp_path / "x", losses="embed", embed_on="corpus",
                    **_embed(train_env))  # a score store given
    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "c", losses="embed", scores=[],
                      embed_on="corpus", max_steps=3, **_embed(train_env))
    out = train_stage(cfg, progress=False)
    m = read_manifest(out)
    assert m["examples"]["layout"] == "corpus" and m["examples"]["embed"]["columns"] == 1
    assert m["examples"]["rows"] == len(load_dataset(str(train_env["dataset"]), "train").corpus)
    assert m["outputs"]["global_step"] == 3
    # the first stage's weights start a label-only run (init: that folder)
    then = tiny_config(train_env, "bi-encoder", tmp_path / "t", losses="infonce", teacher="none",
                       init=str(out), filter_margin=None)
    assert read_manifest(train_stage(then, progress=False))["init"]["location"] == str(out.resolve())


def test_cli_trains_the_corpus_stage(train_env, tmp_path):  # noqa: F811
    import json
    import subprocess
    import sys

    env = train_env
    args = [sys.executable, "-m", "retrieval_kd.cli.main", "train", "-f", "bi-encoder", "-m", str(env["bi-encoder"]),
            "-d", str(env["dataset"]), "-s", "train", "-l", "embed", "--embed-on", "corpus",
            "--embed-teacher", str(env["bi-encoder"]), "--max-length", "32", "--max-steps", "2",
            "--batch-size", "8", "-o", str(tmp_path / "corpus")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert m["params"]["embed_on"] == "corpus" and m["outputs"]["global_step"] == 2
    bad = subprocess.run([*args[:-1], str(tmp_path / "bad"), "--embed-on", "everything"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "embed_on" in bad.stderr and not (tmp_path / "bad").exists()
