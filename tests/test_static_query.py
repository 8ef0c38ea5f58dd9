"""A static query encoder (``static:<model>``) learning a teacher's query vectors
(``embed_on: queries``, sparse updates), searched against the teacher's own document vectors (a
dense index's ``doc_model``). Tiny random-weight models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _queries_config(env, out, **kw):
    spec = {"kind": "bi-encoder", "model": str(env["bi-encoder"]), "max_length": 32}
    base = dict(losses="embed", scores=[], embed_on="queries", embed_teacher=spec, init=f"static:{env['bi-encoder']}",
                batch_size=4, max_steps=6, lr=0.05)
    return tiny_config(env, "bi-encoder", out, **{**base, **kw})


def test_static_ref_is_derived_once_from_the_input_embeddings(train_env, cache):  # noqa: F811
    from safetensors.numpy import load_file

    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.models.static import RECORD, WEIGHTS

    ref = resolve_model(f"static:{train_env['bi-encoder']}")
    folder = ref.location
    body = load_file(str(train_env["bi-encoder"].parent / "st-hf" / "model.safetensors"))
    table = load_file(f"{folder}/{WEIGHTS}")["embedding.weight"]
    assert np.array_equal(table, body["embeddings.word_embeddings.weight"])
    assert ref.sha256 and ref.ref.startswith("static:")
    mtime = (cache / "converted").stat().st_mtime_ns
    assert resolve_model(f"static:{train_env['bi-encoder']}").location == folder  # derived once
    assert (cache / "converted").stat().st_mtime_ns == mtime
    import json
    from pathlib import Path

    rec = json.loads((Path(folder) / RECORD).read_text())
    assert rec["source"]["location"] == str(train_env["bi-encoder"].resolve())


def test_queries_config_rules(train_env, cache, tmp_path):  # noqa: F811
    with pytest.raises(Exception, match="embed_on: queries trains with the embed loss alone"):
        _queries_config(train_env, tmp_path / "x", losses="embed+infonce")
    with pytest.raises(Exception, match="embed_on: queries trains with the embed loss alone"):
        _queries_config(train_env, tmp_path / "x", scores=[train_env["store"]])


def test_static_student_learns_the_teachers_query_vectors(train_env, cache, tmp_path):  # noqa: F811
    """Rows are the queries, targets the teacher's raw query vectors; SparseAdam moves only the
    rows of the tokens the queries use; the trained encoder is closer to the teacher."""
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.artifacts import read_manifest
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.models.static import WEIGHTS
    from retrieval_kd.train.stage import train_stage

    cfg = _queries_config(train_env, tmp_path / "s", max_steps=30, lr=0.1)
    out = train_stage(cfg, progress=False)
    m = read_manifest(out)
    ds = load_dataset(str(train_env["dataset"]), "train")
    assert m["examples"]["layout"] == "queries" and m["examples"]["rows"] == len(ds.queries.texts)
    assert m["examples"]["embed"]["space"] == "teacher" and m["outputs"]["global_step"] == 30

    init = load_file(f"{resolve_model(cfg.init).location}/{WEIGHTS}")["embedding.weight"]
    trained = load_file(str(out / WEIGHTS))["embedding.weight"]
    moved = np.flatnonzero(np.abs(trained - init).max(axis=1) > 0)
    teacher = SentenceTransformer(str(train_env["bi-encoder"]))
    used = {i for t in ds.queries.texts.values() for i in teacher.tokenizer(t, add_special_tokens=False)["input_ids"]}
    assert len(moved) and set(moved.tolist()) <= used  # sparse: untouched rows are the init's, bit for bit

    texts = list(ds.queries.texts.values())
    target = teacher.encode(texts, normalize_embeddings=True)

    def fit(model_dir) -> float:
        vec = SentenceTransformer(str(model_dir)).encode(texts, normalize_embeddings=True)
        return float((vec * target).sum(axis=1).mean())

    assert fit(out) > fit(resolve_model(cfg.init).location) + 0.05


def test_translated_queries_aim_at_the_source_querys_vector(train_env, cache, tmp_path):  # noqa: F811
    from retrieval_kd.train.embed import student_width
    from retrieval_kd.train.stage import load_inputs, make_examples
    from retrieval_kd.train.students import build_student

    cfg = _queries_config(train_env, tmp_path / "t", translate=[str(train_env["dataset"])] * 1)
    inputs = load_inputs(cfg)
    width = student_width(build_student("bi-encoder", cfg.init)[0])
    data, stats = make_examples(cfg, inputs, width)
    assert stats.embed["distinct_targets"] == len(inputs.ds.queries.texts) == data.num_rows
    assert len(data[0]["label"]) == width


def test_index_with_doc_model_searches_teacher_document_vectors(train_env, cache, tmp_path):  # noqa: F811
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.index.encoders import make_encoder
    from retrieval_kd.retrieve.dense import DenseParams

    teacher = str(train_env["bi-encoder"])
    params = DenseParams(doc_model=teacher, max_length=32)
    enc = make_encoder("dense", f"static:{teacher}", params)
    docs = ["the cell protein", "blood brain study"]
    got = enc.encode_docs(docs)["emb"]
    want = SentenceTransformer(teacher).encode(docs, normalize_embeddings=True)
    assert np.allclose(got, want, atol=1e-5)
    assert enc.identity()["doc_model"]["location"] == str(train_env["bi-encoder"].resolve())
    assert "doc_model" not in DenseParams().model_dump()  # dumps of plain indexes unchanged
    q = enc.encode_queries(["cell protein"])
    assert q.shape == (1, got.shape[1])


def test_lr_schedule_reaches_the_trainer_and_leaves_old_keys_alone(train_env, cache, tmp_path):  # noqa: F811
    from retrieval_kd.train.stage import LATER_FIELDS, training_args

    cfg = _queries_config(train_env, tmp_path / "k")
    assert training_args(cfg, tmp_path / "a").lr_scheduler_type.value == "linear"
    flat = cfg.model_copy(update={"lr_schedule": "constant"})
    assert training_args(flat, tmp_path / "b").lr_scheduler_type.value == "constant_with_warmup"
    assert LATER_FIELDS["lr_schedule"] == "linear"  # runs recorded before the field keep their keys


def test_pipeline_accepts_static_refs_and_query_students(tmp_path):
    from retrieval_kd.pipeline.load import model_problem

    assert model_problem("static:minilm-l6", {}, tmp_path) is None
    assert "not a registered name" in model_problem("static:no-such-model", {}, tmp_path)


def test_pipeline_static_student_indexes_share_the_teachers_document_vectors(tmp_path, cache):
    """A pipeline: a static student of the tiny teacher, its init and its seeds indexed against
    the teacher's document vectors, the corpus encoded once for all of them (the run's cache)."""
    from retrieval_kd.artifacts import read_manifest
    from tests.tiny_pipeline import make_env, run_quietly

    env = make_env(tmp_path, """
