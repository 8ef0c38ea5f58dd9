"""The dataset registry (``data/datasets.yaml``) and dataset resolution.

``load_dataset(name, split)`` looks, in order, at: a path given directly; the local copy
under the data home; where a network exists, the BEIR zip (md5-checked) or the
ir_datasets id. Offline with no local copy it fails with one message naming where the
data was looked for; online, one line naming every source tried and the local layout.

An entry's ``relevance_level`` (per split) is the evaluation protocol's lowest grade that
binary metrics count as relevant; it is set on the loaded :class:`Dataset` whichever source
it came from.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from retrieval_kd.data import msmarco
from retrieval_kd.data.beir import beir_splits, load_beir
from retrieval_kd.data.trec import load_trec_dir
from retrieval_kd.data.types import Dataset
from retrieval_kd.errors import DataError, IntegrityError, NotFoundError, RkdError
from retrieval_kd.redact import redact, redact_url
from retrieval_kd.settings import DATA_HOME_ENV, data_home, offline

REGISTRY_FILE = Path(__file__).with_name("datasets.yaml")
# Formats whose loader lives in another subpackage, imported on use. A name
# "<entry>:<variant>" picks one dataset of such an entry (e.g. "xquad-r:de-en"); the loader
# is called as load_registered(root, format, variant, split, name).
EXTERNAL_FORMATS = {"xquad-r": "retrieval_kd.xling.registry", "msmarco-ko": "retrieval_kd.xling.registry"}
FORMATS = ("beir", "trec", "msmarco-passage", *EXTERNAL_FORMATS)


class DatasetSpec(BaseModel):
    """One registry entry."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    format: str
    dir: str
    splits: list[str]
    url: str | None = None
    md5: str | None = None
    ir_datasets: dict[str, str] = {}
    license: str = ""
    variants: str = ""
    """For an entry of several datasets: which ``<name>:<variant>`` exist (shown by ``rkd data list``)."""
    relevance_level: dict[str, int] = {}
    """split -> lowest grade that binary metrics (recall, MAP, MRR, ...) count as relevant; 1
    where absent. nDCG always uses the grades."""
    counts: dict[str, dict[str, int]] = {}
    """split -> published sizes (``docs``, ``queries``, ``qrels``), for reference and checks."""

    def local_dir(self) -> Path:
        return data_home() / self.dir


@lru_cache(maxsize=1)
def registry() -> dict[str, DatasetSpec]:
    """Parse the registry file; a bad entry is an error naming the file and the entry."""
    raw = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8")) or {}
    out: dict[str, DatasetSpec] = {}
    for name, entry in raw.items():
        try:
            spec = DatasetSpec(name=name, **entry)
        except (TypeError, ValidationError) as e:
            raise DataError(REGISTRY_FILE, f"entry '{name}': {e}") from None
        if spec.format not in FORMATS:
            raise DataError(REGISTRY_FILE, f"entry '{name}': unknown format '{spec.format}'")
        unknown = sorted((set(spec.relevance_level) | set(spec.counts)) - set(spec.splits))
        if unknown:
            raise DataError(REGISTRY_FILE, f"entry '{name}': relevance_level/counts name splits "
                                           f"{unknown} not in splits {spec.splits}")
        out[name] = spec
    return out


def _load_dir(root: Path, fmt: str, split: str, name: str, variant: str | None = None) -> Dataset:
    if fmt in EXTERNAL_FORMATS:
        import importlib

        return importlib.import_module(EXTERNAL_FORMATS[fmt]).load_registered(root, fmt, variant, split, name)
    if fmt == "trec":
        return load_trec_dir(root, name=name, split=split)
    if fmt == "msmarco-passage":
        return msmarco.load_msmarco_passage(root, split, name=name)
    return load_beir(root, split, name=name)


def _guess_format(root: Path) -> str:
    if (root / "corpus.jsonl").is_file():
        return "beir"
    if (root / "corpus.tsv").is_file():
        return "trec"
    raise NotFoundError(
        f"{root}: not a dataset directory (expected corpus.jsonl + queries.jsonl + qrels/ "
        "for BEIR, or corpus.tsv + queries.tsv + qrels.txt for TREC)"
    )


def local_layout(spec: DatasetSpec, split: str) -> str:
    """The files a local copy of ``spec``'s ``split`` needs under its folder (for messages)."""
    if spec.format == "msmarco-passage":
        return msmarco.layout(split)
    if spec.format == "beir":
        return f"corpus.jsonl, queries.jsonl, qrels/{split}.tsv"
    if spec.format == "trec":
        return "corpus.tsv, queries.tsv, qrels.txt"
    return f"the {spec.format} files"


