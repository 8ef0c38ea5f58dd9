"""Inference backends (retrieval_kd/models/backends.py) on tiny random-weight models: every
variant scores close to torch fp32, a backend other than torch fp32 changes identities and keys
while the default leaves them as they were, exports are cached (made once, checked, rebuilt when
damaged), and the CLI runs end to end with ``--backend onnx``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval_kd import cpu as C
from retrieval_kd.errors import RkdError
from retrieval_kd.models import backends as B
from retrieval_kd.teachers.base import Pair
from tests.beir import random_beir
from tests.test_index_tiny import _tokenizer, tiny_multi_vector, tiny_splade, tiny_st
from tests.tiny_models import WORDS

ONNX_VARIANTS = ["fp32", "O1", "O2", "O3", "int8"]
HAS_OPENVINO = __import__("importlib").util.find_spec("openvino") is not None


def tiny_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT with a one-logit classification head (a cross-encoder's layout)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = _tokenizer(folder)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1,
                     initializer_range=0.2)  # wide weights: logits that differ between pairs
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RKD_CACHE", str(root / "cache"))  # exports go here, never into ~/.cache
        yield {"root": root, "st": tiny_st(root / "st"), "splade": tiny_splade(root / "splade"),
               "ce": tiny_cross_encoder(root / "ce"), "mve": tiny_multi_vector(root / "mve"),
               "ds": random_beir(root / "ds", n_docs=60, n_queries=6)}


def _pairs(n: int = 40) -> list[Pair]:
    rng = np.random.default_rng(0)
    qs = [" ".join(rng.choice(WORDS, 3)) for _ in range(4)]
    return [Pair(f"q{i % 4}", f"d{i}", qs[i % 4], " ".join(rng.choice(WORDS, int(rng.integers(4, 30)))))
            for i in range(n)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _close(ref: np.ndarray, got: np.ndarray, variant: str) -> None:
    if variant.startswith("int8"):  # quantised: the ranking survives, the values move
        assert _spearman(ref, got) > 0.9, (variant, ref, got)
    elif variant == "bf16":  # bfloat16 kernels (8-bit mantissa): values within ~1%
        np.testing.assert_allclose(got, ref, atol=3e-2 * max(1.0, np.abs(ref).max()), rtol=0)
        assert _spearman(ref, got) > 0.9, (variant, ref, got)
    else:  # fp32 graphs (fused kernels, tanh GELU for O3): float rounding only
        tol = 1e-3 if variant == "O3" else 1e-4
        np.testing.assert_allclose(got, ref, atol=tol * max(1.0, np.abs(ref).max()), rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bi-encoder", "splade", "cross-encoder"])
def test_teacher_variants_score_like_torch(tiny, kind):
    from retrieval_kd.teachers.spec import build_teacher, parse_teacher

    model = str(tiny[{"bi-encoder": "st", "splade": "splade", "cross-encoder": "ce"}[kind]])
    pairs = _pairs()
    base = {"kind": kind, "model": model} | ({"dtype": "float32"} if kind == "cross-encoder" else {})
    ref = build_teacher(parse_teacher(base)).score(pairs)
    assert np.std(ref) > 0
    variants = [("onnx", v) for v in ONNX_VARIANTS] + ([("openvino", "fp32"), ("openvino", "bf16")]
                                                       if HAS_OPENVINO else [])
    for backend, variant in variants:
        t = build_teacher(parse_teacher({**base, "backend": backend, "variant": variant}))
        ident = t.identity()
        assert ident["backend"] == backend and ident["variant"] == B.resolve_variant(variant)
        loaded = getattr(t, "st", None) or getattr(t, "se", None) or t.ce
        assert B.backend_info(loaded) == {"backend": backend, "variant": B.resolve_variant(variant)}
        assert isinstance(B.transformer_module(loaded).model, B.ort_model_class())  # torch weights gone
        _close(ref, t.score(pairs), variant)


@pytest.mark.slow
def test_index_encoders_on_onnx(tiny):
    from retrieval_kd.index.encoders import ColbertParams, SpladeParams, make_encoder
    from retrieval_kd.retrieve.dense import DenseParams

    texts = [p.passage for p in _pairs(12)]
    for family, model, params in [("dense", "st", DenseParams), ("splade", "splade", SpladeParams),
                                  ("colbert", "mve", ColbertParams)]:
        torch_enc = make_encoder(family, str(tiny[model]), params())
        onnx_enc = make_encoder(family, str(tiny[model]), params(backend="onnx"))
        a, b = torch_enc.encode_docs(texts), onnx_enc.encode_docs(texts)
        assert a.keys() == b.keys()
        for k in a:
            if a[k].dtype.kind == "f":
                np.testing.assert_allclose(b[k].astype(np.float32), a[k].astype(np.float32), atol=2e-3)
            else:
                np.testing.assert_array_equal(a[k], b[k])
        ti, oi = torch_enc.identity(), onnx_enc.identity()
        assert "backend" not in ti and oi["backend"] == "onnx" and oi["variant"] == "fp32"
        assert {k: v for k, v in oi.items() if k not in ("backend", "variant")} == ti


@pytest.mark.slow
def test_identity_and_keys(tiny):
    from retrieval_kd.pipeline.schema import DenseRetrieve
    from retrieval_kd.retrieve.dense import DenseParams
    from retrieval_kd.teachers.identity import spec_identity
    from retrieval_kd.teachers.spec import parse_teacher

    for kind, model in [("cross-encoder", "ce"), ("bi-encoder", "st"), ("splade", "splade")]:
        plain = parse_teacher({"kind": kind, "model": str(tiny[model])})
        explicit = parse_teacher({"kind": kind, "model": str(tiny[model]), "backend": "torch", "variant": "fp32"})
        assert "backend" not in plain.model_dump() and plain.model_dump() == explicit.model_dump()
        ident = spec_identity(plain)
        assert "backend" not in ident and "variant" not in ident and spec_identity(explicit) == ident
        idents = {json.dumps(ident, sort_keys=True)}
        for v in ("fp32", "O2", "int8"):
            spec = parse_teacher({"kind": kind, "model": str(tiny[model]), "backend": "onnx", "variant": v})
            got = spec_identity(spec)
            assert got["backend"] == "onnx" and got["variant"] == B.resolve_variant(v)
            assert got["variant"] != "int8"  # recorded as the config that runs here: int8-<isa>
            idents.add(json.dumps(got, sort_keys=True))
        assert len(idents) == 4
    ce = spec_identity(parse_teacher({"kind": "cross-encoder", "model": str(tiny["ce"]), "backend": "onnx"}))
    assert ce["dtype"] == "float32"  # auto resolves to what onnx runs, never bfloat16
    # encoder params (indexes, dense retrieval): nothing added at the default
    assert DenseParams().model_dump() == DenseParams(backend="torch", variant="fp32").model_dump()
    assert "backend" not in DenseParams().model_dump()
    entry = {"kind": "dense", "model": "m", "dataset": "d", "splits": ["test"]}
    assert "variant" not in DenseRetrieve(**entry).model_dump()
    assert DenseRetrieve(**entry, backend="onnx", variant="int8").model_dump()["variant"] == "int8"
    # combinations that cannot run are one clear error
    for bad in ({"backend": "torch", "variant": "int8"}, {"backend": "onnx", "variant": "O4"},
                {"backend": "onnx", "dtype": "bfloat16"}, {"backend": "onnx", "variant": "bf16"},
                {"backend": "torch", "variant": "bf16"}, {"backend": "openvino", "variant": "int8"}):
        with pytest.raises(Exception, match="variant|O4|dtype"):
            parse_teacher({"kind": "cross-encoder", "model": "x", **bad})


@pytest.mark.slow
def test_export_cache_made_once_checked_and_rebuilt(tiny, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.models.resolve import resolve_model

    monkeypatch.setenv("RKD_CACHE", str(tiny["root"] / "cache-once"))
    ref = resolve_model(str(tiny["st"]))
    calls = B.export_calls

    def load(variant="int8"):
        st = SentenceTransformer(str(tiny["st"]), device="cpu")
        B.apply_backend(st, ref, "onnx", variant)
        return st

    load()
    assert B.export_calls == calls + 2  # the fp32 export, then its int8 quantisation
    load()
    load("fp32")
    assert B.export_calls == calls + 2  # both reused
    folders = sorted((tiny["root"] / "cache-once" / "exports").iterdir())
    names = [f.name for f in folders if not f.name.startswith(".")]
    assert len(names) == 2 and "-fp32-" in names[0] and "-int8-" in names[1]
    assert not list(Path(tiny["root"] / "cache-once" / "exports").glob(".*.tmp-*"))  # atomic: no temp left
    fp32 = next(f for f in folders if "-fp32-" in f.name)
    rec = json.loads((fp32 / B.RECORD).read_text())
    assert rec["weights_sha256"] == ref.sha256 and rec["files"]["model.onnx"]["size"] > 0
    with open(fp32 / "model.onnx", "r+b") as f:  # damage the cached export: it is rebuilt
        f.seek(100)
        f.write(b"\0" * 16)
    os.utime(fp32 / "model.onnx", ns=(1, 1))
    texts = ["tumor cells grow", "blood pressure drug dose"]
    a = load("fp32").encode(texts)
    assert B.export_calls == calls + 3
    np.testing.assert_allclose(a, SentenceTransformer(str(tiny["st"]), device="cpu").encode(texts), atol=1e-5)


@pytest.mark.slow
def test_cli_backend_onnx_end_to_end(tiny, tmp_path):
    from retrieval_kd.cli.main import app

    def invoke(*args):
        r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r

    idx, run = tmp_path / "idx", tmp_path / "run"
    invoke("index", "dense", "-m", tiny["st"], "-d", tiny["ds"], "-o", idx, "--backend", "onnx",
           "--variant", "int8")
    enc = json.loads((idx / "manifest.json").read_text())["inputs"]["encoder"]
    assert enc["backend"] == "onnx" and enc["variant"] == B.resolve_variant("int8")
    invoke("search", idx, "-d", tiny["ds"], "-o", run, "-k", "10")
    rm = json.loads((run / "manifest.json").read_text())
    assert rm["inputs"]["encoder"]["backend"] == "onnx"  # queries encoded on the index's backend
    stores = {}
    for backend in ("torch", "onnx"):
        r = invoke("score", "-d", tiny["ds"], "-c", run / "run.trec", "--teacher", "cross-encoder", "-m",
                   tiny["ce"], "--dtype", "float32", "--backend", backend, "--root", tmp_path / "scores",
                   "--top-k", "5")
        stores[backend] = Path(r.output.strip().splitlines()[-1])
    man = {b: json.loads((p / "manifest.json").read_text()) for b, p in stores.items()}
    assert man["onnx"]["teacher"]["backend"] == "onnx" and "backend" not in man["torch"]["teacher"]
    assert man["onnx"]["store_id"] != man["torch"]["store_id"]
    from retrieval_kd.scores.store import ScoreStore

    a, b = (ScoreStore(stores[k]).table().to_pandas().sort_values(["qid", "docid"]) for k in ("torch", "onnx"))
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=1e-4)
    with pytest.raises(Exception, match="no model to run"):
        CliRunner().invoke(app, ["score", "-d", str(tiny["ds"]), "-c", str(run / "run.trec"), "--teacher", "bm25",
                                 "--backend", "onnx", "--root", str(tmp_path / "s2")], catch_exceptions=False)


def test_labels_for_reports():
    assert B.label(None, None) == "torch float32" and B.label("torch", "fp32", "bfloat16") == "torch bfloat16"
    assert B.label("onnx", "int8").startswith("onnx int8-")
    ens = {"kind": "ensemble", "members": [
        {"teacher": {"kind": "bm25"}},
        {"teacher": {"kind": "cross-encoder", "model": {}, "dtype": "float32", "backend": "onnx", "variant": "O3"}},
        {"teacher": {"kind": "bi-encoder", "model": {}}}]}
    assert B.label_of_identity(ens) == "onnx O3, torch float32"
    assert B.label_of_identity({"kind": "bm25"}) is None


PIPELINE = """
name: bk
datasets:
  ds: {{source: ds}}
