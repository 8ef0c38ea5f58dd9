"""LLM teachers: a tiny random Llama (exact arithmetic), the real SmolLM2 GGUF, and a real
llama.cpp OpenAI-compatible server (plus canned responses for the log-odds arithmetic)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.errors import RkdError
from retrieval_kd.teachers.base import Pair

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAIRS = [
    Pair("q1", "d1", "what is the capital of france", "Paris is the capital and largest city of France."),
    Pair("q1", "d2", "what is the capital of france",
         "Photosynthesis converts light energy into chemical energy in plants."),
    Pair("q2", "d3", "how many legs does a spider have",
         "Spiders are arachnids with eight legs and two body segments."),
    Pair("q2", "d4", "how many legs does a spider have",
         "The stock market closed higher on Tuesday after strong earnings reports."),
]

TINY_WORDS = [
    "query", "passage", "does", "the", "answer", "yes", "no", "Yes", "No", "or", "a", "of", "is",
    "to", "what", "how", "many", "capital", "france", "paris", "city", "cell", "gene", "protein",
    "spider", "legs", "eight", "plants", "light", "energy",
]
TINY_CHAT = ("{% for m in messages %}<|user|> {{ m['content'] }}\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _tiny_pairs(n: int = 7) -> list[Pair]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        words = rng.choice(TINY_WORDS, size=int(rng.integers(2, 25)))
        out.append(Pair(f"q{i % 3}", f"d{i}", f"what is capital {i % 3}", " ".join(words)))
    return out


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer, 32-d random Llama with a word-level tokenizer and a chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    words = list(dict.fromkeys([*TINY_WORDS, ":", "?", ".", *"0123456789"]))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "<s>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                  bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tok.chat_template = TINY_CHAT
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_tiny_llm_scores_are_exact_and_invariant(tiny_llama):
    import torch

    from retrieval_kd.teachers.llm import LLMTeacher

    t = LLMTeacher(str(tiny_llama), batch_size=3)
    assert t.chat and t.loaded_from == "hf"
    pairs = _tiny_pairs()
    s = t.score(pairs)
    assert s.shape == (len(pairs),) and s.dtype == np.float64 and np.isfinite(s).all()
    assert np.ptp(s) > 0

    perm = np.random.default_rng(1).permutation(len(pairs))
    np.testing.assert_allclose(t.score([pairs[i] for i in perm]), s[perm], atol=1e-4)
    t.batch_size = 1
    np.testing.assert_allclose(t.score(pairs), s, atol=1e-4)

    # score == logit(yes) - logit(no) of an unpadded forward pass
    p = pairs[2]
    ids = t.tokenizer.apply_chat_template(
        [{"role": "user", "content": t.template.format(query=p.query, passage=p.passage)}],
        tokenize=False, add_generation_prompt=True)
    ids = t.tokenizer(ids, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = t.model(input_ids=ids).logits[0, -1]
    assert t.yes.strip() == "Yes" and t.no.strip() == "No"
    assert s[2] == pytest.approx(float(logits[t.yes_id] - logits[t.no_id]), abs=1e-4)
    assert t.score([]).shape == (0,)


def test_tiny_llm_identity_and_truncation(tiny_llama):
    from retrieval_kd.teachers.llm import DEFAULT_TEMPLATE, LLMTeacher

    t = LLMTeacher(str(tiny_llama), max_length=40)
    ident = t.identity()
    assert ident["kind"] == "llm" and ident["backend"] == "transformers"
    assert ident["template"] == DEFAULT_TEMPLATE and ident["chat"] is True
    assert ident["yes"] == {"token": t.yes, "id": t.yes_id} and ident["max_length"] == 40
    assert ident["model"]["sha256"] and json.dumps(ident)

    other = LLMTeacher(str(tiny_llama), template="Q: {query} P: {passage} relevant? yes or no", max_length=40)
    assert other.identity() != ident and other.identity()["template"].startswith("Q: {query}")
    assert LLMTeacher(str(tiny_llama), chat=False, max_length=40).identity()["chat"] is False

    # the passage is cut, the instruction kept: the prompt ends as an untruncated one does
    long = Pair("q", "d", "what is capital", " ".join(["cell gene protein"] * 60))
    ids = t._fit(long.query, long.passage)
    full = t._encode(long.query, long.passage)
    assert len(full) > 40 and len(ids) <= 40
    assert ids[-12:] == full[-12:]
    # a query too long for any passage is cut as well
    ids = t._fit(" ".join(["paris"] * 80), long.passage)
    assert len(ids) <= 40 and ids[-12:] == full[-12:]
    assert np.isfinite(t.score([long])).all()

    with pytest.raises(RkdError):
        LLMTeacher(str(tiny_llama), template="no fields here")


@pytest.mark.slow
@pytest.mark.shared_data
def test_smollm2_gguf_converted_cache(tmp_path, monkeypatch, fetched_model):
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.teachers.llm import LLMTeacher, converted_dir

    fetched_model("smollm2-135m")
    ref = resolve_model("smollm2-135m")  # the real GGUF, fetched into the user cache
    monkeypatch.setenv("RKD_CACHE", str(tmp_path / "cache"))  # converted copy goes here
    conv = converted_dir(ref.sha256, "float32")
    assert not conv.exists()

    first = LLMTeacher(ref.location, threads=2)
    assert first.loaded_from == "gguf" and conv.is_dir()
    assert first.identity()["model"]["sha256"] == ref.sha256
    s1 = first.score(PAIRS)
    assert s1.shape == (4,) and np.isfinite(s1).all()
    first.close()

    second = LLMTeacher(ref.location, threads=2)
    assert second.loaded_from == "converted"
    assert second.identity() == first.identity()
    np.testing.assert_allclose(second.score(PAIRS), s1, atol=1e-4)
    assert not [p for p in conv.parent.iterdir() if p.name.startswith(".")]  # no leftover temp dirs
    print("smollm2 scores (relevant, irrelevant, relevant, irrelevant):", np.round(s1, 3))


# -- OpenAI-compatible server ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory, fetched_model):
    """A real llama.cpp server (llama-cpp-python) serving the SmolLM2 GGUF on 127.0.0.1."""
    fetched_model("smollm2-135m")
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        pytest.fail("llama_cpp is not installed: install llama-cpp-python[server] to run the "
                    "OpenAI-server teacher tests", pytrace=False)
    from retrieval_kd.models.resolve import resolve_model

    gguf = resolve_model("smollm2-135m").location
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf,
                                 "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            try:
                models = _get_json(base + "/v1/models")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama.cpp server not ready in 120 s:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, models["data"][0]["id"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.llm_server
@pytest.mark.parametrize("chat", [False, True])
def test_openai_teacher_real_llama_cpp_server(llama_server, chat):
    from retrieval_kd.teachers.openai_server import OpenAITeacher

    base, served = llama_server
    t = OpenAITeacher(base, "smollm2", chat=chat, concurrency=2, retries=1, backoff=0.1)
    s = t.score(PAIRS)
    assert s.shape == (4,) and s.dtype == np.float64 and np.isfinite(s).all()
    ident = t.identity()
    assert ident["model"] == served and ident["backend"] == "openai" and ident["chat"] is chat
    assert ident["top_logprobs"] == 20 and "template" in ident and base not in json.dumps(ident)
    np.testing.assert_allclose(t.score(PAIRS[::-1]), s[::-1], atol=1e-6)
    print(f"server scores (chat={chat}):", np.round(s, 3))


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_openai_log_odds_on_canned_responses(monkeypatch):
    from retrieval_kd.teachers.openai_server import OpenAITeacher, log_odds

    tops = {
        "what is the capital of france": {" Yes": -0.5, "yes": -2.0, " The": -3.0, "\n": -4.0},
        "how many legs does a spider have": {" no": -0.7, "No": -1.2, " YES": -2.5, " Yes": -3.1, " A": -5.0},
    }
    seen = []

    def fake(self, method, path, body=None):
        seen.append((method, path, body))
        if path == "/models":
            return {"data": [{"id": "served-model.gguf"}]}
        query = body["prompt"].split("\n")[0].removeprefix("Query: ")
        return {"choices": [{"logprobs": {"top_logprobs": [tops[query]]}}]}

    monkeypatch.setattr(OpenAITeacher, "_request", fake)
    t = OpenAITeacher("http://127.0.0.1:9/v1/", "whatever", top_logprobs=5, concurrency=2)
    assert t.identity()["model"] == "served-model.gguf" and t.api == "http://127.0.0.1:9/v1"
    s = t.score([PAIRS[0], PAIRS[2]])
    # 'no' missing from the top list: floor = smallest listed logprob - log 2
    assert s[0] == pytest.approx(_lse(-0.5, -2.0) - (-4.0 - math.log(2)))
    assert s[1] == pytest.approx(_lse(-2.5, -3.1) - _lse(-0.7, -1.2))
    post = next(b for _, p, b in seen if p == "/completions")
    assert post["max_tokens"] == 1 and post["temperature"] == 0 and post["logprobs"] == 5

    assert log_odds({" The": -1.0, " A": -2.0}) == 0.0  # neither side listed
    assert log_odds([("\u2581Yes", -1.0), ("Yes", -1.0), ("no", -2.0)]) == pytest.approx(math.log(2) + 1)
    assert log_odds({"No": -0.1, "x": -3.0}) == pytest.approx(-3.0 - math.log(2) + 0.1)
    with pytest.raises(ValueError):
        log_odds({})

    def fake_chat(self, method, path, body=None):
        if path == "/models":
            return {"data": [{"id": "a"}, {"id": "whatever"}]}
        assert path == "/chat/completions" and body["logprobs"] is True and body["top_logprobs"] == 20
        return {"choices": [{"logprobs": {"content": [{"token": "Yes", "logprob": -0.2, "top_logprobs": [
            {"token": "Yes", "logprob": -0.2}, {"token": "No", "logprob": -1.9},
            {"token": "yes", "logprob": -3.0}]}]}}]}

    monkeypatch.setattr(OpenAITeacher, "_request", fake_chat)
    t = OpenAITeacher("http://127.0.0.1:9", "whatever", chat=True)
    assert t.identity()["model"] == "whatever"
    assert t.score(PAIRS[:1])[0] == pytest.approx(_lse(-0.2, -3.0) + 1.9)

    monkeypatch.setattr(OpenAITeacher, "_request", lambda *a, **k: {"data": [{"id": "a"}, {"id": "b"}]})
    with pytest.raises(RkdError, match="not served"):
        OpenAITeacher("http://127.0.0.1:9", "c")


def test_openai_unreachable_url_fails_once_after_bounded_retries(monkeypatch):
    from retrieval_kd import openai_client
    from retrieval_kd.teachers.openai_server import OpenAITeacher

    calls = []
    real = openai_client.urllib.request.urlopen

    def counting(req, timeout):
        calls.append(req.full_url)
        return real(req, timeout=timeout)

    monkeypatch.setattr(openai_client.urllib.request, "urlopen", counting)
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(RkdError, match=f"{url}/v1/models") as err:
        OpenAITeacher(url, "m", retries=2, backoff=0.01, timeout=2)
    assert len(calls) == 3 and time.monotonic() - t0 < 10
    assert "3 attempts" in str(err.value)


def test_store_records_what_the_loaded_llm_resolved(tiny_llama, tmp_path, tiny_ds):
    from retrieval_kd.scores.stage import score_stage
    from retrieval_kd.teachers.spec import parse_teacher

    ds = tiny_ds
    run = tmp_path / "cand.trec"
    run.write_text("q1 Q0 d1 1 3.0 x\nq2 Q0 d2 1 3.0 x\n")
    spec = parse_teacher({"kind": "llm", "model": str(tiny_llama), "max_length": 40})
    store = score_stage(str(ds), "test", run, spec, root=tmp_path / "scores", top_k=1, progress=False)
    m = store.manifest
    assert m["teacher"]["chat"] is None  # the spec (and the store id): "auto"
    assert m["teacher_loaded"]["chat"] is True and m["teacher_loaded"]["yes"]["id"] is not None


@pytest.mark.slow
def test_pipeline_llm_teacher_on_two_splits_runs_first_time(tiny_llama, tmp_path, monkeypatch):
    """Regression: a pipeline scoring two splits with one LLM teacher spec failed on its first
    run (the second split's stage got the kept teacher after the first store had closed it, so
    its model was None: TypeError) and passed on the rerun (first split cached, fresh teacher)."""
    import retrieval_kd.teachers.spec as spec_mod
    from retrieval_kd.data.trec import load_trec_run
    from retrieval_kd.pipeline import adapters
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages
    from retrieval_kd.scores.stage import score_stage
    from tests.test_pipeline import write_corpus

    write_corpus(tmp_path / "tiny", n_docs=20, n_queries=12, words=TINY_WORDS)
    teacher = {"kind": "llm", "model": str(tiny_llama), "max_length": 48, "batch_size": 4}
    (tmp_path / "p.yaml").write_text(
        "name: llm2\ndatasets:\n  tiny: {source: tiny}\n"
        "retrieve:\n  bm25: {kind: bm25, dataset: tiny, splits: [train, test], k: 5}\n"
        "teachers:\n  judge:\n    dataset: tiny\n    splits: [train, test]\n    candidates: bm25\n"
        f"    top_k: 3\n    teacher: {json.dumps(teacher)}\n")
    built = []
    real = spec_mod.build_teacher
    monkeypatch.setattr(spec_mod, "build_teacher", lambda s: built.append(s.kind) or real(s))
    adapters.release_teacher()
    root = tmp_path / "runs"
    rec = run_stages(load_pipeline(tmp_path / "p.yaml"), root, echo=lambda _m: None)
    assert rec["status"] == "complete" and built == ["llm"]  # one load, both splits scored
    for split in ("train", "test"):  # the kept teacher scores exactly what a fresh one does
        st = next(s for s in rec["stages"] if s["id"] == f"teacher:judge@{split}")
        cand = next(s for s in rec["stages"] if s["id"] == f"retrieve:bm25@{split}")
        fresh = score_stage(str(tmp_path / "tiny"), split, root / cand["dir"], spec_mod.parse_teacher(teacher),
                            root=tmp_path / f"s-{split}", top_k=3, progress=False)
        got = load_trec_run(root / st["dir"] / "run.trec")
        want = fresh.scores()
        assert got.keys() == want.keys() and all(
            abs(got[q][d] - want[q][d]) < 1e-5 for q in want for d in want[q])
    kept = next(iter(adapters._LOADED_TEACHER.values()))
    assert kept.model is not None  # still usable by a next score stage with this spec
    adapters.release_teacher()
    assert kept.model is None and not adapters._LOADED_TEACHER  # released: closed and forgotten
    with pytest.raises(RkdError, match="closed"):
        kept.score(_tiny_pairs(2))
