"""Static query encoders derived from a transformer: ``static:<model>``.

A model reference ``static:embeddinggemma-300m`` names a Sentence Transformers ``StaticEmbedding``
model (a text is the mean of its tokens' vectors: no transformer at query time) built from the
source model's own tokenizer and input token embeddings. It is the init of a query encoder that
learns a teacher's query vectors (``embed_on: queries``) while the teacher itself encodes the
documents (a dense index's ``doc_model``): a multilingual tokenizer gives every language a
vocabulary, and training touches only the rows of the tokens it sees (sparse gradients).

The folder is derived once into ``cache_home()/converted/<source sha256[:16]>-static/`` (built in
a temporary folder, renamed into place) with a record of its source; its weights' sha256 is the
reference's provenance.
"""

from __future__ import annotations

from pathlib import Path

from retrieval_kd.artifacts import atomic_dir, read_json, sha256_file, write_json
from retrieval_kd.errors import NotFoundError, RkdError
from retrieval_kd.settings import cache_home

PREFIX = "static:"
RECORD = ".rkd-static.json"
WEIGHTS = "model.safetensors"  # a lone StaticEmbedding module is saved at the folder root


def is_static_ref(ref: str) -> bool:
    return ref.startswith(PREFIX)


def _input_embeddings(folder: Path):
    """The source's input token embedding matrix (float32), read from its safetensors."""
    from safetensors import safe_open

    from retrieval_kd.train.students import transformer_body

    body = Path(transformer_body(folder))
    weights = body / "model.safetensors"
    if not weights.is_file():
        raise NotFoundError(f"{body}: no model.safetensors to take input embeddings from")
    with safe_open(str(weights), "pt") as f:
        names = [k for k in f.keys() if k.endswith("embed_tokens.weight") or k.endswith("word_embeddings.weight")]
        if len(names) != 1:
            raise RkdError(f"{weights}: expected one input embedding matrix, found {names or 'none'}")
        return f.get_tensor(names[0]).float(), body


def derive_static(source) -> Path:
    """The cached ``StaticEmbedding`` folder derived from ``source`` (a resolved ModelRef)."""
    if not source.sha256 or not Path(source.location).exists():
        raise RkdError(f"static:{source.ref}: '{source.ref}' is neither a registered model nor a local folder "
                       "with weights (a static encoder is derived from local weights)")
    final = cache_home() / "converted" / f"{source.sha256[:16]}-static"
    if (final / RECORD).is_file() and (final / WEIGHTS).is_file():
        return final
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    weights, body = _input_embeddings(Path(source.location))
    tok = body / "tokenizer.json"
    if not tok.is_file():
        raise NotFoundError(f"{body}: no tokenizer.json (a fast tokenizer is needed for a static encoder)")
    model = SentenceTransformer(modules=[StaticEmbedding(Tokenizer.from_file(str(tok)), embedding_weights=weights)],
                                device="cpu")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        model.save(str(tmp))
        write_json(tmp / RECORD, {"source": source.provenance(), "tokens": int(weights.shape[0]),
                                  "dim": int(weights.shape[1]), "weights_sha256": sha256_file(tmp / WEIGHTS)})
    return final


def resolve_static(ref: str, fetch_missing: bool = True):
    """``static:<model>`` -> a ModelRef of the derived folder (its provenance names the source)."""
    from retrieval_kd.models.resolve import ModelRef, resolve_model

    source = resolve_model(ref[len(PREFIX):], fetch_missing=fetch_missing)
    folder = derive_static(source)
    rec = read_json(folder / RECORD)
    return ModelRef(ref, str(folder), None, rec["weights_sha256"], WEIGHTS)
