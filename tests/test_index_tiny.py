"""Tiny random-weight encoders for the index tests (and a check that they really tokenize).

``tests/tiny_models.py`` builds its tokenizer with ``vocab_file=``, which the transformers 5
``BertTokenizerFast`` no longer reads (it silently keeps only the 5 special tokens, so every
word is ``[UNK]``). The builders here pass the vocabulary itself, so different texts get
different vectors: the index tests need rankings that are not all ties.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models import WORDS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = [*SPECIAL, *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
             *"abcdefghijklmnopqrstuvwxyz0123456789"]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)


def tiny_bert(folder: Path, *, masked_lm: bool = False, seed: int = 0, hidden: int = 32) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(folder)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    model = (BertForMaskedLM if masked_lm else BertModel)(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_st(folder: Path, seed: int = 0) -> Path:
    """SentenceTransformer: tiny BERT + mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    body = Transformer(str(tiny_bert(folder.parent / f"{folder.name}-hf", seed=seed)), max_seq_length=64)
    SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")]).save(str(folder))
    return folder


def tiny_splade(folder: Path, seed: int = 0) -> Path:
    """A masked-LM folder: SparseEncoder turns it into MLM logits + SPLADE max pooling."""
    return tiny_bert(folder, masked_lm=True, seed=seed)


def tiny_multi_vector(folder: Path, seed: int = 0, dim: int = 16) -> Path:
    """A saved MultiVectorEncoder (ColBERT layout): BERT, token projection, mask, normalise."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    hf = tiny_bert(folder.parent / f"{folder.name}-hf", seed=seed)
    torch.manual_seed(seed)
    mods = [Transformer(str(hf), query_length=16, document_length=48),
            Dense(32, dim, bias=False, activation_function=torch.nn.Identity(),
                  module_input_name="token_embeddings"),
            MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
    MultiVectorEncoder(modules=mods, device="cpu").save(str(folder))
    return folder


def test_tiny_tokenizer_knows_the_words(tmp_path):
    tok = _tokenizer(tmp_path)
    ids = tok("tumor cells grow")["input_ids"]
    assert len(tok) > 100 and tok.unk_token_id not in ids[1:3]


def test_tiny_encoders_separate_texts(tmp_path):
    from sentence_transformers import SentenceTransformer, SparseEncoder

    st = SentenceTransformer(str(tiny_st(tmp_path / "st")), device="cpu")
    a, b = st.encode(["tumor cells", "blood pressure drug"])
    assert abs(float(a @ b)) < 0.999 * float((a @ a) ** 0.5 * (b @ b) ** 0.5)
    se = SparseEncoder(str(tiny_splade(tmp_path / "sp")), device="cpu")
    v = se.encode_document(["tumor cells", "blood pressure"], convert_to_sparse_tensor=True)
    assert v.shape[1] > 100
