"""SECURITY.md's claims, each with its test: credentials never reach an error line or a record,
pickle interop reads plain data only, YAML is parsed safely, a model's own code never runs,
ids never become paths, and output stays in the folder the user named."""

from __future__ import annotations

import ast
import base64
import gzip
import json
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from retrieval_kd.errors import DataError, RkdError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "retrieval_kd"
URL_KEY = "sk-url-SECRET-4f9c1e77"
ENV_KEY = "sk-env-SECRET-77aa10b3"
NAMED_KEY = "sk-named-SECRET-c0ffee12"
BASIC = base64.b64encode(f"rkd:{URL_KEY}".encode()).decode()
SECRETS = (URL_KEY, ENV_KEY, NAMED_KEY, BASIC)


def _sources() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def _files(root: Path) -> set[Path]:
    """Every file under ``root`` but the lock files (``.NAME.lock``) kept beside outputs."""
    return {p for p in root.rglob("*")
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".lock"))}


def _assert_no_secret(paths) -> None:
    for p in paths:
        data = p.read_bytes()
        for s in SECRETS:
            assert s.encode() not in data, f"{p} holds a credential"


# -- a local OpenAI-compatible server --------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _seen(self) -> bool:
        """Record the call; with ``deny`` answer 401 echoing the credentials sent (as some do)."""
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.server.deny:
            self._send(401, {"error": f"bad credentials: {self.headers.get('Authorization')}"})
        return self.server.deny

    def do_GET(self) -> None:
        if not self._seen():
            self._send(200, {"data": [{"id": "judge-model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self._seen():
            return
        if "messages" in body:  # the query generator: a question from the passage's first words
            words = body["messages"][0]["content"].split()[:4]
            self._send(200, {"choices": [{"message": {"content": "what about " + " ".join(words) + "?"},
                                          "finish_reason": "stop"}]})
        else:  # the yes/no judge
            yes = -0.2 - 0.05 * (len(body["prompt"]) % 11)
            self._send(200, {"choices": [{"logprobs": {"top_logprobs": [{" Yes": yes, " No": -1.0}]}}]})


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen, srv.deny = [], False
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


# -- credentials -----------------------------------------------------------------------------

def test_redact_masks_every_credential_form():
    from retrieval_kd.redact import MASK, redact, redact_obj, register_secret

    assert redact(f"http://rkd:{URL_KEY}@127.0.0.1:8000/v1/models: refused") == \
        f"http://{MASK}@127.0.0.1:8000/v1/models: refused"
    assert redact(f"https://{URL_KEY}@host/v1") == f"https://{MASK}@host/v1"  # a key as the user
    assert redact("http://u:p@ss@host/x") == f"http://{MASK}@host/x"  # an unescaped '@' in it
    assert redact(f"https://host/v1?api-key={URL_KEY}&x=1") == f"https://host/v1?api-key={MASK}&x=1"
    assert URL_KEY not in redact(f"{{'Authorization': 'Bearer {URL_KEY}'}}")
    assert URL_KEY not in redact(f"Authorization: Basic {URL_KEY}")
    assert URL_KEY not in redact(f"OPENAI_API_KEY={URL_KEY} rkd score")
    assert URL_KEY not in redact(f'{{"api_key": "{URL_KEY}"}}')
    register_secret(NAMED_KEY)
    assert redact(f"the server said: {NAMED_KEY}!") == f"the server said: {MASK}!"
    plain = "http://127.0.0.1:8000/v1 api_key_env: OPENAI_API_KEY; basic configuration of a token_budget"
    assert redact(plain) == plain  # nothing that is not a credential changes
    rec = redact_obj({"base_url": f"http://rkd:{URL_KEY}@h/v1", "api_key_env": "OPENAI_API_KEY",
                      "api_key": URL_KEY, "nested": [{"token": "t0ps3cret"}], "n": 3})
    assert rec == {"base_url": f"http://{MASK}@h/v1", "api_key_env": "OPENAI_API_KEY", "api_key": MASK,
                   "nested": [{"token": MASK}], "n": 3}


def test_client_sends_credentials_but_never_shows_them(server, monkeypatch):
    from retrieval_kd.openai_client import OpenAIClient

    port = server.server_address[1]
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    c = OpenAIClient(f"http://rkd:{URL_KEY}@127.0.0.1:{port}", retries=0)
    assert c.api == f"http://***@127.0.0.1:{port}/v1"
    assert c.request("GET", "/models")["data"][0]["id"] == "judge-model"
    assert server.seen[-1] == ("GET", "/v1/models", f"Basic {BASIC}")  # userinfo: basic auth, not in the URL
    assert OpenAIClient(f"http://127.0.0.1:{port}").request("GET", "/models")
    assert server.seen[-1][2] == f"Bearer {ENV_KEY}"  # no userinfo: the key from the environment
    server.deny = True  # the server echoes what it got: the error line must not
    for client in (c, OpenAIClient(f"http://127.0.0.1:{port}", retries=0)):
        with pytest.raises(RkdError) as err:
            client.request("GET", "/models")
        assert "HTTP 401" in str(err.value) and not any(s in str(err.value) for s in SECRETS)
    closed = OpenAIClient(f"http://rkd:{URL_KEY}@127.0.0.1:9", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RkdError) as err:
        closed.request("GET", "/models")
    assert "http://***@127.0.0.1:9/v1/models" in str(err.value) and URL_KEY not in str(err.value)


@pytest.mark.slow
def test_cli_error_lines_carry_no_key(server, tmp_path):
    """The reported case: `rkd score` (and `rkd queries generate`) against a URL with user:key@."""
    from tests.test_pipeline import write_corpus

    ds = write_corpus(tmp_path / "tiny", n_docs=10, n_queries=6)
    run = tmp_path / "cand.trec"
    run.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\n")
    server.deny = True
    url = f"http://rkd:{URL_KEY}@127.0.0.1:{server.server_address[1]}"
    env = {**os.environ, "OPENAI_API_KEY": ENV_KEY, "HF_HUB_OFFLINE": "1"}
    for args in (["score", "-d", str(ds), "-s", "train", "-c", str(run), "--teacher", "llm", "-m", "judge-model",
                  "--base-url", url, "--root", str(tmp_path / "scores")],
                 ["queries", "generate", "-d", str(ds), "--base-url", url, "--count", "2",
                  "--out", str(tmp_path / "gq")]):
        r = subprocess.run([sys.executable, "-m", "retrieval_kd.cli.main", *args], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=300)
        out = r.stdout + r.stderr
        assert r.returncode == 2 and "HTTP 401" in out and "***@127.0.0.1" in out, out
        assert not any(s in out for s in SECRETS), out
    _assert_no_secret(_files(tmp_path))


PIPE = """\
name: sec
datasets:
  tiny: {{source: tiny}}
  tiny-gq: {{queries: gq}}
queries:
  gq: {{dataset: tiny, base_url: "{url}", count: 4, seed: 1}}
retrieve:
  bm25: {{kind: bm25, dataset: tiny, splits: [test], k: 5}}
  bm25-gq: {{kind: bm25, dataset: tiny-gq, splits: [train], k: 5}}
teachers:
  judge:
    dataset: tiny
    splits: [test]
    candidates: bm25
    top_k: 3
    teacher: {{kind: llm, backend: openai, model: judge-model, base_url: "{url}/v1"}}
  judge2:
    dataset: tiny-gq
    splits: [train]
    candidates: bm25-gq
    top_k: 3
    teacher: {{kind: llm, backend: openai, model: judge-model, base_url: "{plain}", api_key_env: RKD_TEST_KEY}}
"""


@pytest.mark.slow
def test_run_records_hold_no_api_key(server, tmp_path, monkeypatch):
    """A pipeline whose servers take a key from the URL and from the environment: every file the
    run writes (run.json, stage.json, manifests, stores, the pipeline copy) is free of them, and
    nothing is written outside the run root."""
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages
    from tests.test_pipeline import write_corpus

    port = server.server_address[1]
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("RKD_TEST_KEY", NAMED_KEY)
    write_corpus(tmp_path / "tiny", n_docs=20, n_queries=8)
    p = tmp_path / "p.yaml"
    p.write_text(PIPE.format(url=f"http://rkd:{URL_KEY}@127.0.0.1:{port}", plain=f"http://127.0.0.1:{port}"))
    before = _files(tmp_path)
    root = tmp_path / "runs"
    rec = run_stages(load_pipeline(p), root, echo=lambda _m: None)
    assert rec["status"] == "complete"
    auth = {a for *_, a in server.seen}
    assert auth == {f"Basic {BASIC}", f"Bearer {NAMED_KEY}"}  # the keys were used ...
    written = _files(tmp_path) - before
    assert written and all(root in f.parents for f in written)  # ... only the run root was written
    _assert_no_secret(written)  # ... and no file written holds one
    copy = (root / "pipeline.yaml").read_text()
    assert "http://***@127.0.0.1" in copy and "RKD_TEST_KEY" in copy

    server.deny = True  # a failing stage: its error, kept in run.json, names no key either
    p.write_text(p.read_text().replace("top_k: 3", "top_k: 2"))
    with pytest.raises(RkdError) as err:
        run_stages(load_pipeline(p), root, echo=lambda _m: None)
    assert not any(s in str(err.value) for s in SECRETS)
    failed = [s for s in json.loads((root / "run.json").read_text())["stages"] if s["status"] == "failed"]
    assert failed and "HTTP 401" in failed[0]["error"]
    _assert_no_secret(_files(root))


def test_teacher_identity_and_spec_dump_have_no_key(server, monkeypatch):
    from retrieval_kd.teachers.identity import spec_identity
    from retrieval_kd.teachers.openai_server import OpenAITeacher
    from retrieval_kd.teachers.spec import parse_teacher

    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    url = f"http://rkd:{URL_KEY}@127.0.0.1:{server.server_address[1]}"
    t = OpenAITeacher(url, "judge-model")
    assert "127.0.0.1" not in json.dumps(t.identity()) and URL_KEY not in t.api
    ident = spec_identity(parse_teacher({"kind": "llm", "backend": "openai", "model": "m", "base_url": url}))
    assert "base_url" not in ident and "api_key_env" not in ident  # runtime, not identity


# -- pickle ----------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_score_pickle_with_code_is_refused(tmp_path):
    from retrieval_kd.scores.interop import import_scores

    marker = tmp_path / "PWNED"
    payloads = {
        "reduce.pkl": pickle.dumps({"q1": {"d1": _Payload(marker)}}),
        "top.pkl": pickle.dumps(_Payload(marker)),
        "eval.pkl": pickle.dumps({"q1": {"d1": 1.0}, "x": (eval, (f"open({str(marker)!r}, 'w')",))}),
        "proto0.pkl": f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),  # a GLOBAL opcode by hand
        "builtin.pkl": pickle.dumps(getattr),
    }
    (tmp_path / "gz.pkl.gz").write_bytes(gzip.compress(payloads["reduce.pkl"]))
    for name, data in payloads.items():
        (tmp_path / name).write_bytes(data)
    for name in [*payloads, "gz.pkl.gz"]:
        with pytest.raises(DataError, match="refusing to load"):
            import_scores("st-pickle", tmp_path / name)
    assert not marker.exists()
    # plain data (numpy scalars included) still loads
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"q1": {"d1": np.float64(0.5), "d2": 1}, 7: {"d3": np.float32(2.0)}}))
    assert import_scores("st-pickle", ok).num_rows == 3


