"""PLAN.md revision 3: a static multilingual query encoder distilled from EmbeddingGemma's English
question vectors, searched against frozen EmbeddingGemma passage vectors (XQuAD-R X->en).

    python research/crosslingual/static_student.py dev       # the rate grid on a dev split of train
    python research/crosslingual/static_student.py teacher   # EmbeddingGemma itself X->en on heldout

The dev phase trains with its own loop (SparseAdam, constant rate) on the train articles only; the
test phase is the product path, ``rkd run pipelines/xquad-r.yaml`` then ``python -m
eval.xling_student``. Teacher vectors are computed once and kept under ``--work`` (default
runs/xling-static/). Results go to research/crosslingual/results/static-*.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from retrieval_kd.xling.xquad_r import XQUAD_R_LANGS, read_xquad_r, xquad_r_root

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "research" / "crosslingual" / "results"
X_LANGS = [lang for lang in XQUAD_R_LANGS if lang != "en"]
DEV_ARTICLES = range(36, 48)  # the last 6 train (even) articles: 36, 38, ..., 46


def load_files() -> dict:
    root = xquad_r_root()
    return {lang: read_xquad_r(root / f"{lang}.json", lang) for lang in XQUAD_R_LANGS}


def split_of(article: int) -> str:
    if article % 2:
        return "heldout"
    return "dev" if article in DEV_ARTICLES else "train-dev"


def teacher_vectors(files: dict, work: Path) -> dict[str, np.ndarray]:
    """EmbeddingGemma's document vectors of the 240 English paragraphs, its query vectors of the
    English questions (all 1,190) and of the English paragraphs (arm B's targets); cached."""
    path = work / "teacher.npz"
    if path.is_file():
        return dict(np.load(path))
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.models.resolve import resolve_model

    model = SentenceTransformer(resolve_model("embeddinggemma-300m").location, local_files_only=True)
    model.max_seq_length = 256
    en = files["en"]
    paras = [p.context for p in en.paragraphs]
    out = {}
    for name, texts, fn in (("docs", paras, model.encode_document),
                            ("questions", list(en.questions.values()), model.encode_query),
                            ("para_queries", paras, model.encode_query)):
        t = time.time()
        out[name] = fn(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        print(f"teacher {name}: {len(texts)} texts in {time.time() - t:.0f}s", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def init_model():
    """The student before training: the package's ``static:embeddinggemma-300m`` (a StaticEmbedding
    over EmbeddingGemma's tokenizer and input embeddings), with sparse gradients; passages are the
    teacher's vectors."""
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.models.resolve import resolve_model

    model = SentenceTransformer(resolve_model("static:embeddinggemma-300m").location, device="cpu")
    model[0].embedding.sparse = True
    return model


def rows(files: dict, teacher: dict[str, np.ndarray], splits: set[str], arm: str) -> tuple[list[str], np.ndarray]:
    en = files["en"]
    qids = list(en.questions)
    target = {q: teacher["questions"][i] for i, q in enumerate(qids)}
    texts, tgts = [], []
    for lang in XQUAD_R_LANGS:
        f = files[lang]
        for q, text in f.questions.items():
            if split_of(f.paragraphs[f.paragraph_of[q]].article) in splits:
                texts.append(text)
                tgts.append(target[q])
    if arm == "B":
        for lang in X_LANGS:
            for i, p in enumerate(files[lang].paragraphs):
                texts.append(p.context)
                tgts.append(teacher["para_queries"][i])
    return texts, np.stack(tgts)


def train(texts: list[str], targets: np.ndarray, lr: float, epochs: int, seed: int, batch: int = 64):
    import torch

    torch.manual_seed(seed)
    model = init_model()
    static = model[0]
    feats = static.tokenizer.encode_batch(texts, add_special_tokens=False)
    ids = [torch.tensor(e.ids, dtype=torch.long) for e in feats]
    tg = torch.from_numpy(targets)
    opt = torch.optim.SparseAdam(list(model.parameters()), lr=lr)
    rng = np.random.default_rng(seed)
    for ep in range(epochs):
        order = rng.permutation(len(texts))
        total = 0.0
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            flat = torch.cat([ids[i] for i in idx])
            offsets = torch.tensor([0] + [len(ids[i]) for i in idx[:-1]]).cumsum(0)
            emb = static.embedding(flat, offsets)
            loss = (1 - torch.nn.functional.cosine_similarity(emb, tg[idx], dim=-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"  epoch {ep + 1}: loss {total / len(texts):.4f}", flush=True)
    return model


def evaluate(model, files: dict, docs: np.ndarray, split: str) -> dict[str, dict[str, float]]:
    """Per language (ten X->en and en-en): ``{qid: nDCG@10}`` over the 240 English paragraphs."""
    from retrieval_kd.eval.metrics import evaluate_run

    en = files["en"]
    doc_ids = [p.doc_id("en") for p in en.paragraphs]
    out = {}
    for lang in XQUAD_R_LANGS:
        f = files[lang]
        qs = [q for q in f.questions if split_of(f.paragraphs[f.paragraph_of[q]].article) == split]
        vec = model.encode([f.questions[q] for q in qs], normalize_embeddings=True, convert_to_numpy=True)
        sims = vec @ docs.T
        top = np.argsort(-sims, axis=1)[:, :100]
        run = {q: {doc_ids[j]: float(sims[i, j]) for j in top[i]} for i, q in enumerate(qs)}
        qrels = {q: {doc_ids[f.paragraph_of[q]]: 1} for q in qs}
        out[lang] = evaluate_run(qrels, run, ["ndcg@10"], per_query=True)["ndcg@10"]
    return out


def mean_x(per_lang: dict[str, dict[str, float]]) -> float:
    return float(np.mean([np.mean(list(per_lang[lang].values())) for lang in X_LANGS]))


def dev(args) -> None:
    files = load_files()
    teacher = teacher_vectors(files, args.work)
    results = {"init": mean_x(evaluate(init_model(), files, teacher["docs"], "dev"))}
    print("init dev mean", results["init"], flush=True)
    for arm, lrs in (("A", args.lrs_a or args.lrs), ("B", args.lrs_b or args.lrs)):
        texts, tg = rows(files, teacher, {"train-dev"}, arm)
        for lr in lrs:
            t = time.time()
            model = train(texts, tg, lr, args.epochs, 42)
            results[f"{arm} lr{lr}"] = m = mean_x(evaluate(model, files, teacher["docs"], "dev"))
            print(f"arm {arm} lr {lr}: dev mean {m:.4f} ({len(texts)} rows, {time.time() - t:.0f}s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"static-dev{args.tag}.json").write_text(json.dumps(results, indent=1) + "\n")


def teacher_heldout(args) -> None:
    """EmbeddingGemma itself X->en on the heldout questions (its query prompt), the teacher row
    the plan reports beside the pipeline's students (not decided on)."""
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.models.resolve import resolve_model

    files = load_files()
    teacher = teacher_vectors(files, args.work)
    gemma = SentenceTransformer(resolve_model("embeddinggemma-300m").location, local_files_only=True)
    gemma.max_seq_length = 256

    class Queries:  # the teacher encodes questions with its query prompt
        encode = staticmethod(lambda texts, **kw: gemma.encode_query(texts, batch_size=16, **kw))

    t = time.time()
    per_lang = evaluate(Queries, files, teacher["docs"], "heldout")
    row = {lang: float(np.mean(list(v.values()))) for lang, v in per_lang.items()}
    row["mean X->en"] = mean_x(per_lang)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "static-teacher-heldout.json").write_text(json.dumps(
        {"system": "EmbeddingGemma-300m (teacher), fp32, 256 tokens, model prompts", "ndcg@10": row,
         "seconds": round(time.time() - t, 1)}, indent=1) + "\n")
    print(row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["dev", "teacher"])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "xling-static")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    p.add_argument("--lrs-a", type=float, nargs="*", help="arm A's rates (default --lrs)")
    p.add_argument("--lrs-b", type=float, nargs="*", help="arm B's rates (default --lrs)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tag", default="")
    args = p.parse_args()
    (dev if args.phase == "dev" else teacher_heldout)(args)


if __name__ == "__main__":
    main()
