"""Scale: a corpus of >= 2M passages on disk, read, encoded, indexed and searched without
holding it in memory; peak RSS and throughput of each phase; one process vs Ray with 2 local
workers for the encoding; train examples/s with 1 vs 2 DDP (gloo) processes.

Everything is synthetic and seeded: ``--n`` (2,000,000) short passages (a 2-4 word title, 8-24
words of text, words from a 4,000-word made-up vocabulary) written as BEIR ``corpus.jsonl``,
1,000 test queries (4 words of a random passage, judged relevant to it) and a train split. The
encoder is a tiny random-weight BERT built here (1 layer, width 64, mean pooling, 32 tokens;
torch fp32): it measures the library's plumbing, not a model's speed or quality. Phases, each
in its own process (its peak RSS is its own, /proc VmHWM; a sampler thread splits the index
build's peak between its steps):

1. ``write``: the corpus, queries, qrels, the tiny model, the train split (20k passages).
2. ``load``: ``load_dataset`` of the folder, first through a fresh Arrow copy of corpus.jsonl
   (built once, content-keyed), then again from it; beside it the in-memory reader, for scale.
3. ``index``: ``build_index`` (the ``rkd index build`` code): streamed encoding into resumable
   chunks on disk, IVF-PQ (library defaults, nlist 4*sqrt(N)) trained on a sample, vectors added
   chunk by chunk, refine flat (the dense default).
4. ``encode-ray``: the same chunked encoding on Ray, 2 local workers (``build_index(ray=...)``'s
   code), into a work folder of its own.
5. ``search``: ``search_stage`` (``rkd search``), 1,000 queries one at a time; recall@10 of the
   exact top-10 (computed block by block over the encoded chunks, memory-mapped).
6. ``train-1`` / ``train-2``: ``rkd train`` (label-only InfoNCE, tiny model) under ``torchrun``
   with 1 and 2 gloo processes: examples/s (1 process: 2 torch threads; 2 processes: 1 each).

    python -m eval.bench_scale                 # -> eval/results/bench-scale.{json,md}
    python -m eval.bench_scale --n 100000 --out /tmp/bench-scale-small
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RKD_BACKEND", "torch:fp32")  # not openvino bf16: the same numbers on any CPU
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "eval" / "results" / "bench-scale"
MIB = 2 ** 20
RSS_LIMIT_MIB = 4096
HIDDEN, MAX_TOKENS = 64, 32
NPROBES = (32, 128, 512)
N_TEST, N_TRAIN_Q, N_TRAIN_DOCS = 1000, 2000, 20_000
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---------------------------------------------------------------- measuring


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Max resident memory of this process per labelled step (a thread sampling VmRSS)."""

    def __init__(self, every: float = 0.05) -> None:
        self.label, self.peaks, self.every = "start", {}, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_mib()
            self.peaks[self.label] = max(self.peaks.get(self.label, 0.0), rss)
            self._stop.wait(self.every)

    def step(self, label: str) -> None:
        rss = rss_mib()
        self.peaks[self.label] = max(self.peaks.get(self.label, 0.0), rss)
        self.label = label

    def stop(self) -> dict[str, float]:
        self.step("end")
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in self.peaks.items() if k not in ("start", "end")}


def clock():
    c0, t0 = time.process_time(), time.perf_counter()
    return lambda: {"cpu_s": round(time.process_time() - c0, 1), "wall_s": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------- phase 1: the data


def vocabulary(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice(letters, rng.integers(3, 9)))] = None
    return list(words)


