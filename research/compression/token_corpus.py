"""PLAN.md revision 14's corpus stage: the ColBERT student (BERT-tiny body, 128-d projection) learns
all-MiniLM-L6-v2's token vectors of every SciFact corpus document (the two share BERT's uncased
WordPiece vocabulary, so token i of a document is the same word piece for both). Loss: the mean
over real tokens of ``1 - cos(student token, target)``; targets: the teacher's normalised token
vectors, centred and rotated into their principal axes over the corpus tokens, cut to 128.
A research loop (AdamW, the trainer's linear warm-up 0.1 and decay); study.py's ``tok4-then-*``
arms start their label training from the folder it saves.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

EPOCHS, BATCH, LR, LENGTH, WIDTH = 4, 64, 1e-3, 128, 128


def corpus_texts() -> list[str]:
    from retrieval_kd.data.registry import load_dataset

    corpus = load_dataset("scifact", "train").corpus
    return [corpus.docs[d].joined() for d in sorted(corpus.docs)]


def targets(texts: list[str], cache: Path) -> list[np.ndarray]:
    """Per text: (tokens, 128) float16 targets; cached in ``cache`` (an .npz)."""
    if cache.is_file():
        z = np.load(cache)
        flat, lengths = z["flat"], z["lengths"]
        return np.split(flat, np.cumsum(lengths)[:-1])
    from sentence_transformers import SentenceTransformer

    from retrieval_kd.models.resolve import resolve_model

    teacher = SentenceTransformer(resolve_model("minilm-l6").location, local_files_only=True)
    teacher.max_seq_length = LENGTH
    out = teacher.encode(texts, output_value="token_embeddings", batch_size=32, convert_to_numpy=False)
    vecs = [t.float().numpy() for t in out]
    vecs = [v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12) for v in vecs]
    flat = np.concatenate(vecs).astype(np.float64)
    mean = flat.mean(axis=0)
    centred = flat - mean
    _, axes = np.linalg.eigh(centred.T @ centred)
    rotated = (centred @ axes[:, ::-1][:, :WIDTH]).astype(np.float16)
    lengths = np.array([len(v) for v in vecs])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, flat=rotated, lengths=lengths)
    return np.split(rotated, np.cumsum(lengths)[:-1])


def train(seed: int, out: Path, work: Path, epochs: int = EPOCHS) -> Path:
    """Train the corpus stage for ``seed`` into ``out`` (skipped when it is already there);
    ``epochs``: revision 14 ran 4, revision 16 8."""
    import torch
    import transformers

    from retrieval_kd.train.students import build_student

    if (out / "modules.json").is_file():
        return out
    texts = corpus_texts()
    tg = targets(texts, work / "minilm-token-targets.npz")
    model, _ = build_student("colbert", "splade-tiny", max_length=LENGTH, colbert_dim=WIDTH, seed=seed)
    transformers.set_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    steps = epochs * ((len(texts) + BATCH - 1) // BATCH)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    rng = np.random.default_rng(seed)
    model.train()
    t0, step = time.time(), 0
    for ep in range(epochs):
        total, n = 0.0, 0
        order = rng.permutation(len(texts))
        for s in range(0, len(order), BATCH):
            idx = order[s:s + BATCH]
            feats = model.preprocess([texts[i] for i in idx])
            outs = model(feats)
            tok, mask = outs["token_embeddings"], outs["attention_mask"].float()
            t = torch.zeros_like(tok)
            for r, i in enumerate(idx):
                n_tok = min(len(tg[i]), tok.shape[1])
                if int(mask[r].sum()) != n_tok:
                    raise RuntimeError(f"document {i}: {int(mask[r].sum())} student tokens, {len(tg[i])} teacher tokens")
                t[r, :n_tok] = torch.from_numpy(tg[i][:n_tok].astype(np.float32))
            cos = torch.nn.functional.cosine_similarity(tok, t, dim=-1)
            loss = ((1 - cos) * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            total, n = total + float(loss.detach()), n + 1
        print(f"  token corpus stage s{seed} epoch {ep + 1}: loss {total / n:.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out
