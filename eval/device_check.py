"""The steps of ``eval/device_check.sh`` (the GPU paths), one per call, each writing
``WORK/<step>.json``; ``report`` gathers them into ``OUT/device-check.{json,md}``.

    python -m eval.device_check STEP --work DIR        # faiss | train | ray | server
    python -m eval.device_check report --work DIR --out eval/results/device-check/device-check

Each step returns ``{"status": "ok" | "skipped" | "failed", ...}``: skipped says why (a wheel
that is not installed, a library that sees no GPU), never raises for that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("faiss", "train", "ray", "server")


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, round(time.perf_counter() - t0, 3)


# ---------------------------------------------------------------- faiss GPU


def step_faiss(work: Path, n: int = 1_000_000, dim: int = 128, queries: int = 1000) -> dict[str, Any]:
    try:
        import faiss
    except ImportError as e:
        return {"status": "skipped", "why": f"faiss is not installed ({e})"}
    from eval.bench_index import clustered_mix
    from retrieval_kd.index.faiss_index import FaissParams, build_faiss, gpu_available, prepare_search

    if not gpu_available():
        return {"status": "skipped", "why": f"faiss {faiss.__version__} sees no GPU (faiss-cpu, not faiss-gpu, "
                                            "is installed)"}
    both = clustered_mix(n + queries, dim, 1000, seed=0)
    x, q = both[:n], both[n:].copy()

    def blocks():
        return (x[i:i + 100_000] for i in range(0, n, 100_000))

    rows, truth = [], None
    for index in ("flat", "ivfpq"):
        for device in ("gpu", "cpu"):
            fp = FaissParams(index=index, device=device, **({"refine": "flat"} if index == "ivfpq" else {}))
            (built, fp), build_s = _timed(build_faiss, blocks, n, dim, fp)
            searcher = prepare_search(built, fp)
            searcher.search(q[:10], 10)  # warm-up (GPU kernels, memory)
            (_, ids), search_s = _timed(searcher.search, q, 10)
            if truth is None:
                truth = ids
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
            rows.append({"index": index, "device": device, "build_s": build_s,
                         "qps": round(queries / max(search_s, 1e-9), 1), "recall@10_of_flat": round(recall, 4),
                         "search_on": type(searcher).__name__})
    return {"status": "ok", "faiss": faiss.__version__, "gpus": faiss.get_num_gpus(), "n": n, "dim": dim,
            "queries": queries, "rows": rows}


# ---------------------------------------------------------------- CUDA training (torchrun)


def _tiny_data(work: Path) -> None:
    """The scale benchmark's synthetic train split and tiny model, once."""
    if (work / "train" / "candidates.trec").is_file():
        return
    from eval import bench_scale as bs

    vocab = bs.vocabulary(4000, seed=0)
    bs.write_beir_folder(work / "train", bs.N_TRAIN_DOCS, vocab, seed=7, splits={"train": bs.N_TRAIN_Q})
    rng = np.random.default_rng(3)
    lines = []
    for row in (work / "train/qrels/train.tsv").read_text().splitlines()[1:]:
        qid, pos, _ = row.split("\t")
        cands = [pos, *(f"p{j}" for j in rng.choice(bs.N_TRAIN_DOCS, 19, replace=False) if f"p{j}" != pos)][:20]
        lines += [f"{qid} Q0 {d} {r} {20 - r} synthetic\n" for r, d in enumerate(cands, 1)]
    (work / "train/candidates.trec").write_text("".join(lines))
    bs.tiny_model(work / "model", vocab)


