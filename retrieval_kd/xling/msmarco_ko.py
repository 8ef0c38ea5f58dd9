"""MS MARCO passage dev-small with a Korean machine translation (``msmarco-ko``).

The copy holds two JSON lists, ``msmarco_eng.json`` and ``msmarco_kor.json``, of
``{id, query, positive: [passage, ...]}`` records aligned by position and id (6,980 queries,
each with its judged positive passage). The Korean file sometimes splits one English
positive into 2-4 pieces (the English positive is itself several MS MARCO passages run
together); the pieces are joined with a space, so every Korean passage is the translation
of exactly one English passage.

The corpus is the pool of judged positives only (6,978 distinct English passages: two are
shared by two queries), a small pool: numbers are not comparable with full MS MARCO.

Ids: a query keeps the record's ``id`` (``"1"`` .. ``"6980"``); a passage is ``p<id>`` of
the first record whose positive it is (same id in both languages). For the two shared
passages the Korean text is the first record's translation; the other translation is
dropped (``Dataset.sources['note']`` says how many).

Directions ``<query lang>-<passage lang>``: ``ko-en`` (Korean queries, English passages),
``en-en``, ``ko-ko``, ``en-ko``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval_kd.data.types import Corpus, Dataset, Document, Qrels, Queries, cross_check
from retrieval_kd.errors import DataError, NotFoundError
from retrieval_kd.settings import data_home
from retrieval_kd.xling._json import iter_json_array, record_id

DIR = "msmarco-ko"
FILES = {"en": "msmarco_eng.json", "ko": "msmarco_kor.json"}
DIRECTIONS = ("ko-en", "en-en", "ko-ko", "en-ko")


@dataclass
class Record:
    line: int
    id: str
    query: str
    positives: list[str]


def read_msmarco_ko_file(path: str | Path) -> list[Record]:
    """Read one language file; bad records are errors naming the file and the record's line."""
    path = Path(path)
    out: list[Record] = []
    seen: set[str] = set()
    for line, obj in iter_json_array(path):
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line)
        for key in ("id", "query", "positive"):
            if key not in obj:
                raise DataError(path, f"missing field '{key}'", line)
        rid = record_id(path, line, obj["id"], "a non-empty integer or string")
        if rid in seen:
            raise DataError(path, f"duplicate id '{rid}'", line)
        seen.add(rid)
        query = obj["query"]
        if not isinstance(query, str) or not query.strip():
            raise DataError(path, f"record '{rid}': query must be a non-empty string", line)
        pos = obj["positive"]
        if (not isinstance(pos, list) or not pos
                or not all(isinstance(p, str) and p.strip() for p in pos)):
            raise DataError(path, f"record '{rid}': 'positive' must be a non-empty list of "
                                  "non-empty strings", line)
        out.append(Record(line, rid, query, pos))
    if not out:
        raise DataError(path, "no records")
    return out


def msmarco_ko_root(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else data_home() / DIR


def _read(root: Path, lang: str) -> list[Record]:
    if lang not in FILES:
        raise NotFoundError(f"msmarco-ko has no language '{lang}' (languages: en, ko)")
    path = root / FILES[lang]
    if not path.is_file():
        raise NotFoundError(f"{path}: not found (set RKD_DATA_HOME to a folder holding '{DIR}/')")
    return read_msmarco_ko_file(path)


def load_msmarco_ko(query_lang: str, passage_lang: str, root: str | Path | None = None,
                    name: str | None = None) -> Dataset:
    """Queries in ``query_lang`` over the judged passages in ``passage_lang`` (en or ko)."""
    if query_lang not in FILES or passage_lang not in FILES:
        raise NotFoundError(f"msmarco-ko has no direction '{query_lang}-{passage_lang}' "
                            f"(directions: {', '.join(DIRECTIONS)})")
    root = msmarco_ko_root(root)
    en = _read(root, "en")
    ko = _read(root, "ko") if "ko" in (query_lang, passage_lang) else en
    kpath = root / FILES["ko"]
    if len(ko) != len(en):
        raise DataError(kpath, f"{len(ko)} records but {root / FILES['en']} has {len(en)}")
    for e, k in zip(en, ko):
        if e.id != k.id:
            raise DataError(kpath, f"record id '{k.id}' where {FILES['en']} line {e.line} has id "
                                   f"'{e.id}' (the files must align by position)", k.line)
        if len(e.positives) != 1:
            raise DataError(root / FILES["en"], f"record '{e.id}': expected one English positive, "
                                                f"found {len(e.positives)}", e.line)
    # one passage id per distinct English passage, named after its first record
    pid_of: dict[str, str] = {}
    texts: dict[str, dict[str, str]] = {"en": {}, "ko": {}}
    qrels: Qrels = {}
    dropped = 0
    for e, k in zip(en, ko):
        text = e.positives[0]
        pid = pid_of.setdefault(text, f"p{e.id}")
        if pid not in texts["en"]:
            texts["en"][pid] = text
            texts["ko"][pid] = " ".join(p.strip() for p in k.positives)
        elif ko is not en:
            dropped += " ".join(p.strip() for p in k.positives) != texts["ko"][pid]
        qrels[e.id] = {pid: 1}
    queries = Queries({r.id: r.query for r in (en if query_lang == "en" else ko)})
    corpus = Corpus({pid: Document(text=t) for pid, t in texts[passage_lang].items()})
    sources = {"queries": str(root / FILES[query_lang]), "corpus": str(root / FILES[passage_lang]),
               "qrels": f"each record's positive ({root / FILES['en']})"}
    if passage_lang == "ko" and dropped:
        sources["note"] = (f"{dropped} Korean translation(s) of an already-seen English passage "
                           "dropped (the first record's translation is kept)")
    return Dataset(
        name=name or f"msmarco-ko:{query_lang}-{passage_lang}", split="dev", corpus=corpus,
        queries=queries, qrels=qrels, sources=sources,
        report=cross_check(corpus, queries, qrels),
    )
