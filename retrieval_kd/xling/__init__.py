"""Cross-lingual retrieval: XQuAD-R / LAReQA, MS MARCO ko-en, XOR-TyDi XOR-Retrieve (R@2kt,
R@5kt) and the translate-distill join of teacher scores with translated queries."""

from retrieval_kd.xling.msmarco_ko import load_msmarco_ko, read_msmarco_ko_file
from retrieval_kd.xling.translate import IdMismatchError, translate_join
from retrieval_kd.xling.xor_tydi import (
    XorQuestion,
    XorRecall,
    contexts_from_run,
    evaluate_xor_retrieve,
    load_passages,
    load_xor_predictions,
    load_xor_retrieve,
    xor_queries,
    xor_recall_at_tokens,
)
from retrieval_kd.xling.xquad_r import XQUAD_R_LANGS, load_lareqa, load_xquad_r, read_xquad_r

__all__ = [
    "XQUAD_R_LANGS", "IdMismatchError", "XorQuestion", "XorRecall", "contexts_from_run",
    "evaluate_xor_retrieve", "load_lareqa", "load_msmarco_ko", "load_passages", "load_xor_predictions",
    "load_xor_retrieve", "load_xquad_r", "read_msmarco_ko_file", "read_xquad_r", "translate_join",
    "xor_queries", "xor_recall_at_tokens",
]