def passages(n: int, vocab: list[str], seed: int, block: int = 100_000):
    """``(title, text)`` of ``n`` seeded passages, generated in blocks (Zipf-ish word frequencies)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8
    p /= p.sum()
    for lo in range(0, n, block):
        m = min(block, n - lo)
        tlen, xlen = rng.integers(2, 5, m), rng.integers(8, 25, m)
        words = rng.choice(len(vocab), int(tlen.sum() + xlen.sum()), p=p)
        pos = 0
        for a, b in zip(tlen, xlen):
            yield (" ".join(vocab[w] for w in words[pos:pos + a]),
                   " ".join(vocab[w] for w in words[pos + a:pos + a + b]))
            pos += a + b


def write_beir_folder(root: Path, n: int, vocab: list[str], seed: int, splits: dict[str, int]) -> dict[str, Any]:
    """corpus.jsonl of ``n`` passages, and per split that many queries (4 words of a random passage)."""
    rng = np.random.default_rng(seed + 1)
    targets = {s: np.sort(rng.choice(n, size=k, replace=False)) for s, k in splits.items()}
    wanted = {int(d): s for s, ds in targets.items() for d in ds}
    queries, qrels = [], {s: [] for s in splits}
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, (title, text) in enumerate(passages(n, vocab, seed)):
            f.write(json.dumps({"_id": f"p{i}", "title": title, "text": text}) + "\n")
            if i in wanted:
                qid = f"q{len(queries)}"
                words = text.split()
                pick = rng.choice(len(words), 4, replace=False)
                queries.append({"_id": qid, "text": " ".join(words[j] for j in sorted(pick))})
                qrels[wanted[i]].append((qid, f"p{i}"))
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(q) + "\n" for q in queries)
    for s, rows in qrels.items():
        (root / "qrels" / f"{s}.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                 + "".join(f"{q}\t{d}\t1\n" for q, d in rows))
    return {"passages": n, "queries": len(queries), "bytes": (root / "corpus.jsonl").stat().st_size}


def tiny_model(folder: Path, vocab: list[str], seed: int = 0) -> Path:
    """A random-weight BERT (1 layer, width 64) + mean pooling, saved as a SentenceTransformer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    hf = folder.parent / f"{folder.name}-hf"
    tokens = [*SPECIAL, *vocab, *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"], *"abcdefghijklmnopqrstuvwxyz"]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))}, do_lower_case=True)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * HIDDEN, max_position_embeddings=MAX_TOKENS * 2)
    BertModel(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    body = Transformer(str(hf), max_seq_length=MAX_TOKENS)
    SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")]).save(str(folder))
    return folder


def phase_write(work: Path, n: int) -> dict[str, Any]:
    vocab = vocabulary(4000, seed=0)
    t = clock()
    data = write_beir_folder(work / "corpus", n, vocab, seed=0, splits={"test": N_TEST})
    data["write"] = t()
    train = write_beir_folder(work / "train", N_TRAIN_DOCS, vocab, seed=7, splits={"train": N_TRAIN_Q})
    rng = np.random.default_rng(3)  # label-only candidates: the positive and 19 random passages
    lines = []
    for row in (work / "train/qrels/train.tsv").read_text().splitlines()[1:]:
        qid, pos, _ = row.split("\t")
        cands = [pos, *(f"p{j}" for j in rng.choice(N_TRAIN_DOCS, 19, replace=False) if f"p{j}" != pos)][:20]
        lines += [f"{qid} Q0 {d} {r} {20 - r} synthetic\n" for r, d in enumerate(cands, 1)]
    (work / "train/candidates.trec").write_text("".join(lines))
    tiny_model(work / "model", vocab)
    return {"data": data, "train_data": train}


# ---------------------------------------------------------------- phases 2-5: load, index, search


def phase_load(work: Path) -> dict[str, Any]:
    from retrieval_kd.data.arrow_corpus import ARROW_ENV, ArrowCorpus, corpora_home
    from retrieval_kd.data.registry import load_dataset

    os.environ[ARROW_ENV] = "0"  # the Arrow copy whatever the file's size
    res: dict[str, Any] = {}
    t = clock()
    ds = load_dataset(str(work / "corpus"), "test")
    assert isinstance(ds.corpus, ArrowCorpus)
    res["first"] = {**t(), "peak_rss_mib": round(rss_mib("VmHWM"), 1), "docs": len(ds.corpus),
                    "arrow_bytes": (ds.corpus.folder / "corpus.arrow").stat().st_size,
                    "cache": str(corpora_home())}
    del ds
    t = clock()
    ds = load_dataset(str(work / "corpus"), "test")
    texts = ds.corpus.texts()
    n = sum(len(texts[i:i + 65536]) for i in range(0, len(texts), 65536))  # every passage read once
    res["again"] = {**t(), "docs_read": n, "rss_mib": round(rss_mib(), 1)}
    return res


def phase_load_dict(work: Path) -> dict[str, Any]:
    from retrieval_kd.data.arrow_corpus import ARROW_ENV
    from retrieval_kd.data.beir import load_corpus_jsonl

    os.environ[ARROW_ENV] = "1000000"  # the in-memory reader whatever the file's size
    t = clock()
    corpus = load_corpus_jsonl(work / "corpus" / "corpus.jsonl")
    texts = corpus.texts()  # the list the index build took before
    return {**t(), "docs": len(texts), "peak_rss_mib": round(rss_mib("VmHWM"), 1)}


def phase_index(work: Path, chunk_size: int) -> dict[str, Any]:
    import retrieval_kd.index.build as build
    from retrieval_kd.data.arrow_corpus import ARROW_ENV
    from retrieval_kd.families import get
    from retrieval_kd.index.faiss_index import FaissParams, gpu_available

    os.environ[ARROW_ENV] = "0"
    sampler = Sampler()
    fam = get("dense")
    real_encode, real_write = build._encode_corpus, type(fam).write_index

    def encode(*a, **kw):
        sampler.step("encode")
        return real_encode(*a, **kw)

    def write(self, *a, **kw):
        sampler.step("index")
        return real_write(self, *a, **kw)

    build._encode_corpus = encode
    type(fam).write_index = write
    sampler.step("load")
    out = work / "index"
    build.build_index("dense", str(work / "corpus"), out, str(work / "model"), split="test",
                      chunk_size=chunk_size, faiss_params=FaissParams(index="ivfpq"), work_dir=work / "chunks",
                      keep_work=True)
    peaks = sampler.stop()
    man = json.loads((out / "manifest.json").read_text())
    return {"timings": man["timings_s"], "stats": {k: man["stats"].get(k) for k in
                                                 ("n_docs", "encode", "index_bytes", "docs_per_s", "peak_rss_mb")},
            "faiss": man["params"]["faiss"], "peaks_mib": peaks, "peak_rss_mib": round(rss_mib("VmHWM"), 1),
            "faiss_gpu": gpu_available()}


class Head(Sequence):
    """The first ``n`` of a (lazy) sequence, still lazy."""

    def __init__(self, seq, n: int) -> None:
        self.seq, self.n = seq, min(n, len(seq))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, _ = i.indices(self.n)
            return self.seq[lo:hi]
        return self.seq[i]


def phase_encode_ray(work: Path, chunk_size: int, workers: int, n: int) -> dict[str, Any]:
    from retrieval_kd.data.arrow_corpus import ARROW_ENV
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.families import get
    from retrieval_kd.index.build import _encode_corpus

    os.environ[ARROW_ENV] = "0"
    model = str(work / "model")
    ds = load_dataset(str(work / "corpus"), "test")
    fam = get("dense")
    enc = fam.index_encoder(model, None, None)
    texts = Head(ds.corpus.texts(), n)
    t = clock()
    _, info = _encode_corpus(enc, texts, ds.corpus.fingerprint, work / "chunks-ray", chunk_size, " ",
                             None, {"address": "local", "workers": workers},
                             lambda: fam.index_encoder(model, None, None))
    took = t()
    steady = took["wall_s"] - info["ray"]["startup_s"]
    return {**took, "encode": info, "passages": len(texts), "docs_per_s": round(len(texts) / took["wall_s"], 1),
            "docs_per_s_after_startup": round(len(texts) / max(steady, 1e-9), 1),
            "driver_peak_rss_mib": round(rss_mib("VmHWM"), 1)}


def phase_search(work: Path) -> dict[str, Any]:
    from retrieval_kd.data.arrow_corpus import ARROW_ENV
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.index.chunks import ChunkStore
    from retrieval_kd.index.search import Searcher, encoder_for, read_index_manifest, search_stage
    from retrieval_kd.index.shards import exact_topk

    os.environ[ARROW_ENV] = "0"
    out = work / "search"
    search_stage(work / "index", str(work / "corpus"), "test", out, k=10, threads=2)
    man = json.loads((out / "manifest.json").read_text())
    peak_search = round(rss_mib("VmHWM"), 1)
    run = load_trec_run(out / "run.trec")
    ds = load_dataset(str(work / "corpus"), "test")
    qids = ds.queries.ids()
    reps = encoder_for(read_index_manifest(work / "index")).encode_queries([ds.queries.texts[q] for q in qids])
    state = json.loads((work / "chunks" / "state.json").read_text())
    store = ChunkStore(work / "chunks", state["spec"], state["n_items"], state["chunk_size"])
    t = clock()
    truth = np.concatenate([exact_topk(store.iter_arrays("emb"), reps[i:i + 200], 10)[1]
                            for i in range(0, len(reps), 200)])
    exact = t()
    sample = np.asarray(next(store.iter_arrays("emb"))[:2000], dtype=np.float32)
    unit = sample / np.linalg.norm(sample, axis=1, keepdims=True)
    mean_cos = float((unit @ unit.T)[np.triu_indices(len(unit), 1)].mean())
    ids = ds.corpus.ids()
    recall = float(np.mean([len({ids[j] for j in truth[r]} & set(run[q])) / 10 for r, q in enumerate(qids)]))
    sweep = []
    for nprobe in NPROBES:  # the same index searched deeper: recall@10 and QPS, one query at a time
        s = Searcher(work / "index", {"nprobe": nprobe})
        t = clock()
        found = [s.search(r, 10)[0] for r in reps]
        took = t()
        rec = float(np.mean([len(set(f.tolist()) & set(truth[i].tolist())) / 10 for i, f in enumerate(found)]))
        sweep.append({"nprobe": nprobe, "recall@10_of_exact": round(rec, 4),
                      "qps": round(len(reps) / max(took["wall_s"], 1e-9), 1)})
        del s
    hits = float(np.mean([any(d in run[q] for d in ds.qrels[q]) for q in qids]))
    return {"stats": {k: man["stats"][k] for k in ("latency", "qps_with_encoding", "query_encode_ms_mean")},
            "timings": man["timings_s"], "search_params": man["params"]["search"], "queries": len(qids),
            "recall@10_of_exact": round(recall, 4), "exact_blocked": exact, "exact_qps": round(len(qids) / exact["wall_s"], 1),
            "hits@10": round(hits, 4), "nprobe_sweep": sweep, "mean_cosine_2000": round(mean_cos, 4), "peak_rss_mib_search": peak_search, "peak_rss_mib": round(rss_mib("VmHWM"), 1)}


# ---------------------------------------------------------------- phase 6: training


def phase_train(work: Path, procs: int, steps: int, batch: int) -> dict[str, Any]:
    import resource

    out = work / f"train-{procs}"
    cfg = {"family": "bi-encoder", "init": str(work / "model"), "dataset": str(work / "train"), "split": "train",
           "teacher": "none", "losses": "infonce", "candidates": str(work / "train/candidates.trec"),
           "negatives": 3, "batch_size": batch, "max_steps": steps, "lr": 1e-4, "warmup": 0.0,
           "max_length": MAX_TOKENS, "save_steps": 100_000, "logging_steps": 10, "output": str(out)}
    path = work / f"train-{procs}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": str(max(2 // procs, 1)), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "retrieval_kd.cli.main", "train", "-c", str(path)]
    t = clock()
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    took = t()
    if r.returncode:
        raise RuntimeError(f"torchrun x{procs} failed:\n{r.stderr[-3000:]}")
    man = json.loads((out / "manifest.json").read_text())
    sess = man["sessions"][-1]
    return {"procs": procs, "per_device_batch": batch, "steps": man["outputs"]["global_step"],
            "examples_per_s": sess.get("examples_per_s"), "session": sess, "distributed": man.get("distributed"),
            "wall_s": took["wall_s"],
            "largest_process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


# ---------------------------------------------------------------- the run


PHASES = ("write", "load", "load-dict", "index", "encode-ray", "search", "train-1", "train-2")


def run_phase(args, name: str) -> dict[str, Any]:
    """``name`` in a process of its own (its peak RSS its own); its JSON result."""
    cmd = [sys.executable, "-m", "eval.bench_scale", "--phase", name, "--work", str(args.work), "--n", str(args.n),
           "--chunk-size", str(args.chunk_size), "--ray-workers", str(args.ray_workers),
           "--ray-n", str(args.ray_n or args.n),
           "--train-steps", str(args.train_steps), "--train-batch", str(args.train_batch)]
    print(f"== {name}", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"phase {name} failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["phase_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res)[:600], flush=True)
    return res


def one_phase(args) -> dict[str, Any]:
    w = args.work
    if args.phase == "write":
        res = phase_write(w, args.n)
    elif args.phase == "load":
        res = phase_load(w)
    elif args.phase == "load-dict":
        res = phase_load_dict(w)
    elif args.phase == "index":
        res = phase_index(w, args.chunk_size)
    elif args.phase == "encode-ray":
        res = phase_encode_ray(w, args.chunk_size, args.ray_workers, args.ray_n or args.n)
    elif args.phase == "search":
        res = phase_search(w)
    else:
        procs = int(args.phase.split("-")[1])
        res = phase_train(w, procs, args.train_steps, args.train_batch)
    res.setdefault("peak_rss_mib", round(rss_mib("VmHWM"), 1))
    return res


def bench(args) -> dict[str, Any]:
    import shutil

    from retrieval_kd.data.arrow_corpus import corpora_home

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"n": args.n, "chunk_size": args.chunk_size, "ray_workers": args.ray_workers,
                           "model": {"kind": "random-weight BERT built by the benchmark", "layers": 1,
                                     "hidden": HIDDEN, "max_tokens": MAX_TOKENS, "pooling": "mean",
                                     "backend": os.environ["RKD_BACKEND"]}, "phases": {}}
    leftovers = {"index": ("index", "chunks", ".index.work"), "encode-ray": ("chunks-ray",), "search": ("search",),
                 "train-1": ("train-1",), "train-2": ("train-2",)}
    for name in PHASES:
        if name in args.skip:
            continue
        for d in leftovers.get(name, ()):  # a run measures its own work, never a previous run's chunks
            shutil.rmtree(args.work / d, ignore_errors=True)
        if name == "load":  # a fresh Arrow copy (in the work folder's cache): the first load builds it
            shutil.rmtree(corpora_home(), ignore_errors=True)
        res["phases"][name] = run_phase(args, name)
    res["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": round(load0, 2),
                      "load_end": round(os.getloadavg()[0], 2), "wall_s": round(time.perf_counter() - t0, 1)}
    peaks = {k: v.get("peak_rss_mib") for k, v in res["phases"].items() if k not in ("load-dict",)}
    ray = res["phases"].get("encode-ray", {}).get("encode", {}).get("ray", {})
    res["rss"] = {"limit_mib": RSS_LIMIT_MIB, "pipeline_peaks_mib": peaks,
                  "ray_worker_peaks_mib": ray.get("worker_peak_rss_mb"),
                  "max_mib": max(v for v in peaks.values() if v is not None),
                  "under_limit": max(v for v in peaks.values() if v is not None) < RSS_LIMIT_MIB}
    return res


def _f(x, nd=1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def markdown(res: dict[str, Any]) -> str:
    p, m, mm = res["phases"], res["machine"], res["model"]
    n = res["n"]
    out = ["# Scale: a corpus larger than comfortable memory, on one small machine", "",
           f"Machine: {m['cpus']} CPUs ({m['platform']}), load average at start {m['load_start']}, at end "
           f"{m['load_end']}; whole run {m['wall_s']:,} s wall (a shared machine: absolute timings are noisy, "
           "ratios measured in one run less so).", ""]
    w = p.get("write", {}).get("data")
    if w:
        out += [f"Data: {w['passages']:,} synthetic passages (seeded; 2-4 word title, 8-24 words of text, a "
                f"4,000-word made-up vocabulary), BEIR corpus.jsonl of {w['bytes'] / MIB:,.0f} MiB, written in "
                f"{w['write']['wall_s']:,} s; {N_TEST:,} test queries (4 words of a random passage, judged relevant "
                "to it).", ""]
    out += [f"Encoder: a **tiny random-weight BERT built by the benchmark** ({mm['layers']} layer, width "
            f"{mm['hidden']}, mean pooling, {mm['max_tokens']} tokens, {mm['backend']}): the figures measure the "
            "library's reading, chunking, indexing and scheduling, not a real model's encoding speed or quality.",
            "", "Each phase runs in a process of its own; peak RSS is that process's high-water mark (VmHWM).", "",
            "| phase | what | wall s | throughput | peak RSS MiB |", "|---|---|---|---|---|"]
    if "load" in p:
        f, a = p["load"]["first"], p["load"]["again"]
        out.append(f"| load (first) | parse and check corpus.jsonl, write its Arrow copy "
                   f"({f['arrow_bytes'] / MIB:,.0f} MiB), open it | {f['wall_s']:,} | "
                   f"{_f(n / max(f['wall_s'], 1e-9), 0)} passages/s | {_f(f['peak_rss_mib'])} |")
        out.append(f"| load (again) | open the Arrow copy (memory-mapped) and read every passage once | "
                   f"{a['wall_s']:,} | {_f(n / max(a['wall_s'], 1e-9), 0)} passages/s | {_f(p['load']['peak_rss_mib'])} |")
    if "load-dict" in p:
        d = p["load-dict"]
        out.append(f"| (for scale) in-memory reader | the dict of Documents and the list of texts the build "
                   f"took before | {d['wall_s']:,} | {_f(n / max(d['wall_s'], 1e-9), 0)} passages/s | "
                   f"{_f(d['peak_rss_mib'])} |")
    if "index" in p:
        ix = p["index"]
        tm, st, pk, fp = ix["timings"], ix["stats"], ix["peaks_mib"], ix["faiss"]
        out.append(f"| index: load | load_dataset (Arrow copy) and the encoder | {_f(tm.get('load_s'))} | - | "
                   f"{_f(pk.get('load'))} |")
        out.append(f"| index: encode | {st['encode']['chunks']} chunks of {res['chunk_size']:,} passages to disk, "
                   f"one process (2 torch threads) | {_f(tm.get('encode_docs_s'))} | {_f(st.get('docs_per_s'), 0)} "
                   f"passages/s | {_f(pk.get('encode'))} |")
        out.append(f"| index: build | IVF-PQ nlist {fp['nlist']}, pq {fp['pq_m']}x{fp['pq_nbits']}b, trained on "
                   f"{fp['train_size']:,}, + refine {fp['refine']}; added chunk by chunk | {_f(tm.get('build_s'))} | "
                   f"{_f(n / max(tm.get('build_s') or 1e-9, 1e-9), 0)} vectors/s | {_f(pk.get('index'))} |")
    if "encode-ray" in p:
        r = p["encode-ray"]
        ray = r["encode"].get("ray", {})
        wk = ", ".join(_f(x, 0) for x in ray.get("worker_peak_rss_mb") or [])
        out.append(f"| encode on Ray | the same chunks of the first {r['passages']:,} passages, {ray.get('workers')} "
                   "local Ray workers (1 CPU each) | "
                   f"{r['wall_s']:,} (startup {ray.get('startup_s')}) | {_f(r['docs_per_s'], 0)} passages/s "
                   f"({_f(r['docs_per_s_after_startup'], 0)} after startup) | driver {_f(r['driver_peak_rss_mib'])}; "
                   f"workers {wk} |")
    if "search" in p:
        s = p["search"]
        lat = s["stats"]["latency"]
        out.append(f"| search | {s['queries']:,} queries one at a time, {s['search_params']} | "
                   f"{_f(s['timings'].get('search_s'))} | {_f(lat.get('qps'), 0)} QPS (p50 "
                   f"{_f(lat.get('p50_ms'), 2)} ms) | {_f(s['peak_rss_mib_search'])} |")
        out.append(f"| exact top-10 | brute force over the memory-mapped chunks, 200 queries a block | "
                   f"{s['exact_blocked']['wall_s']:,} | {_f(s['exact_qps'], 0)} QPS | {_f(s['peak_rss_mib'])} |")
    for k in ("train-1", "train-2"):
        if k in p:
            t = p[k]
            out.append(f"| train x{t['procs']} | rkd train under torchrun, {t['procs']} gloo process(es), "
                       f"{t['per_device_batch']} per device, {t['steps']} steps | {_f(t['session'].get('train_s') or t['wall_s'])} | "
                       f"{_f(t['examples_per_s'])} examples/s | {_f(t['largest_process_peak_rss_mib'])} (largest) |")
    rs = res["rss"]
    out += ["", f"Peak RSS of the pipeline's processes: max {rs['max_mib']:,.0f} MiB, "
            f"**{'under' if rs['under_limit'] else 'over'} the {rs['limit_mib']:,} MiB limit**."]
    if "search" in p:
        s = p["search"]
        out.append(f"IVF-PQ + refine recall@10 of the exact top-10 at the defaults: **{s['recall@10_of_exact']}** "
                   f"(the test queries' judged passage in the top-10: {s['hits@10']}; random weights, so this says "
                   "nothing of quality). Deeper probing of the same index: "
                   + ", ".join(f"nprobe {r['nprobe']}: recall@10 {r['recall@10_of_exact']} at {_f(r['qps'], 0)} QPS"
                               for r in s.get("nprobe_sweep", [])) + f". A random-weight model's vectors are "
                   f"crowded (mean cosine of 2,000 passages' vectors: {s.get('mean_cosine_2000')}): the "
                   f"{p['index']['faiss']['pq_m']}-byte PQ codes cannot order such near neighbours, so the "
                   f"{p['index']['faiss']['refine_factor']} x 10 candidates that refine re-scores miss most of "
                   "the exact top-10, and probing more lists only adds PQ-noisy candidates. Real embeddings "
                   "spread out far more; eval/results/bench-refine.md measures refine's recall on a realistic "
                   "mix (0.955 of flat at 18x its QPS, 1M x 128).")
    if "encode-ray" in p and "index" in p:
        one = p["index"]["stats"].get("docs_per_s") or 0
        r = p["encode-ray"]
        out.append(f"Encoding on Ray with {r['encode'].get('ray', {}).get('workers')} workers: "
                   f"{r['docs_per_s'] / max(one, 1e-9):.2f}x one process's passages/s "
                   f"({r['docs_per_s_after_startup'] / max(one, 1e-9):.2f}x after startup) on this "
                   f"{m['cpus']}-CPU machine (Ray: the first {r['passages']:,} passages, 1 torch thread per worker; one "
                   "process: all passages, 2 torch threads; tokenizers' own threads off in both).")
    if "train-1" in p and "train-2" in p:
        a, b = p["train-1"]["examples_per_s"], p["train-2"]["examples_per_s"]
        if a and b:
            out.append(f"Training: 2 DDP processes {b / a:.2f}x the examples/s of one (gloo on CPU, the same 2 cores).")
    if res.get("notes"):
        out += ["", "## Notes", "", str(res["notes"])]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rkd-bench-scale"))
    ap.add_argument("--chunk-size", type=int, default=65_536)
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--ray-n", type=int, default=None, help="Passages encoded on Ray (default: all).")
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--skip", nargs="*", default=[], choices=PHASES)
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default=None)
    ap.add_argument("--render-only", action="store_true", help="Only rebuild the .md from the .json.")
    args = ap.parse_args()
    args.work = args.work.resolve()
    os.environ["RKD_CACHE"] = str(args.work / "cache")  # the Arrow copy goes there, not into ~/.cache
    if args.phase:
        print(json.dumps(one_phase(args)), flush=True)
        return
    from retrieval_kd.artifacts import atomic_write_text, write_benchmark

    if args.render_only:
        atomic_write_text(args.out.with_suffix(".md"), markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return
    print(write_benchmark(args.out, bench(args), markdown, args.note))


if __name__ == "__main__":
    main()