def load_dataset(name_or_path: str, split: str = "test") -> Dataset:
    """Load one split of a registered dataset, or of a dataset directory given by path."""
    ds, spec = _load_dataset(name_or_path, split)
    if spec is not None:
        ds.relevance_level = spec.relevance_level.get(split, 1)
    return ds


def _load_dataset(name_or_path: str, split: str) -> tuple[Dataset, DatasetSpec | None]:
    if not split or split.startswith(".") or any(c in split for c in "/\\\0"):
        raise NotFoundError(f"'{split}' is not a split name (a split is a name such as test, never a path)")
    path = Path(name_or_path).expanduser()
    reg = registry()
    variant = None
    if name_or_path not in reg and ":" in name_or_path and name_or_path.split(":", 1)[0] in reg:
        name_or_path, variant = name_or_path.split(":", 1)
    if name_or_path not in reg:
        if path.is_dir():
            return _load_dir(path, _guess_format(path), split, path.name), None
        known = ", ".join(reg)
        raise NotFoundError(
            f"unknown dataset '{name_or_path}': not in {REGISTRY_FILE} ({known}) "
            "and not a directory"
        )
    spec = reg[name_or_path]
    if variant is not None and spec.format not in EXTERNAL_FORMATS:
        raise NotFoundError(f"dataset '{spec.name}' has no variants ('{spec.name}:{variant}' asked for)")
    if split not in spec.splits:
        raise NotFoundError(f"dataset '{spec.name}' has no split '{split}' (splits: {spec.splits})")
    local = spec.local_dir()
    if local.is_dir():
        return _load_dir(local, spec.format, split, spec.name, variant), spec
    tried = [f"{local} (data home from ${DATA_HOME_ENV} or the default)"]
    if offline():
        raise NotFoundError(
            f"dataset '{spec.name}' not found offline: looked in {tried[0]}; "
            f"set {DATA_HOME_ENV} to a folder holding '{spec.dir}/' ({local_layout(spec, split)})"
        )
    errors = []
    if spec.url:
        try:
            download_beir_zip(spec, local)
            return _load_dir(local, spec.format, split, spec.name), spec
        except (OSError, IntegrityError, zipfile.BadZipFile) as e:
            errors.append(redact(f"download {spec.url}: {e}"))
    if split in spec.ir_datasets:
        from retrieval_kd.data.irds import load_ir_datasets

        try:
            return load_ir_datasets(spec.ir_datasets[split], name=spec.name, split=split), spec
        except RkdError:
            raise
        except Exception as e:  # ir_datasets raises many kinds on a failed download
            errors.append(f"ir_datasets {spec.ir_datasets[split]}: {type(e).__name__}: {e}")
    raise NotFoundError(" ".join((
        f"dataset '{spec.name}' not found: looked in {tried[0]}; " + "; ".join(errors)
        + f"; to supply it locally put {local_layout(spec, split)} in {local} (or set {DATA_HOME_ENV})"
    ).split()))


def download_beir_zip(spec: DatasetSpec, dest: Path, timeout: float = 60.0) -> Path:
    """Download a BEIR zip, check its md5, unpack it into ``dest`` atomically."""
    assert spec.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.dl-") as tmp:
        archive = Path(tmp) / "archive.zip"
        with urllib.request.urlopen(spec.url, timeout=timeout) as r, open(archive, "wb") as f:
            shutil.copyfileobj(r, f)
        if spec.md5:
            got = hashlib.md5(archive.read_bytes()).hexdigest()
            if got != spec.md5:
                raise IntegrityError(f"md5 {got} != expected {spec.md5}")
        with zipfile.ZipFile(archive) as z:
            z.extractall(Path(tmp) / "x")
        roots = [p for p in (Path(tmp) / "x").rglob("corpus.jsonl")]
        if not roots:
            raise IntegrityError("archive has no corpus.jsonl")
        roots[0].parent.rename(Path(tmp) / "ready")
        (Path(tmp) / "ready").rename(dest)
    return dest


def describe(spec: DatasetSpec) -> dict[str, object]:
    local = spec.local_dir()
    return {
        "name": f"{spec.name}:<{spec.variants}>" if spec.variants else spec.name,
        "format": spec.format,
        "splits": spec.splits if not local.is_dir() or spec.format != "beir" else beir_splits(local),
        "local": str(local) if local.is_dir() else None,
        "source": redact_url(spec.url) if spec.url else ", ".join(spec.ir_datasets.values()) or "local only",
        "description": spec.description,
    }