def test_no_other_unpickling_in_the_package():
    """The one unpickler is interop's restricted one; numpy arrays load without pickles."""
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = getattr(node.func.value, "id", None)
            name = node.func.attr
            assert not (owner in ("pickle", "dill", "joblib", "marshal", "torch") and name in ("load", "loads")), \
                f"{path}:{node.lineno}: {owner}.{name}"
            if owner == "np" and name == "load":
                pick = [k for k in node.keywords if k.arg == "allow_pickle"]
                assert not pick or (isinstance(pick[0].value, ast.Constant) and pick[0].value.value is False), \
                    f"{path}:{node.lineno}: np.load with allow_pickle"


def test_no_shell_commands():
    """Subprocesses (pip for model wheels, pyserini's Java) get argument lists, never a shell."""
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", None)
                assert not (owner == "os" and node.func.attr in ("system", "popen")), f"{path}:{node.lineno}"
                shell = [k for k in node.keywords if k.arg == "shell"]
                assert not shell or (isinstance(shell[0].value, ast.Constant) and not shell[0].value.value), \
                    f"{path}:{node.lineno}: shell=True"


# -- YAML ------------------------------------------------------------------------------------

def test_yaml_python_tags_are_refused(tmp_path):
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.teachers.spec import load_teacher_file
    from retrieval_kd.train.config import load_config

    marker = tmp_path / "PWNED"
    evil = f'!!python/object/apply:os.system ["touch {marker}"]'
    cases = {
        "pipeline.yaml": (load_pipeline, f"name: x\ndatasets: {evil}\n"),
        "teacher.yaml": (load_teacher_file, f"kind: bm25\nk1: {evil}\n"),
        "train.yaml": (load_config, f"epochs: {evil}\n"),
        "object.yaml": (load_teacher_file, "kind: !!python/object:retrieval_kd.errors.RkdError {}\n"),
        "name.yaml": (load_teacher_file, "kind: !!python/name:os.system\n"),
    }
    for name, (load, text) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match="invalid YAML"):
            load(tmp_path / name)
    assert not marker.exists()


