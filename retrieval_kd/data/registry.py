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
from typing import Literal

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
FORMATS = ("beir", "trec", "msmarco-passage", "miracl", "mr-tydi", "xor-retrieve", *EXTERNAL_FORMATS)
SOURCES_KEY = "_sources"
"""The registry file's table of citations that ``references`` name (not a dataset)."""
SUBSET = "{subset}"


class Protocol(BaseModel):
    """How a dataset's papers evaluate it (what ``rkd bench`` reports)."""

    model_config = ConfigDict(extra="forbid")
    metrics: list[str] = ["ndcg@10"]
    """The metrics reported, the first being the headline one; ``R@<N>kt`` is XOR-TyDi's answer
    recall within the first N thousand tokens (retrieval_kd/xling/xor_tydi.py)."""
    split_metrics: dict[str, list[str]] = {}
    """split -> its metrics where they differ (MS MARCO dev: MRR@10)."""
    ignore_identical_ids: bool = True
    """BEIR's flag: a retrieved document whose id equals the query id is dropped."""
    subsets: Literal["each", "average"] = "each"
    """average: the subsets are reported as one number, their mean (BEIR's CQADupStack)."""

    def metrics_for(self, split: str) -> list[str]:
        return self.split_metrics.get(split, self.metrics)


class Reference(BaseModel):
    """A published number to print beside ours."""

    model_config = ConfigDict(extra="forbid")
    system: str
    """``bm25`` or a registered model name (``minilm-l6``)."""
    label: str
    metric: str
    value: float
    source: str
    """A key of the registry's ``_sources``."""
    subset: str | None = None


TASKS = ("qa", "claim", "argument", "duplicate")
"""What a dataset's queries ask for, which picks an LLM teacher's prompt (retrieval_kd/teachers/prompts.py):
questions answered by passages, claims with evidence, arguments on a topic, duplicate questions."""


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
    subsets: list[str] = []
    """The datasets of a multi-dataset entry, each loaded as ``<name>:<subset>``."""
    homepage: str = ""
    """Where the release is published, for sources that are neither a BEIR zip nor ir_datasets."""
    protocol: Protocol = Protocol()
    references: dict[str, list[Reference]] = {}
    task: Literal[TASKS] = "qa"
    """One of :data:`TASKS`: the prompt an LLM teacher judges this dataset's pairs with."""
    """split -> published numbers."""
    files: dict[str, str] = {}
    """Other release files of the dataset (name -> what and where), e.g. training triples."""

    def local_dir(self) -> Path:
        return data_home() / self.dir

    def irds_id(self, split: str, subset: str | None = None) -> str | None:
        """The ir_datasets id of ``split`` (of ``subset``), if any."""
        ident = self.ir_datasets.get(split)
        if ident is None or (SUBSET in ident and not subset):
            return None
        return ident.replace(SUBSET, subset) if subset else ident

    def download_sources(self, split: str, subset: str | None = None) -> list[str]:
        """Where a copy can be had: the BEIR zip (with its md5), the ir_datasets id, the homepage."""
        out = [f"{redact_url(self.url)} (md5 {self.md5 or 'unknown'})"] if self.url else []
        if ident := self.irds_id(split, subset):
            out.append(f"ir_datasets {ident}")
        if self.homepage:
            out.append(self.homepage)
        return out or ["local only"]


@lru_cache(maxsize=1)
def registry() -> dict[str, DatasetSpec]:
    """Parse the registry file; a bad entry is an error naming the file and the entry."""
    raw = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8")) or {}
    cited = raw.pop(SOURCES_KEY, None) or {}
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
        _check_references(spec, cited)
        out[name] = spec
    return out


def _check_references(spec: DatasetSpec, cited: dict[str, str]) -> None:
    where = f"entry '{spec.name}'"
    for split, refs in spec.references.items():
        if split not in spec.splits:
            raise DataError(REGISTRY_FILE, f"{where}: references name split '{split}' not in {spec.splits}")
        for r in refs:
            if r.source not in cited:
                raise DataError(REGISTRY_FILE, f"{where}: reference source '{r.source}' is not in {SOURCES_KEY}")
            if r.subset is not None and r.subset not in spec.subsets:
                raise DataError(REGISTRY_FILE, f"{where}: reference subset '{r.subset}' not in {spec.subsets}")
    if any(SUBSET in i for i in spec.ir_datasets.values()) and not spec.subsets:
        raise DataError(REGISTRY_FILE, f"{where}: an ir_datasets id with {SUBSET} needs subsets")


@lru_cache(maxsize=1)
def cited_sources() -> dict[str, str]:
    """The registry's ``_sources``: citation key -> what the number is and where it was read."""
    raw = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8")) or {}
    return {k: " ".join(str(v).split()) for k, v in (raw.get(SOURCES_KEY) or {}).items()}


def _load_dir(root: Path, fmt: str, split: str, name: str, variant: str | None = None) -> Dataset:
    if fmt in EXTERNAL_FORMATS:
        import importlib

        return importlib.import_module(EXTERNAL_FORMATS[fmt]).load_registered(root, fmt, variant, split, name)
    full = f"{name}:{variant}" if variant else name
    if fmt in ("miracl", "mr-tydi"):
        from retrieval_kd.data import multiling

        if not variant:
            raise NotFoundError(f"dataset '{name}' needs a language: '{name}:<lang>'")
        return multiling.LOADERS[fmt](root, variant, split, name=full)
    if fmt == "xor-retrieve":
        from retrieval_kd.data.xor import load_xor_dataset

        return load_xor_dataset(root, split, name=full)
    if variant:  # a subset of a BEIR entry (cqadupstack:android): its own BEIR folder
        return load_beir(root / variant, split, name=full)
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


