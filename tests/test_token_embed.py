"""Token-level embedding distillation for ColBERT (retrieval_kd/train/token_embed.py): the
principal axes, config rules, a corpus stage that moves the student's tokens towards the
teacher's, and the tokenizer check. Tiny random-weight models sharing one vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval_kd.errors import RkdError
from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture


def _tokens(env, out, **kw):
    spec = {"kind": "bi-encoder", "model": str(env["bi-encoder"]), "max_length": 32}
    base = {"losses": "embed", "scores": [], "embed_on": "corpus", "embed_teacher": spec, "lr": 1e-2,
            "batch_size": 8}
    return tiny_config(env, "colbert", out, **{**base, **kw})


def test_principal_axes_are_the_covariance_eigenvectors():
    from retrieval_kd.train.token_embed import principal_axes

    rng = np.random.default_rng(0)
    vecs = [rng.normal(size=(n, 6)) * np.arange(1, 7) for n in (5, 9, 3)]
    mean, axes = principal_axes(vecs, 4)
    flat = np.concatenate(vecs)
    assert np.allclose(mean, flat.mean(axis=0))
    assert np.allclose(axes @ axes.T, np.eye(4), atol=1e-8)  # orthonormal
    _, _, vt = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    for a, b in zip(axes, vt[:4]):  # the same axes as an SVD's, in order, up to sign
        assert abs(abs(a @ b) - 1) < 1e-8
        assert a[np.abs(a).argmax()] > 0  # the sign convention


def test_config_rules(train_env, tmp_path):  # noqa: F811
    with pytest.raises(Exception, match="token vectors of the corpus: embed_on: corpus"):
        _tokens(train_env, tmp_path / "a", embed_on="rows", losses="kl+embed", scores=[train_env["store"]])
    with pytest.raises(Exception, match="token vectors of the corpus: embed_on: corpus"):
        _tokens(train_env, tmp_path / "b", embed_on="queries")
    with pytest.raises(Exception, match="the embed loss applies to bi-encoder, colbert students"):
        tiny_config(train_env, "splade", tmp_path / "c", losses="embed", scores=[], embed_on="corpus",
                    embed_teacher={"kind": "bi-encoder", "model": str(train_env["bi-encoder"])})


def _cos_to_targets(model, texts, labels, width):
    """Mean cosine of the model's document tokens to their targets (the loss's own arithmetic)."""
    from retrieval_kd.train.token_embed import TokenEmbedLoss

    with torch.no_grad():
        feats = model.preprocess(texts, task="document")
        return 1.0 - float(TokenEmbedLoss(model, width)([feats], torch.tensor(np.stack(labels))))


def test_corpus_token_stage_moves_the_students_tokens_to_the_teachers(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.artifacts import read_manifest
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.train.stage import _build, load_inputs, make_examples, train_stage
    from retrieval_kd.train.students import build_student

    cfg = _tokens(train_env, tmp_path / "tok", max_steps=30)
    init = _build(cfg, resolve_model(cfg.init))
    data, stats = make_examples(cfg, load_inputs(cfg), 16)
    assert stats.layout == "corpus" and stats.embed["space"] == "principal token axes"
    assert stats.rows == len(load_dataset(str(train_env["dataset"]), "train").corpus)
    texts, labels = data["text"][:16], [np.asarray(x, dtype=np.float32) for x in data["label"][:16]]
    assert all(len(x) == 1 + 32 * 16 for x in labels)
    before = _cos_to_targets(init, texts, labels, 16)
    out = train_stage(cfg, progress=False)
    m = read_manifest(out)
    assert m["examples"]["embed"]["tokens"] > stats.rows and m["outputs"]["global_step"] == 30
    trained, _ = build_student("colbert", resolve_model(str(out)), max_length=32, colbert_dim=16, seed=42)
    after = _cos_to_targets(trained, texts, labels, 16)
    assert after > before + 0.2, (before, after)
    # the stage's weights start ColBERT's KL recipe (init: that folder)
    then = tiny_config(train_env, "colbert", tmp_path / "kd", init=str(out), max_steps=2)
    assert read_manifest(train_stage(then, progress=False))["init"]["location"] == str(out.resolve())


def test_a_teacher_that_tokenises_otherwise_is_one_clear_error(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.train.stage import train_stage

    spec = {"kind": "bi-encoder", "model": str(train_env["bi-encoder"]), "max_length": 8}  # cuts at 8 tokens
    with pytest.raises(RkdError, match="student tokens and .* teacher tokens"):
        train_stage(_tokens(train_env, tmp_path / "bad", embed_teacher=spec, max_steps=2), progress=False)
    assert not (tmp_path / "bad").exists()


def test_token_targets_are_built_once_per_run_and_read_back_exactly(train_env, tmp_path, monkeypatch):  # noqa: F811
    """Seeds of one run share the teacher's token table (the run's cache), value for value; rows
    read their targets as tensors (the collator stacks them); a damaged table is built again."""
    from retrieval_kd import embcache
    from retrieval_kd.train import token_embed
    from retrieval_kd.train.stage import load_inputs, make_examples

    calls = []
    real = token_embed.teacher_tokens
    monkeypatch.setattr(token_embed, "teacher_tokens", lambda *a: calls.append(1) or real(*a))
    cfg = _tokens(train_env, tmp_path / "tok", max_steps=2)
    fresh, stats0 = make_examples(cfg, load_inputs(cfg), 16)  # no run root: nothing kept
    with embcache.use_root(tmp_path / "emb"):
        first, stats1 = make_examples(cfg, load_inputs(cfg), 16)
        seed43 = cfg.model_copy(update={"seed": 43})
        again, stats2 = make_examples(seed43, load_inputs(seed43), 16)
    assert len(calls) == 2 and stats0.embed == stats1.embed == stats2.embed
    assert first.format["type"] == "torch" and isinstance(first[0]["label"], torch.Tensor)
    assert isinstance(first[0]["text"], str)
    for other in (first, again):
        assert torch.equal(fresh[:]["label"], other[:]["label"])
    [folder] = [p for p in (tmp_path / "emb" / "tokens").iterdir() if not p.name.startswith(".")]
    (folder / "targets.npy").write_bytes(b"\x00" * 64)  # damaged: built again, and replaced
    stale = folder.parent / f".{folder.name}.tmp-killed"  # what a killed builder leaves: removed
    stale.mkdir()
    with embcache.use_root(tmp_path / "emb"):
        rebuilt, _ = make_examples(cfg, load_inputs(cfg), 16)
        make_examples(cfg, load_inputs(cfg), 16)
    assert len(calls) == 3 and torch.equal(fresh[:]["label"], rebuilt[:]["label"])
    assert not stale.exists()
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]  # no builder's scratch left


def test_token_targets_say_they_ran_on_torch_on_any_machine(train_env, tmp_path):  # noqa: F811
    """Token vectors come from torch fp32 whatever this machine's default backend (OpenVINO bf16
    on a bf16 CPU): the identity says so, and another backend asked for is one clear error."""
    from retrieval_kd.train.stage import load_inputs, make_examples

    cfg = _tokens(train_env, tmp_path / "tok", max_steps=2)
    _, stats = make_examples(cfg, load_inputs(cfg), 16)
    teacher = stats.embed["teacher"]
    assert teacher["vectors"] == "tokens" and "backend" not in teacher and "variant" not in teacher
    spec = {**cfg.embed_teacher, "backend": "openvino"}
    with pytest.raises(RkdError, match="computed with torch fp32, not backend openvino"):
        make_examples(cfg.model_copy(update={"embed_teacher": spec}), load_inputs(cfg), 16)


@pytest.mark.parametrize("on_disk", [False, True])
def test_teacher_tokens_spill_what_encode_returns(train_env, tmp_path, on_disk):  # noqa: F811
    """The spilled token vectors are Sentence Transformers' own ``encode`` output for each text,
    normalised per token, value for value, whether kept in memory or in a spill file."""
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.train.token_embed import _unit, teacher_tokens
    from retrieval_kd.train.token_spill import TokenSpill

    texts = ["a short one", "a somewhat longer text about proteins and cells " * 3, "x", "mid length text here"] * 9
    spec = {"kind": "bi-encoder", "model": str(train_env["bi-encoder"]), "max_length": 32}
    with TokenSpill(tmp_path if on_disk else None) as spill:
        blocks = teacher_tokens(spec, texts, spill)
        got = [spill.get(j).copy() for j in blocks]
    assert (tmp_path / "tokens.f32").is_file() == on_disk
    model = SentenceTransformer(str(train_env["bi-encoder"]), device="cpu")
    model.max_seq_length = 32
    want = model.encode(texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False)
    assert len(got) == len(texts) and len(set(blocks)) == len(texts)
    for g, w in zip(got, want):
        assert np.array_equal(g, _unit(w))


def test_token_spill_reads_back_blocks_and_names_a_truncated_file(tmp_path):
    from retrieval_kd.train.token_spill import TokenSpill

    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 1, 7)]
    with TokenSpill(tmp_path) as spill:
        ids = [spill.add(b) for b in blocks]
        assert [spill.rows(i) for i in ids] == [3, 1, 7]
        for i, b in zip(ids, blocks):
            assert np.array_equal(spill.get(i), b)
        with pytest.raises(ValueError, match="width 4"):
            spill.add(np.zeros((2, 4), np.float32))
        os_size = (tmp_path / "tokens.f32").stat().st_size
        with open(tmp_path / "tokens.f32", "r+b") as f:
            f.truncate(os_size - 4)
        with pytest.raises(OSError, match="shorter than its block 2"):
            spill.get(ids[2])