def _train(work: Path, procs: int, steps: int = 100, batch: int = 64) -> dict[str, Any]:
    out = work / f"train-gpu{procs}"
    cfg = {"family": "bi-encoder", "init": str(work / "model"), "dataset": str(work / "train"), "split": "train",
           "teacher": "none", "losses": "infonce", "candidates": str(work / "train/candidates.trec"),
           "negatives": 3, "batch_size": batch, "max_steps": steps, "lr": 1e-4, "warmup": 0.0, "max_length": 32,
           "save_steps": 100_000, "logging_steps": 10, "output": str(out)}
    path = work / f"train-gpu{procs}.yaml"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "retrieval_kd.cli.main", "train", "-c", str(path)]
    r, wall = _timed(subprocess.run, cmd, cwd=work, env=env, capture_output=True, text=True)
    if r.returncode:
        return {"procs": procs, "status": "failed", "stderr": r.stderr[-2000:]}
    man = json.loads((out / "manifest.json").read_text())
    sess = man["sessions"][-1]
    return {"procs": procs, "status": "ok", "wall_s": wall, "examples_per_s": sess.get("examples_per_s"),
            "steps": man["outputs"]["global_step"], "distributed": man.get("distributed"), "device": man.get("device")}


def step_train(work: Path) -> dict[str, Any]:
    n = _gpus()
    if not n:
        return {"status": "skipped", "why": "torch sees no CUDA device"}
    _tiny_data(work)
    runs = [_train(work, 1)] + ([_train(work, n)] if n > 1 else [])
    ok = all(r["status"] == "ok" for r in runs)
    return {"status": "ok" if ok else "failed", "gpus": n, "runs": runs,
            **({} if n > 1 else {"note": "one GPU: the 'all GPUs' run is the 1-GPU run"})}


# ---------------------------------------------------------------- Ray GPU actors