def local_files(spec: DatasetSpec, split: str, subset: str | None = None) -> list[str]:
    """The files (or folders) a local copy of ``spec``'s ``split`` needs, relative to its folder
    (empty when only the format's own loader knows them)."""
    if spec.format == "msmarco-passage":
        return msmarco.layout(split).split(", ")
    if spec.format == "beir":
        pre = f"{subset}/" if subset else ""
        return [f"{pre}corpus.jsonl", f"{pre}queries.jsonl", f"{pre}qrels/{split}.tsv"]
    if spec.format == "trec":
        return ["corpus.tsv", "queries.tsv", "qrels.txt"]
    if spec.format in ("miracl", "mr-tydi"):
        from retrieval_kd.data import multiling

        return multiling.LAYOUTS[spec.format](subset or "<lang>", split)
    if spec.format == "xor-retrieve":
        from retrieval_kd.data.xor import layout

        return layout(split)
    return []


def local_layout(spec: DatasetSpec, split: str, subset: str | None = None) -> str:
    """The files a local copy of ``spec``'s ``split`` needs under its folder (for messages)."""
    return ", ".join(local_files(spec, split, subset)) or f"the {spec.format} files"


def missing_local(spec: DatasetSpec, split: str, subset: str | None = None) -> list[str]:
    """What a local copy of the split lacks (empty: it is there), without loading it."""
    root = spec.local_dir()
    if not root.is_dir():
        return [str(root)]
    return [f for f in local_files(spec, split, subset) if not _present(root, f)]


def _present(root: Path, pattern: str) -> bool:
    """A layout entry is there: a path or glob, or ``A or B`` alternatives."""
    return any(any(root.glob(alt.strip())) for alt in pattern.split(" or "))


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
        if reg[name_or_path].subsets and variant not in reg[name_or_path].subsets:
            raise NotFoundError(f"dataset '{name_or_path}' has no subset '{variant}' "
                                f"(subsets: {', '.join(reg[name_or_path].subsets)})")
    if name_or_path not in reg:
        if path.is_dir():
            return _load_dir(path, _guess_format(path), split, path.name), None
        known = ", ".join(reg)
        raise NotFoundError(
            f"unknown dataset '{name_or_path}': not in {REGISTRY_FILE} ({known}) "
            "and not a directory"
        )
    spec = reg[name_or_path]
    if variant is not None and spec.format not in EXTERNAL_FORMATS and not spec.subsets:
        raise NotFoundError(f"dataset '{spec.name}' has no variants ('{spec.name}:{variant}' asked for)")
    if spec.subsets and variant is None:
        raise NotFoundError(f"dataset '{spec.name}' is {len(spec.subsets)} datasets: load one as "
                            f"'{spec.name}:<subset>' (subsets: {', '.join(spec.subsets)})")
    if split not in spec.splits:
        raise NotFoundError(f"dataset '{spec.name}' has no split '{split}' (splits: {spec.splits})")
    local = spec.local_dir()
    # a BEIR subset (cqadupstack:gis) is its own folder: without it, its sources are tried
    if (local / variant).is_dir() if spec.subsets and spec.format == "beir" else local.is_dir():
        return _load_dir(local, spec.format, split, spec.name, variant), spec
    tried = [f"{local} (data home from ${DATA_HOME_ENV} or the default)"]
    layout = local_layout(spec, split, variant if spec.subsets else None)
    full = f"{spec.name}:{variant}" if variant else spec.name
    if offline():
        raise NotFoundError(
            f"dataset '{full}' not found offline: looked in {tried[0]}; "
            f"set {DATA_HOME_ENV} to a folder holding '{spec.dir}/' ({layout})"
        )
    errors = []
    if spec.url:
        try:
            download_beir_zip(spec, local)
            return _load_dir(local, spec.format, split, spec.name, variant), spec
        except (OSError, IntegrityError, zipfile.BadZipFile) as e:
            errors.append(redact(f"download {spec.url}: {e}"))
    if ident := spec.irds_id(split, variant):
        from retrieval_kd.data.irds import load_ir_datasets

        try:
            return load_ir_datasets(ident, name=full, split=split), spec
        except RkdError:
            raise
        except Exception as e:  # ir_datasets raises many kinds on a failed download
            errors.append(f"ir_datasets {ident}: {type(e).__name__}: {e}")
    if spec.homepage:
        errors.append(f"no download for this format: get the release from {spec.homepage}")
    raise NotFoundError(" ".join((
        f"dataset '{full}' not found: looked in {tried[0]}; " + "; ".join(errors)
        + f"; to supply it locally put {layout} in {local} (or set {DATA_HOME_ENV})"
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
        roots = sorted((Path(tmp) / "x").rglob("corpus.jsonl"))
        if not roots:
            raise IntegrityError("archive has no corpus.jsonl")
        # BEIR zips hold one folder <name>/; CQADupStack's holds one BEIR folder per sub-forum
        top = roots[0].parent.parent if spec.subsets else roots[0].parent
        top.rename(Path(tmp) / "ready")
        (Path(tmp) / "ready").rename(dest)
    return dest


def describe(spec: DatasetSpec) -> dict[str, object]:
    local = spec.local_dir()
    return {
        "name": (f"{spec.name}:<{spec.variants}>" if spec.variants else
                 f"{spec.name}:<{'|'.join(spec.subsets)}>" if spec.subsets else spec.name),
        "format": spec.format,
        "splits": spec.splits if not local.is_dir() or spec.format != "beir" or spec.subsets else beir_splits(local),
        "local": str(local) if local.is_dir() else None,
        "source": (redact_url(spec.url) if spec.url else ", ".join(spec.ir_datasets.values())
                   or spec.homepage or "local only"),
        "description": spec.description,
    }
