"""Tiny random-weight models built from a config, to exercise code paths in seconds."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a of and to in is for on with cell cells protein gene genes cancer risk blood brain "
    "study effect increase decrease patients treatment disease virus immune tumor dna rna "
    "mouse human level levels high low response drug dose trial clinical"
).split()


def write_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"], *"abcdefghijklmnopqrstuvwxyz0123456789"]
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return path


def build_tiny_bert(folder: Path, *, masked_lm: bool = False, seed: int = 0) -> Path:
    """A 1-layer, 32-d BERT and its WordPiece tokenizer, saved as a Hugging Face folder.

    The vocabulary is passed as ``vocab=`` (transformers 5 ignores ``vocab_file=``, which
    would leave only the special tokens, every word [UNK]). No dropout, so a fixed batch
    gives the same loss for the same weights.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    vocab = {w: i for i, w in enumerate(write_vocab(folder).read_text().split())}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (BertForMaskedLM(cfg) if masked_lm else BertModel(cfg)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_st(folder: Path, seed: int = 0) -> Path:
    """A tiny SentenceTransformer (BERT + mean pooling) saved as an ST folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    hf = build_tiny_bert(folder.parent / f"{folder.name}-hf", seed=seed)
    body = Transformer(str(hf), max_seq_length=64)
    st = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")])
    st.save(str(folder))
    return folder