def step_ray(work: Path) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return {"status": "skipped", "why": "Ray is not installed (extra 'scale')"}
    n = _gpus()
    if not n:
        return {"status": "skipped", "why": "torch sees no CUDA device"}
    _tiny_data(work)
    from retrieval_kd.scores.store import ScoreStore

    run = work / "train" / "candidates.trec"
    teacher = work / "teacher.yaml"
    teacher.write_text(json.dumps({"kind": "bi-encoder", "model": str(work / "model"), "max_length": 32}))
    base = [sys.executable, "-m", "retrieval_kd.cli.main", "score", "-d", str(work / "train"), "-s", "train",
            "-c", str(run), "-t", str(teacher), "--chunk-size", "4000"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    one, one_s = _timed(subprocess.run, [*base, "--root", str(work / "score-one")], env=env, capture_output=True,
                        text=True)
    ray, ray_s = _timed(subprocess.run, [*base, "--root", str(work / "score-ray"), "--ray", "local",
                                         "--ray-workers", str(n), "--ray-gpus", "1"], env=env, capture_output=True,
                        text=True)
    if one.returncode or ray.returncode:
        return {"status": "failed", "stderr": (one.stderr + ray.stderr)[-2000:]}
    a, b = (ScoreStore(Path(r.stdout.strip().splitlines()[-1])) for r in (one, ray))
    ta, tb = (s.table().to_pandas().sort_values(["qid", "docid"]).reset_index(drop=True) for s in (a, b))
    same = a.id == b.id and list(zip(ta.qid, ta.docid)) == list(zip(tb.qid, tb.docid)) and bool(
        np.allclose(ta.score, tb.score, rtol=1e-4, atol=1e-5))
    pairs = int(b.manifest["n_rows"])
    return {"status": "ok" if same else "failed", "gpus": n, "pairs": pairs, "one_process_s": one_s,
            "ray_s": ray_s, "same_rows_as_one_process": same,
            "teacher_loaded": b.manifest.get("teacher_loaded")}


# ---------------------------------------------------------------- a served LLM teacher


def step_server(work: Path) -> dict[str, Any]:
    """vLLM or llama.cpp's OpenAI-compatible server as the LLM teacher's backend: needs the wheel
    and a model on the machine (``RKD_DEVICE_LLM``: a GGUF file for llama.cpp, a model folder for
    vLLM); the machine reaches no hub."""
    import importlib.util

    model = os.environ.get("RKD_DEVICE_LLM")
    engines = [e for e in ("vllm", "llama_cpp") if importlib.util.find_spec(e) is not None]
    if not engines:
        return {"status": "skipped", "why": "neither vllm nor llama-cpp-python is installed"}
    if not model or not Path(model).exists():
        return {"status": "skipped", "why": f"{', '.join(engines)} installed, but no model: set RKD_DEVICE_LLM "
                                            "to a GGUF file (llama.cpp) or model folder (vLLM) on the machine"}
    engine = "vllm" if "vllm" in engines and Path(model).is_dir() else "llama_cpp"
    port = 8765
    cmd = ([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port)]
           if engine == "vllm" else
           [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port), "--n_gpu_layers", "-1"])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import urllib.request

        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    return {"status": "failed", "engine": engine, "why": "the server did not answer in 90 s"}
                time.sleep(1)
        _tiny_data(work)
        teacher = work / "llm.yaml"
        teacher.write_text(json.dumps({"kind": "llm", "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                                       "model": Path(model).name}))
        run = work / "llm-cands.trec"
        run.write_text("".join(ln for ln in (work / "train/candidates.trec").read_text().splitlines(True)[:200]))
        r, secs = _timed(subprocess.run, [sys.executable, "-m", "retrieval_kd.cli.main", "score", "-d",
                                          str(work / "train"), "-s", "train", "-c", str(run), "-t", str(teacher),
                                          "--root", str(work / "score-llm")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})
        if r.returncode:
            return {"status": "failed", "engine": engine, "stderr": r.stderr[-2000:]}
        return {"status": "ok", "engine": engine, "model": model, "pairs": 200, "seconds": secs,
                "pairs_per_s": round(200 / max(secs, 1e-9), 1)}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


# ---------------------------------------------------------------- the report


def markdown(res: dict[str, Any]) -> str:
    env, st = res["environment"], res["steps"]
    out = ["# Device check: the GPU paths", "",
           f"Machine: {env.get('gpu_names')}; torch {env.get('torch')} (CUDA {env.get('cuda')}); run "
           f"{env.get('date')}, {env.get('wall_s')} s in all.", "", "| step | status | figures |", "|---|---|---|"]
    for name in STEPS:
        s = st.get(name, {"status": "not run"})
        if s.get("status") != "ok":
            out.append(f"| {name} | {s.get('status')} | {s.get('why') or s.get('stderr', '')[:200].replace('|', '/')} |")
            continue
        if name == "faiss":
            fig = "; ".join(f"{r['index']} on {r['device']}: build {r['build_s']} s, {r['qps']:,.0f} QPS, recall@10 "
                            f"{r['recall@10_of_flat']}" for r in s["rows"])
            out.append(f"| faiss ({s['n']:,} x {s['dim']}) | ok | {fig} |")
        elif name == "train":
            fig = "; ".join(f"{r['procs']} GPU(s): {r.get('examples_per_s')} examples/s" for r in s["runs"])
            out.append(f"| train (torchrun, nccl) | ok | {fig} |")
        elif name == "ray":
            out.append(f"| ray ({s['gpus']} GPU actors) | ok | {s['pairs']:,} pairs: one process {s['one_process_s']} s, "
                       f"Ray {s['ray_s']} s; rows equal: {s['same_rows_as_one_process']} |")
        else:
            out.append(f"| server ({s['engine']}) | ok | {s['pairs_per_s']} pairs/s |")
    return "\n".join(out) + "\n"


def report(work: Path, out: Path, started: float | None) -> None:
    from retrieval_kd.artifacts import write_benchmark

    steps = {n: json.loads((work / f"{n}.json").read_text()) for n in STEPS if (work / f"{n}.json").is_file()}
    env: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch

        env.update(torch=torch.__version__, cuda=torch.version.cuda,
                   gpu_names=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    except ImportError:
        pass
    if started:
        env["wall_s"] = round(time.time() - started, 1)
    print(write_benchmark(out, {"environment": env, "steps": steps}, markdown))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=(*STEPS, "report"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "device-check" / "device-check")
    ap.add_argument("--started", type=float, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "report":
        report(args.work, args.out, args.started)
        return
    fn = {"faiss": step_faiss, "train": step_train, "ray": step_ray, "server": step_server}[args.step]
    try:
        res = fn(args.work)
    except Exception as e:  # noqa: BLE001 - one step's failure is that step's record, not the check's end
        res = {"status": "failed", "why": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
    (args.work / f"{args.step}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res)[:2000])


if __name__ == "__main__":
    main()
