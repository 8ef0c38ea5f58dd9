"""Atomic writes, atomic directories, fingerprints and manifests (retrieval_kd.artifacts)."""

from __future__ import annotations

import hashlib
import json

import pytest

from retrieval_kd.artifacts import (
    MANIFEST,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_text,
    library_versions,
    manifest,
    read_json,
    read_manifest,
    sha256_file,
    sha256_json,
    sha256_records,
    write_json,
)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# --------------------------------------------------------------------------- atomic files


def test_atomic_write_text_creates_then_replaces_without_temp_files(tmp_path):
    target = tmp_path / "deep" / "er" / "out.txt"
    atomic_write_text(target, "first\n")
    assert target.read_text(encoding="utf-8") == "first\n"
    atomic_write_text(target, "second é\n")
    assert target.read_text(encoding="utf-8") == "second é\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_write_bytes_failure_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_write_json_and_read_json_round_trip(tmp_path):
    obj = {"b": [1, 2], "a": {"x": "y"}, "p": tmp_path}
    write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    assert text.endswith("\n") and list(json.loads(text)) == ["b", "a", "p"]  # key order kept
    assert read_json(tmp_path / "o.json") == {**obj, "p": str(tmp_path)}


# --------------------------------------------------------------------------- atomic directories


def test_atomic_dir_renames_into_place_on_success(tmp_path):
    final = tmp_path / "parent" / "art"
    with atomic_dir(final) as tmp:
        assert tmp.is_dir() and tmp.parent == final.parent and ".art.tmp-" in tmp.name
        assert not final.exists()
        (tmp / "a.txt").write_text("A")
    assert (final / "a.txt").read_text() == "A"
    assert not tmp.exists()
    assert leftovers(final.parent) == []


def test_atomic_dir_replaces_existing_directory(tmp_path):
    final = tmp_path / "art"
    final.mkdir()
    (final / "stale.txt").write_text("old")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (final / "stale.txt").exists()  # old content visible until the block ends
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_exception_leaves_previous_content_and_no_temp(tmp_path):
    final = tmp_path / "art"
    final.mkdir()
    (final / "keep.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in final.iterdir()) == ["keep.txt"]
    assert (final / "keep.txt").read_text() == "keep"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_atomic_dir_exception_when_nothing_existed(tmp_path):
    final = tmp_path / "art"
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "x").write_text("x")
        raise KeyboardInterrupt
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- hashes


def test_sha256_records_delimits_fields_and_records():
    assert sha256_records([("ab", "c")]) != sha256_records([("a", "bc")])
    assert sha256_records([("a",), ("b",)]) != sha256_records([("a", "b")])
    assert sha256_records([("a", "b")]) != sha256_records([("b", "a")])
    assert sha256_records([("a", "b"), ("c",)]) == sha256_records(iter([["a", "b"], ["c"]]))
    assert sha256_records([("é",)]) != sha256_records([("e",)])
    assert sha256_records([]) == hashlib.sha256().hexdigest()


def test_sha256_file_and_json(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 10)
    assert sha256_file(p) == hashlib.sha256(b"x" * 10).hexdigest()
    assert sha256_file(p, chunk=3) == sha256_file(p)
    assert sha256_json({"a": 1, "b": 2}) == sha256_json({"b": 2, "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


# --------------------------------------------------------------------------- manifests


def test_manifest_keys_and_versions():
    m = manifest("retrieve.bm25", inputs={"dataset": "d"}, params={"k1": 1.2},
                 timings={"index": 1.23456}, seed=3)
    assert {"kind", "inputs", "params", "versions", "timings_s"} <= set(m)
    assert m["kind"] == "retrieve.bm25"
    assert m["inputs"] == {"dataset": "d"} and m["params"] == {"k1": 1.2}
    assert m["timings_s"] == {"index": 1.235}
    assert m["outputs"] == {} and m["seed"] == 3 and m["created"]
    assert "python" in m["versions"] and "torch" in m["versions"]
    json.dumps(m)


def test_manifest_defaults_and_library_versions():
    m = manifest("x", inputs={}, params={})
    assert m["timings_s"] == {} and m["outputs"] == {}
    v = library_versions()
    assert v["python"].count(".") == 2 and all(isinstance(x, str) for x in v.values())


def test_read_manifest(tmp_path):
    assert read_manifest(tmp_path) is None
    write_json(tmp_path / MANIFEST, {"kind": "k"})
    assert read_manifest(tmp_path) == {"kind": "k"}