name: static
datasets: {tiny: {source: tiny}}
students:
  q: {family: bi-encoder, init: "static:models/st", dataset: tiny, loss: embed, seeds: [1, 2],
      params: {embed_on: queries, embed_teacher: {kind: bi-encoder, model: models/st, max_length: 32},
               max_steps: 4, batch_size: 4, lr: 0.05, lr_schedule: constant, warmup: 0}}
indexes:
  init: {model: "static:models/st", family: bi-encoder, dataset: tiny, kind: flat,
         params: {doc_model: models/st, max_length: 32}, search: {splits: [test], k: 10}}
  kd: {student: q, dataset: tiny, kind: flat, params: {doc_model: models/st, max_length: 32},
       search: {splits: [test], k: 10}}
""")
    root = run_quietly(env)
    built = sorted(root.glob("stages/index-*/index/manifest.json"))
    assert len(built) == 3
    cached = [read_manifest(m.parent)["stats"]["encode"].get("cached_docs", 0) for m in built]
    assert sorted(cached) == [0, 50, 50]  # the first index encoded the 50 documents, the others read them
    idents = [(d / "identity.json").read_text() for d in (root / "embeddings").iterdir()]
    # one folder of document vectors, one of the teacher's query vectors (shared by both seeds)
    assert sorted('"texts": "queries"' in i for i in idents) == [False, True]


def test_dense_retrieval_refuses_doc_model_and_writes_nothing(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.errors import RkdError
    from retrieval_kd.retrieve.dense import DenseParams
    from retrieval_kd.retrieve.stage import dense_stage

    params = DenseParams(doc_model=str(train_env["bi-encoder"]), max_length=32)
    with pytest.raises(RkdError, match="applies to a dense index"):
        dense_stage(str(train_env["dataset"]), "train", tmp_path / "run", str(train_env["bi-encoder"]), params)
    assert not (tmp_path / "run").exists()


def test_unknown_models_are_one_line_each(tmp_path, cache, monkeypatch):
    from retrieval_kd.errors import RkdError
    from retrieval_kd.index.encoders import make_encoder
    from retrieval_kd.retrieve.dense import DenseParams

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RkdError, match="'no-such' is neither a registered model nor a local folder"):
        make_encoder("dense", "static:no-such", DenseParams())
    with pytest.raises(RkdError, match="no-such-doc-model: cannot load the doc_model") as e:
        make_encoder("dense", "minilm-l6", DenseParams(doc_model="no-such-doc-model"))
    assert "\n" not in str(e.value)