def test_every_yaml_parse_is_safe():
    calls = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and getattr(node.func.value, "id", None) == "yaml":
                calls.append((path.name, node.func.attr))
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                ok = node.func.attr in ("safe_load", "safe_load_all", "safe_dump", "dump") or (
                    node.func.attr in ("compose", "load", "load_all") and isinstance(loader, ast.Attribute)
                    and loader.attr in ("SafeLoader", "CSafeLoader"))
                assert ok, f"{path}:{node.lineno}: yaml.{node.func.attr} without a safe loader"
    assert calls  # the scan sees the parsers


# -- a model's own code ----------------------------------------------------------------------

def test_trust_remote_code_is_never_turned_on():
    """Static: no call in the package passes trust_remote_code anything but False."""
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, \
                    f"{path}:{node.value.lineno}: trust_remote_code not False"
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == "trust_remote_code":
                        assert isinstance(v, ast.Constant) and v.value is False, f"{path}:{k.lineno}"


@pytest.fixture(scope="module")
def code_models(tmp_path_factory):
    """Model folders that need their own code: an HF folder whose config maps the Auto classes to
    a module beside it, and a sentence-transformers folder whose modules.json names such a class.
    Importing that module writes the marker."""
    import shutil

    from tests.tiny_models import build_tiny_st

    d = tmp_path_factory.mktemp("code-models")
    marker = d / "PWNED"
    code = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
            "class Evil:\n    pass\n")
    st = build_tiny_st(d / "st")
    mods = json.loads((st / "modules.json").read_text())
    mods[0]["type"] = "evil_module.Evil"
    (st / "modules.json").write_text(json.dumps(mods))
    (st / "evil_module.py").write_text(code)
    hf = d / "hf"
    shutil.copytree(d / "st-hf", hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["model_type"] = "rkd-custom"
    cfg["auto_map"] = {k: "evil_module.Evil" for k in (
        "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
        "AutoModelForSequenceClassification", "AutoTokenizer")}
    (hf / "config.json").write_text(json.dumps(cfg))
    (hf / "evil_module.py").write_text(code)
    return marker, st, hf


def test_model_code_never_runs_on_any_load_path(code_models, tmp_path, monkeypatch):
    from retrieval_kd.index.encoders import make_encoder
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.retrieve.dense import DenseParams, load_encoder
    from retrieval_kd.teachers.spec import build_teacher, parse_teacher
    from retrieval_kd.train.students import FAMILY_CLASS, build_student, load_student

    marker, st, hf = code_models
    loads = []
    for folder in (st, hf):
        m = str(folder)
        loads += [lambda m=m, k=k: build_teacher(parse_teacher({"kind": k, "model": m}))
                  for k in ("bi-encoder", "cross-encoder", "splade", "llm")]
        loads += [lambda m=m: load_encoder(resolve_model(m), DenseParams())]
        loads += [lambda m=m, f=f: make_encoder(f, m) for f in ("dense", "splade", "colbert")]
        loads += [lambda m=m, f=f: build_student(f, m) for f in FAMILY_CLASS]
        loads += [lambda m=m, f=f: load_student(f, m) for f in FAMILY_CLASS]
    refused = 0
    for load in loads:
        try:
            load()
        except Exception:  # noqa: BLE001 - refusing to load is the expected outcome
            refused += 1
        assert not marker.exists(), "a model folder's own code ran"
    assert refused >= len(loads) // 2  # the custom-code folders mostly cannot load at all
    # the control: trusting the folder's code does run it (so the loads above had the chance)
    import transformers.dynamic_module_utils as dmu
    from transformers import AutoConfig

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    with pytest.raises(Exception):  # noqa: B017 - Evil is no config class; importing it is the point
        AutoConfig.from_pretrained(str(hf), trust_remote_code=True)
    assert marker.exists()


# -- ids and names never become paths --------------------------------------------------------

EVIL_IDS = ("../../../escape-q", "/tmp/escape-abs", "..\\..\\escape-win", "a/../../escape-mid")


def _evil_beir(root: Path) -> Path:
    from tests.beir import write_beir

    words = "cell gene protein tumor blood virus drug dose".split()
    docs = {f"{e}-d{i}": " ".join(words[(i + j) % 8] for j in range(6)) for i in range(6) for e in EVIL_IDS}
    qs = {f"{e}-q{i}": " ".join(words[i:i + 3]) for i in range(3) for e in EVIL_IDS}
    dids = list(docs)
    rows = [(q, dids[i % len(dids)], 1) for i, q in enumerate(qs)]
    return write_beir(root, ({"_id": d, "title": "", "text": t} for d, t in docs.items()),
                      ({"_id": q, "text": t} for q, t in qs.items()), {"train": rows, "test": rows})


@pytest.mark.slow
def test_path_like_ids_never_become_paths(tmp_path):
    """Query and document ids that read as paths go through retrieval, scoring (a store) and
    evaluation as plain strings: nothing is written outside the run root, no file takes an id's name."""
    from retrieval_kd.pipeline.load import load_pipeline
    from retrieval_kd.pipeline.runner import run_stages

    work = tmp_path / "a" / "b"
    _evil_beir(work / "ds")
    p = work / "p.yaml"
    p.write_text("name: ids\ndatasets:\n  ds: {source: ds}\n"
                 "retrieve:\n  bm25: {kind: bm25, dataset: ds, splits: [train, test], k: 10}\n"
                 "teachers:\n  t: {dataset: ds, splits: [test], candidates: bm25, top_k: 5, "
                 "teacher: {kind: bm25, k1: 1.2, b: 0.7}}\n"
                 "evals:\n  test: {dataset: ds, split: test, systems: {BM25: 'retrieve:bm25', T: 'teacher:t'}}\n")
    before = _files(tmp_path)
    root = work / "runs"
    rec = run_stages(load_pipeline(p), root, echo=lambda _m: None)
    assert rec["status"] == "complete"
    written = _files(tmp_path) - before
    assert written and all(root in f.parents for f in written)
    assert not [f for f in tmp_path.rglob("*escape*")] and not Path("/tmp/escape-abs").exists()
    run = (root / next(s["dir"] for s in rec["stages"] if s["id"] == "teacher:t@test") / "run.trec").read_text()
    assert "../../../escape-q" in run  # the ids survive as data


def test_names_that_would_be_paths_are_refused(tmp_path):
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.pipeline.load import PipelineError, load_pipeline
    from retrieval_kd.queries.filter import filter_queries
    from tests.test_pipeline import write_corpus

    ds = write_corpus(tmp_path / "tiny", n_docs=6, n_queries=4)
    base = "name: x\ndatasets:\n  tiny: {source: tiny}\nretrieve:\n"
    bad = [
        "  bm25: {kind: bm25, dataset: tiny, splits: ['../../../escape'], k: 5}\n",
        "  bm25: {kind: bm25, dataset: tiny, splits: [/tmp/escape], k: 5}\n",
        "  ../escape: {kind: bm25, dataset: tiny, splits: [test], k: 5}\n",
    ]
    for entry in bad:
        (tmp_path / "p.yaml").write_text(base + entry)
        with pytest.raises(PipelineError):
            load_pipeline(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("name: ../escape\ndatasets:\n  tiny: {source: tiny}\n")
    with pytest.raises(PipelineError):
        load_pipeline(tmp_path / "p.yaml")
    for split in ("../test", "/etc/passwd", ".hidden", "a\\b"):
        with pytest.raises(RkdError, match="not a split name"):
            load_dataset(str(ds), split)
    run = tmp_path / "r.trec"
    run.write_text("q1 Q0 d1 1 1.0 x\n")
    with pytest.raises(RkdError, match="not a split name"):
        filter_queries(ds, "../../escape", run, 3, tmp_path / "out")
    assert not list(tmp_path.parent.glob("escape*")) and not (tmp_path / "out").exists()


def test_dataset_archive_cannot_write_outside_its_folder(tmp_path):
    from retrieval_kd.data.registry import DatasetSpec, download_beir_zip

    archive = tmp_path / "src" / "ds.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ds/corpus.jsonl", '{"_id": "d1", "text": "x"}\n')
        z.writestr("ds/queries.jsonl", '{"_id": "q1", "text": "x"}\n')
        z.writestr("ds/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
        z.writestr("../../escape-zip.txt", "x")
        z.writestr("/tmp/escape-zip-abs.txt", "x")
    spec = DatasetSpec(name="ds", format="beir", dir="ds", splits=["test"], url=archive.as_uri())
    dest = tmp_path / "data" / "ds"
    download_beir_zip(spec, dest)
    assert (dest / "corpus.jsonl").is_file()
    assert not list(tmp_path.rglob("escape-zip*")) and not list(tmp_path.parent.glob("escape-zip*"))
    assert not Path("/tmp/escape-zip-abs.txt").exists()
