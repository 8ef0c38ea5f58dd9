"""Cross-lingual loaders: XQuAD-R paragraphs and the LAReQA pool, MS MARCO ko-en, the registry.

Hand-made files under ``tmp_path`` check ids, qrels and bad-input errors; the real copies in
the shared data folder (``shared_data`` in conftest.py) are loaded when present.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval_kd.data.registry import describe, load_dataset, registry
from retrieval_kd.errors import DataError, NotFoundError
from retrieval_kd.settings import DATA_HOME_ENV
from retrieval_kd.xling.msmarco_ko import load_msmarco_ko, read_msmarco_ko_file
from retrieval_kd.xling.xquad_r import XQUAD_R_LANGS, load_lareqa, load_xquad_r, read_xquad_r

# ----------------------------------------------------------------------------- XQuAD-R, hand-made


def para(context: str, sentences: list[str], qas: list[tuple[str, str, int]]) -> dict:
    breaks, pos = [], 0
    for s in sentences:
        start = context.index(s, pos)
        breaks.append([start, start + len(s)])
        pos = start + len(s)
    return {"context": context, "sentences": sentences, "sentence_breaks": breaks,
            "qas": [{"id": i, "question": q, "answers": [{"text": context[a:a + 3], "answer_start": a}]}
                    for i, q, a in qas]}


def tiny_xquad(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    en = {"data": [{"title": "Cats", "paragraphs": [
        para("Cats purr. Cats sleep a lot.", ["Cats purr.", "Cats sleep a lot."],
             [("q1", "What do cats do?", 0), ("q2", "How much do cats sleep?", 16)]),
        para("Dogs bark loudly.", ["Dogs bark loudly."], [("q3", "What do dogs do?", 5)]),
    ]}], "version": "1.1"}
    de = {"data": [{"title": "Cats", "paragraphs": [
        para("Katzen schnurren. Katzen schlafen viel.", ["Katzen schnurren.", "Katzen schlafen viel."],
             [("q1", "Was tun Katzen?", 7), ("q2", "Wie viel schlafen Katzen?", 25)]),
        para("Hunde bellen laut.", ["Hunde bellen laut."], [("q3", "Was tun Hunde?", 6)]),
    ]}], "version": "1.1"}
    for lang, doc in (("en", en), ("de", de)):
        (root / f"{lang}.json").write_text(json.dumps(doc, ensure_ascii=False))
    return root


def test_xquad_r_paragraph_directions(tmp_path):
    root = tiny_xquad(tmp_path / "xquad-r")
    ds = load_xquad_r("de", "en", root=root)
    assert ds.name == "xquad-r:de-en" and ds.split == "test"
    assert ds.corpus.ids() == ["en_00_00", "en_00_01"]
    assert ds.corpus.docs["en_00_01"].text == "Dogs bark loudly." and ds.corpus.docs["en_00_01"].title == ""
    assert ds.queries.texts == {"q1": "Was tun Katzen?", "q2": "Wie viel schlafen Katzen?",
                                "q3": "Was tun Hunde?"}
    assert ds.qrels == {"q1": {"en_00_00": 1}, "q2": {"en_00_00": 1}, "q3": {"en_00_01": 1}}
    assert ds.report.ok and ds.sources["queries"].endswith("de.json")
    rev = load_xquad_r("en", "de", root=root)
    assert rev.qrels["q3"] == {"de_00_01": 1} and rev.queries.texts["q3"] == "What do dogs do?"
    same = load_xquad_r("de", "de", root=root)
    assert same.corpus.ids() == ["de_00_00", "de_00_01"] and same.queries.texts["q1"] == "Was tun Katzen?"


def test_xquad_r_pool_variant_adds_the_paragraphs_as_training_queries(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    tiny_xquad(tmp_path / "xquad-r")
    ds = load_dataset("xquad-r:de-en+pool", "train")
    assert ds.name == "xquad-r:de-en+pool" and ds.corpus.ids() == ["en_00_00", "en_00_01"]
    # train holds article 0's questions; every paragraph of the pool, in German, is a query too
    assert ds.queries.texts["pool_00_01"] == "Hunde bellen laut." and ds.queries.texts["q3"] == "Was tun Hunde?"
    assert set(ds.qrels) == {"q1", "q2", "q3"} and "pool_00_00" not in ds.qrels
    assert "pool_00_00" in load_dataset("xquad-r:de-en+pool", "heldout").queries.texts  # the pool: every split
    assert "pool_00_00" not in load_dataset("xquad-r:de-en", "train").queries.texts


def test_translate_queries_joins_target_ids_to_their_source_text(tmp_path, monkeypatch):
    from retrieval_kd.xling.translate import IdMismatchError, translate_queries

    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    tiny_xquad(tmp_path / "xquad-r")
    src = load_dataset("xquad-r:en-en+pool", "train")
    joined, sources = translate_queries(src, [load_dataset("xquad-r:en-en", "train"),
                                              load_dataset("xquad-r:de-en+pool", "train")])
    assert joined.queries.texts["q1@xquad-r:de-en+pool"] == "Was tun Katzen?"
    assert sources["q1@xquad-r:de-en+pool"] == sources["q1@xquad-r:en-en"] == "What do cats do?"
    assert sources["pool_00_01@xquad-r:de-en+pool"] == "Dogs bark loudly."
    assert "pool_00_01@xquad-r:en-en" not in sources  # a target may hold a subset of the ids
    assert len(sources) == 3 + 3 + 2 and not joined.qrels
    with pytest.raises(IdMismatchError, match="pool_00_00"):  # a target id the source lacks
        translate_queries(load_dataset("xquad-r:en-en", "train"), [load_dataset("xquad-r:de-en+pool", "train")])


def test_lareqa_pool_and_answer_sentences(tmp_path):
    root = tiny_xquad(tmp_path / "xquad-r")
    ds = load_lareqa("de", root=root, pool_langs=("en", "de"))
    assert ds.name == "xquad-r:lareqa-de"
    assert ds.corpus.ids() == ["en_00_00_00", "en_00_00_01", "en_00_01_00",
                               "de_00_00_00", "de_00_00_01", "de_00_01_00"]
    assert ds.corpus.docs["de_00_00_01"].text == "Katzen schlafen viel."
    assert ds.qrels == {
        "q1": {"en_00_00_00": 1, "de_00_00_00": 1},
        "q2": {"en_00_00_01": 1, "de_00_00_01": 1},
        "q3": {"en_00_01_00": 1, "de_00_01_00": 1},
    }
    assert ds.queries.texts["q2"] == "Wie viel schlafen Katzen?" and ds.report.ok


def _mutate(root: Path, lang: str, fn) -> Path:
    p = root / f"{lang}.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc, ensure_ascii=False))
    return p


@pytest.mark.parametrize("mutation, problem", [
    (lambda d: d["data"][0]["paragraphs"][1]["qas"][0].pop("question"),
     "data[0].paragraphs[1].qas[0]: missing field 'question'"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][1].update(id="q1"),
     "data[0].paragraphs[0].qas[1]: duplicate question id 'q1'"),
    (lambda d: d["data"][0]["paragraphs"][0].update(context=" "), "data[0].paragraphs[0]: empty context"),
    (lambda d: d["data"][0]["paragraphs"][0]["sentence_breaks"].pop(),
     "data[0].paragraphs[0]: 2 sentences but 1 sentence_breaks"),
    (lambda d: d["data"][0]["paragraphs"][0]["sentence_breaks"].__setitem__(1, [30, 39]),
     "qas[1].answers[0]: answer_start 25 falls in no sentence"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="7"),
     "qas[0].answers[0].answer_start: expected int, got str"),
    (lambda d: d.pop("data"), "top level: missing field 'data'"),
])
def test_xquad_r_bad_items_name_file_and_json_path(tmp_path, mutation, problem):
    root = tiny_xquad(tmp_path / "xquad-r")
    p = _mutate(root, "de", mutation)
    with pytest.raises(DataError, match=re.escape(problem)) as e:
        load_xquad_r("de", "en", root=root)
    assert e.value.path == str(p)


def test_xquad_r_malformed_json_names_line(tmp_path):
    p = tmp_path / "de.json"
    p.write_text('{"data": [\n  {"paragraphs": [\n    {"context": "x",, }\n]}]}')
    with pytest.raises(DataError, match="malformed JSON") as e:
        read_xquad_r(p)
    assert e.value.path == str(p) and e.value.line == 3


def test_xquad_r_not_parallel_and_unknown_language(tmp_path):
    root = tiny_xquad(tmp_path / "xquad-r")
    _mutate(root, "de", lambda d: d["data"][0]["paragraphs"][1]["qas"][0].update(id="q9"))
    with pytest.raises(DataError, match=r"not parallel to .*en\.json at data\[0\]\.paragraphs\[1\]"):
        load_xquad_r("de", "en", root=root)
    with pytest.raises(NotFoundError, match="no language 'xx'"):
        load_xquad_r("xx", "en", root=root)
    with pytest.raises(NotFoundError, match="ar.json"):
        load_xquad_r("ar", "en", root=root)  # a known language whose file is absent


def test_lareqa_needs_sentences(tmp_path):
    root = tiny_xquad(tmp_path / "xquad-r")
    def strip(d):
        for p in d["data"][0]["paragraphs"]:
            p.pop("sentences"), p.pop("sentence_breaks")
    _mutate(root, "en", strip)
    assert len(load_xquad_r("de", "en", root=root).corpus) == 2  # plain XQuAD is fine for paragraphs
    with pytest.raises(DataError, match="no sentence annotation"):
        load_lareqa("de", root=root, pool_langs=("en", "de"))


# ----------------------------------------------------------------------------- msmarco-ko, hand-made


def tiny_msmarco(root: Path, en: list | None = None, ko: list | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    en = en or [{"id": 1, "query": "what is a cat", "positive": ["A cat is a small animal."]},
                {"id": 2, "query": "cat definition", "positive": ["A cat is a small animal."]},
                {"id": 3, "query": "dog bark", "positive": ["Dogs bark."]}]
    ko = ko or [{"id": 1, "query": "고양이란", "positive": ["고양이는 작은", "동물이다."]},
                {"id": 2, "query": "고양이 정의", "positive": ["고양이는 작은 동물입니다."]},
                {"id": 3, "query": "개 짖음", "positive": ["개가 짖는다."]}]
    (root / "msmarco_eng.json").write_text(json.dumps(en, ensure_ascii=False, indent=4))
    (root / "msmarco_kor.json").write_text(json.dumps(ko, ensure_ascii=False, indent=4))
    return root


def test_msmarco_ko_four_directions(tmp_path):
    root = tiny_msmarco(tmp_path / "msmarco-ko")
    ko_en = load_msmarco_ko("ko", "en", root=root)
    assert ko_en.name == "msmarco-ko:ko-en" and ko_en.split == "dev"
    assert ko_en.corpus.ids() == ["p1", "p3"]  # the shared passage is named after its first record
    assert ko_en.qrels == {"1": {"p1": 1}, "2": {"p1": 1}, "3": {"p3": 1}}
    assert ko_en.queries.texts["2"] == "고양이 정의" and ko_en.corpus.docs["p1"].text == "A cat is a small animal."
    ko_ko = load_msmarco_ko("ko", "ko", root=root)
    assert ko_ko.corpus.docs["p1"].text == "고양이는 작은 동물이다."  # pieces joined, first translation kept
    assert "1 Korean translation" in ko_ko.sources["note"]
    assert load_msmarco_ko("en", "ko", root=root).queries.texts["3"] == "dog bark"
    assert load_msmarco_ko("en", "en", root=root).corpus.docs["p3"].text == "Dogs bark."
    with pytest.raises(NotFoundError, match="directions: ko-en, en-en, ko-ko, en-ko"):
        load_msmarco_ko("ja", "en", root=root)


@pytest.mark.parametrize("records, line, problem", [
    ([{"id": 1, "query": "a", "positive": ["x"]}, {"id": 2, "query": "b"}], 9, "missing field 'positive'"),
    ([{"id": 1, "query": "a", "positive": ["x"]}, {"id": 1, "query": "b", "positive": ["y"]}], 9,
     "duplicate id '1'"),
    ([{"id": 1, "query": "a", "positive": ["x"]}, {"id": 2, "query": " ", "positive": ["y"]}], 9,
     "query must be a non-empty string"),
    ([{"id": 1, "query": "a", "positive": ["x"]}, {"id": 2, "query": "b", "positive": []}], 9,
     "'positive' must be a non-empty list"),
    ([{"id": 1, "query": "a", "positive": ["x"]}, ["not", "an", "object"]], 9, "expected a JSON object"),
])
def test_msmarco_ko_bad_records_name_file_and_line(tmp_path, records, line, problem):
    p = tmp_path / "msmarco_eng.json"
    p.write_text(json.dumps(records, indent=4))
    with pytest.raises(DataError, match=re.escape(problem)) as e:
        read_msmarco_ko_file(p)
    assert e.value.path == str(p) and e.value.line == line


def test_msmarco_ko_malformed_and_misaligned(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('[\n  {"id": 1, "query": "a", "positive": ["x"]},\n  {"id": 2 "query": "b"}\n]')
    with pytest.raises(DataError, match="malformed JSON") as e:
        read_msmarco_ko_file(p)
    assert e.value.line == 3
    p.write_text('{"id": 1}')
    with pytest.raises(DataError, match="expected a JSON array"):
        read_msmarco_ko_file(p)
    root = tiny_msmarco(tmp_path / "mm", ko=[
        {"id": 1, "query": "고양이란", "positive": ["고양이"]},
        {"id": 3, "query": "개 짖음", "positive": ["개"]},
        {"id": 2, "query": "고양이 정의", "positive": ["고양이"]}])
    with pytest.raises(DataError, match="record id '3' where msmarco_eng.json line 9 has id '2'") as e:
        load_msmarco_ko("ko", "en", root=root)
    assert e.value.path.endswith("msmarco_kor.json") and e.value.line == 9


# ----------------------------------------------------------------------------- registry


def test_registry_variants_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    tiny_xquad(tmp_path / "xquad-r")
    tiny_msmarco(tmp_path / "msmarco-ko")
    ds = load_dataset("xquad-r:de-en", "test")
    assert ds.name == "xquad-r:de-en" and len(ds.queries) == 3
    with pytest.raises(NotFoundError, match="ar.json"):  # the LAReQA pool is all 11 languages
        load_dataset("xquad-r:lareqa-de", "test")
    assert load_dataset("msmarco-ko:ko-en", "dev").corpus.ids() == ["p1", "p3"]
    with pytest.raises(NotFoundError, match="needs a variant"):
        load_dataset("xquad-r", "test")
    with pytest.raises(NotFoundError, match="no variant 'de'"):
        load_dataset("xquad-r:de", "test")
    with pytest.raises(NotFoundError, match="no split 'test'"):
        load_dataset("msmarco-ko:ko-en", "test")
    with pytest.raises(NotFoundError, match="no variants"):
        load_dataset("noveleval:de-en", "test")
    with pytest.raises(NotFoundError, match="unknown dataset 'nope:de-en'"):
        load_dataset("nope:de-en", "test")
    names = {describe(s)["name"] for s in registry().values()}
    assert any(n.startswith("xquad-r:<") for n in names) and any(n.startswith("msmarco-ko:<") for n in names)


def test_rkd_data_list_shows_the_cross_lingual_entries(tmp_path):
    r = subprocess.run([sys.executable, "-m", "retrieval_kd.cli.main", "data", "list"],
                       capture_output=True, text=True, timeout=120, check=False,
                       env={"PATH": "/usr/bin:/bin", DATA_HOME_ENV: str(tmp_path), "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr  # rich's console may write to either
    assert "xquad-r:<q-p | lareqa-q" in out and "msmarco-ko:<ko-en | en-en" in out


# ----------------------------------------------------------------------------- the real copies


@pytest.fixture(scope="module")
def xquad_root(shared_dataset) -> Path:
    return shared_dataset("xquad-r", "en.json")


@pytest.fixture(scope="module")
def msmarco_root(shared_dataset) -> Path:
    return shared_dataset("msmarco-ko", "msmarco_kor.json")


# candidate sentences per language, from the XQuAD-R README
README_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
                     "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}


@pytest.mark.shared_data
def test_real_xquad_r_every_language_to_english(xquad_root):
    en = load_xquad_r("en", "en", root=xquad_root)
    assert (len(en.corpus), len(en.queries)) == (240, 1190)
    for lang in XQUAD_R_LANGS:
        ds = load_xquad_r(lang, "en", root=xquad_root)
        assert ds.name == f"xquad-r:{lang}-en" and ds.report.ok
        assert ds.queries.ids() == en.queries.ids()  # one id per question across languages
        assert ds.qrels == en.qrels and ds.corpus.fingerprint == en.corpus.fingerprint
        assert all(len(r) == 1 for r in ds.qrels.values())
    de = load_xquad_r("de", "en", root=xquad_root)
    assert de.queries.texts["56beb4343aeaaa14008c925b"].startswith("Wie viele Punkte")
    to_th = load_xquad_r("en", "th", root=xquad_root)
    assert to_th.corpus.ids()[0] == "th_00_00" and to_th.qrels["56beb4343aeaaa14008c925b"] == {"th_00_00": 1}


@pytest.mark.shared_data
def test_real_lareqa_pool(xquad_root):
    ds = load_lareqa("de", root=xquad_root)
    assert len(ds.corpus) == sum(README_CANDIDATES.values()) == 13014
    per_lang: dict[str, int] = {}
    for did in ds.corpus.ids():
        per_lang[did[:2]] = per_lang.get(did[:2], 0) + 1
    assert per_lang == README_CANDIDATES
    assert len(ds.queries) == 1190 and ds.report.ok
    assert all(sorted(d[:2] for d in rel) == sorted(XQUAD_R_LANGS) for rel in ds.qrels.values())
    rel = ds.qrels["56beb4343aeaaa14008c925b"]
    assert "308" in ds.corpus.docs[next(d for d in rel if d.startswith("en_"))].text


@pytest.mark.shared_data
def test_real_msmarco_ko(msmarco_root):
    ko_en = load_msmarco_ko("ko", "en", root=msmarco_root)
    assert (len(ko_en.corpus), len(ko_en.queries), len(ko_en.qrels)) == (6978, 6980, 6980)
    assert ko_en.report.ok
    hangul = re.compile("[\uac00-\ud7a3]")
    assert hangul.search(ko_en.queries.texts["1"]) and not hangul.search(ko_en.corpus.docs["p1"].text)
    ko_ko = load_msmarco_ko("ko", "ko", root=msmarco_root)
    assert ko_ko.corpus.ids() == ko_en.corpus.ids() and ko_ko.qrels == ko_en.qrels
    assert hangul.search(ko_ko.corpus.docs["p1"].text) and "2 Korean" in ko_ko.sources["note"]
    en_en = load_msmarco_ko("en", "en", root=msmarco_root)
    assert en_en.queries.texts["1"].startswith("how many years did william bradford")
    assert load_msmarco_ko("en", "ko", root=msmarco_root).queries.ids() == ko_en.queries.ids()


@pytest.mark.shared_data
def test_real_data_through_the_registry(shared_data, xquad_root, msmarco_root, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, str(shared_data))
    assert len(load_dataset("xquad-r:de-en", "test").corpus) == 240
    assert len(load_dataset("msmarco-ko:ko-en", "dev").queries) == 6980
