"""One name per token length (retrieval_kd/families/lengths.py): ``max_length`` and
``query_max_length`` in every params model, the old names still read, and params dumped, keyed and
identified exactly as before the rename whichever name built them."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from retrieval_kd.artifacts import sha256_json
from retrieval_kd.families.lengths import accepted_names, dumped_names
from retrieval_kd.index.encoders import ColbertParams, SpladeParams
from retrieval_kd.retrieve.dense import DenseParams

TORCH = {"backend": "torch", "variant": "fp32"}  # dumps leave the default backend out

# (params class, new-name kwargs, old-name kwargs, the dump as written before the rename)
CASES = [
    (DenseParams, {"max_length": 128}, {"max_seq_length": 128},
     {"batch_size": 64, "max_seq_length": 128, "normalize": True, "query_prompt": "", "doc_prompt": "",
      "title_sep": " ", "device": None}),
    (SpladeParams, {"max_length": 96}, {"max_seq_length": 96},
     {"batch_size": 8, "max_seq_length": 96, "device": None}),
    (ColbertParams, {"max_length": 128, "query_max_length": 32}, {"document_length": 128, "query_length": 32},
     {"batch_size": 32, "query_length": 32, "document_length": 128, "normalize": True, "device": None}),
]


@pytest.mark.parametrize("cls, new, old, dump", CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_old_and_new_names_build_the_same_params_and_dump_as_before(cls, new, old, dump):
    a, b = cls(**new, **TORCH), cls(**old, **TORCH)
    assert a == b and a.max_length == b.max_length
    assert a.model_dump() == b.model_dump() == dump  # the keys manifests and identities were written with
    assert list(a.model_dump()) == list(dump)  # in the same order
    assert sha256_json(a.model_dump()) == sha256_json(b.model_dump()) == sha256_json(dump)
    assert a.model_dump_json() == b.model_dump_json()
    assert cls(**a.model_dump(), **TORCH) == a  # a manifest's dump reads back (index search does this)


def test_old_and_new_names_together_are_one_clear_error():
    with pytest.raises(ValidationError, match="give max_length or its old name max_seq_length, not both"):
        DenseParams(max_length=128, max_seq_length=256)
    with pytest.raises(ValidationError, match="give query_max_length or its old name query_length, not both"):
        ColbertParams(query_max_length=32, query_length=32)
    with pytest.raises(ValidationError, match="query_length"):  # an old name's error names what was given
        ColbertParams(query_length=0)


def test_dumped_names_and_accepted_names():
    assert dumped_names(DenseParams, {"max_length": 128, "hnsw_m": 8}) == {"max_seq_length": 128, "hnsw_m": 8}
    assert dumped_names(DenseParams, {"max_seq_length": 128}) == {"max_seq_length": 128}
    assert dumped_names(ColbertParams, {"max_length": 64, "query_max_length": 16, "engine": "plaid"}) == \
        {"document_length": 64, "query_length": 16, "engine": "plaid"}
    assert {"max_length", "max_seq_length"} <= accepted_names(SpladeParams)
    assert {"max_length", "document_length", "query_max_length", "query_length"} <= accepted_names(ColbertParams)


@pytest.mark.slow
def test_encoder_identities_and_cache_identity_do_not_depend_on_the_name(tmp_path):
    from retrieval_kd.index.encoders import DenseEncoder, TokenEncoder
    from tests.test_index_tiny import tiny_multi_vector, tiny_st

    st = tiny_st(tmp_path / "st")
    new, old = (DenseEncoder(str(st), DenseParams(**kw, **TORCH), embedding_cache=tmp_path / "cache")
                for kw in ({"max_length": 16}, {"max_seq_length": 16}))
    assert new.identity() == old.identity() and new.identity()["max_seq_length"] == 16
    assert new.cache.identity == old.cache.identity and new.cache.folder == old.cache.folder
    mve = tiny_multi_vector(tmp_path / "mve")
    a = TokenEncoder(str(mve), ColbertParams(max_length=12, query_max_length=8, **TORCH))
    b = TokenEncoder(str(mve), ColbertParams(document_length=12, query_length=8, **TORCH))
    assert a.identity() == b.identity() and a.identity()["document_length"] == 12


def _plan_keys(tmp_path, retrieve_len: str, index_len: str) -> dict[str, str]:
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.plan import plan
    from tests.test_pipeline import write_corpus

    write_corpus(tmp_path / "tiny")
    text = f"""\
        name: lengths
        datasets:
          tiny: {{source: tiny}}
        retrieve:
          dense: {{kind: dense, model: minilm-l6, dataset: tiny, splits: [test], k: 20, {retrieve_len}: 64}}
        indexes:
          flat: {{model: minilm-l6, family: bi-encoder, dataset: tiny, kind: flat, params: {{{index_len}: 64}}}}
        """
    path = tmp_path / f"{retrieve_len}-{index_len}.yaml"
    path.write_text(textwrap.dedent(text))
    return {s.id: s.key for s in plan(load_pipeline(path), fingerprint=lambda _: "tiny")}


def test_a_retrieve_entry_keys_alike_under_either_name(tmp_path):
    old, new = (_plan_keys(tmp_path, name, "max_length") for name in ("max_seq_length", "max_length"))
    assert old["retrieve:dense@test"] == new["retrieve:dense@test"]


def test_an_index_entry_keys_alike_under_either_name(tmp_path):
    old, new = (_plan_keys(tmp_path, "max_length", name) for name in ("max_seq_length", "max_length"))
    assert old["index:flat"] == new["index:flat"]