retrieve:
  bm25: {{kind: bm25, dataset: ds, splits: [test], k: 20}}
  dense: {{kind: dense, model: st, dataset: ds, splits: [test], k: 20{dense}}}
teachers:
  ens:
    dataset: ds
    splits: [test]
    candidates: bm25
    top_k: 5
    teacher:
      kind: ensemble
      members:
        - {{teacher: {{kind: bm25}}}}
        - {{teacher: {{kind: bi-encoder, model: st{member}}}}}
indexes:
  ix: {{model: st, family: bi-encoder, dataset: ds, params: {{chunk_size: 100{index}}},
        search: {{splits: [test], k: 10}}}}
"""


def _plan(folder: Path, **opts: str) -> dict[str, str]:
    """Stage id -> key of the pipeline above with ``opts`` spliced into its entries."""
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.plan import plan

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ds", "st"):  # the module's tiny dataset and bi-encoder, beside the pipeline file
        (folder / name).symlink_to(Path(os.environ["RKD_CACHE"]).parent / name)
    text = PIPELINE.format(**{k: opts.get(k, "") for k in ("dense", "member", "index")})
    (folder / "p.yaml").write_text(text)
    return {s.id: s.key for s in plan(load_pipeline(folder / "p.yaml"))}


@pytest.mark.slow
def test_pipeline_backend_per_member_and_index(tiny, tmp_path):
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages
    from retrieval_kd.report.render import write_report

    plain = _plan(tmp_path / "a")
    explicit = _plan(tmp_path / "b", member=", backend: torch, variant: fp32", dense=", backend: torch")
    assert plain == explicit  # a spelled-out default is the same stage as before backends existed
    onnx = _plan(tmp_path / "c", member=", backend: onnx, variant: O2", dense=", backend: onnx, variant: int8",
                 index=", backend: onnx, variant: int8")
    changed = {k for k in plain if plain[k] != onnx[k]}
    assert {"teacher:ens@test", "retrieve:dense@test", "index:ix", "search:ix@test"} <= changed
    assert "retrieve:bm25@test" not in changed
    run_stages(load_pipeline(tmp_path / "c" / "p.yaml"), tmp_path / "c" / "runs", only=["search:ix@test"],
               echo=lambda _m: None)
    stage = json.loads(next((tmp_path / "c" / "runs").rglob("stage.json")).read_text())
    assert stage["result"]["backend"] == f"onnx {B.resolve_variant('int8')}"
    md = write_report(tmp_path / "c" / "runs")["markdown"].read_text()
    assert "| backend |" in md and f"onnx {B.resolve_variant('int8')}" in md


def test_auto_backend_is_openvino_bf16_only_where_it_runs_natively(monkeypatch):
    """``auto`` (every default): OpenVINO bf16 on a native-bf16 CPU with openvino and no CUDA GPU,
    torch fp32 elsewhere or when a device / dtype asks for torch; resolved when params are built,
    so dumps and pipeline keys hold what runs; RKD_BACKEND overrides it; a variant alone picks
    the backend that runs it."""
    import importlib.util

    from retrieval_kd.retrieve.dense import DenseParams
    from retrieval_kd.teachers.spec import parse_teacher

    monkeypatch.delenv("RKD_BACKEND", raising=False)
    real_find = importlib.util.find_spec
    monkeypatch.setattr(B, "has_cuda", lambda: False)
    monkeypatch.setattr(B.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "openvino" else real_find(name, *a))
    monkeypatch.setattr(C, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert B.preferred() == ("openvino", "bf16")
    assert DenseParams().model_dump()["backend"] == "openvino"
    assert DenseParams(backend="torch").model_dump().get("backend") is None  # explicit wins, old key
    assert B.preferred(device="cuda") == B.DEFAULT and B.preferred(dtype="bfloat16") == B.DEFAULT
    ce = parse_teacher({"kind": "cross-encoder", "model": "x", "dtype": "bfloat16"})
    assert (ce.backend, ce.variant) == ("torch", "fp32")  # a torch dtype keeps torch
    assert parse_teacher({"kind": "bi-encoder", "model": "x"}).model_dump()["variant"] == "bf16"
    assert B.keyed_params({"max_seq_length": 128}) == {"max_seq_length": 128, "backend": "openvino",
                                                        "variant": "bf16"}
    assert B.keyed_params({"backend": "onnx"}) == {"backend": "onnx"}
    assert B.resolve_auto("auto", "int8") == ("onnx", "int8")
    assert B.resolve_auto(None, "bf16") == ("openvino", "bf16")
    assert B.resolve_auto("onnx", "auto") == ("onnx", "fp32")
    monkeypatch.setenv("RKD_BACKEND", "torch:fp32")
    assert B.preferred() == B.DEFAULT and B.keyed_params({"k": 1}) == {"k": 1}
    monkeypatch.setenv("RKD_BACKEND", "onnx:nope")
    with pytest.raises(RkdError, match="RKD_BACKEND"):
        B.preferred()
    monkeypatch.delenv("RKD_BACKEND")
    for flags, cuda in (({"avx512f"}, False), ({"amx_bf16"}, True)):  # no native bf16 / a GPU
        monkeypatch.setattr(C, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(B, "has_cuda", lambda cuda=cuda: cuda)
        assert B.preferred() == B.DEFAULT
        assert "backend" not in DenseParams().model_dump()
