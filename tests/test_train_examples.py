"""The example builder (retrieval_kd.train.examples) and the training config, on hand-made rows."""

from __future__ import annotations

import pytest

from retrieval_kd.data.types import Corpus, Dataset, Document, Queries
from retrieval_kd.errors import RkdError
from retrieval_kd.scores.schema import make_table
from retrieval_kd.train.config import TrainConfig, load_config, parse_losses
from retrieval_kd.train.examples import (
    Cand,
    ExampleOptions,
    ExampleStats,
    build_examples,
    build_rows,
    choose_positives,
    groups_from_table,
    hard_negatives,
)

DOCS = {f"d{i}": Document(f"passage {i}") for i in range(10)}


def dataset(qrels=None) -> Dataset:
    return Dataset("hand", "train", Corpus(dict(DOCS)), Queries({"q1": "query one", "q2": "query two"}),
                   qrels if qrels is not None else {"q1": {"d0": 1}})


# q1: d0 is the judged positive (teacher 10); ranks 1..8; d9 judged relevant at grade 2 but scored low.
ROWS = [
    ("q1", "d0", 10.0, 1), ("q1", "d1", 9.8, 2), ("q1", "d2", 9.0, 3), ("q1", "d3", 7.0, 4),
    ("q1", "d4", 5.0, 5), ("q1", "d5", 3.0, 6), ("q1", "d6", 1.0, 7), ("q1", "d7", 0.5, 60),
    ("q2", "d1", 4.0, 1), ("q2", "d2", 3.0, 2), ("q2", "d3", 2.0, 3), ("q2", "d4", 1.0, 4),
    ("q2", "d5", 0.0, 5),
]


def groups(rows=ROWS):
    q, d, s, r = zip(*rows)
    return groups_from_table(make_table(list(q), list(d), list(s), ranks=list(r)))


def opts(**kw) -> ExampleOptions:
    base = {"losses": ("infonce",), "negatives": 3, "rank_window": (2, 50), "filter_margin": 0.5}
    base.update(kw)
    return ExampleOptions(**base)


def test_teacher_filter_drops_negatives_within_margin_of_the_positive():
    g = groups()
    pos = Cand("d0", 10.0, 1)
    stats = ExampleStats()
    kept = hard_negatives(g["q1"], pos, {"d0": 1}, opts(filter_margin=0.5), stats)
    # d1 (9.8 >= 10 - 0.5) is dropped; d2 (9.0) is kept; d7 is outside the window (rank 60)
    assert [c.docid for c in kept] == ["d2", "d3", "d4", "d5", "d6"]
    assert stats.filtered_by_teacher == 1
    kept = hard_negatives(g["q1"], pos, {"d0": 1}, opts(filter_margin=1.5))
    assert [c.docid for c in kept] == ["d3", "d4", "d5", "d6"]  # 9.0 >= 8.5 now dropped too
    kept = hard_negatives(g["q1"], pos, {"d0": 1}, opts(filter_margin=None))
    assert [c.docid for c in kept] == ["d1", "d2", "d3", "d4", "d5", "d6"]
    kept = hard_negatives(g["q1"], pos, {"d0": 1}, opts(filter_margin=-1.0))  # negatives may even beat it
    assert kept[0].docid == "d1"


def test_window_bounds_and_judged_documents_are_never_negatives():
    g = groups()
    pos = Cand("d0", 10.0, 1)
    kept = hard_negatives(g["q1"], pos, {"d0": 1, "d4": 1}, opts(rank_window=(3, 6), filter_margin=None))
    assert [c.docid for c in kept] == ["d2", "d3", "d5"]  # ranks 3..6 inclusive, d4 judged relevant
    forced = [*g["q1"], Cand("d8", 0.0, None)]  # a forced positive has no rank: never a negative
    assert "d8" not in [c.docid for c in hard_negatives(forced, pos, {}, opts(filter_margin=None))]


def test_teacher_scores_ignored_without_a_teacher():
    g = groups_from_table(make_table(["q1"] * 3, ["d0", "d1", "d2"], [10.0, 9.9, 9.8], ranks=[1, 2, 3]),
                          with_scores=False)
    kept = hard_negatives(g["q1"], g["q1"][0], {"d0": 1}, opts(use_teacher=False, rank_window=(1, 3)))
    assert [c.docid for c in kept] == ["d1", "d2"]  # no filter without teacher scores


def test_positives_qrels_first_then_teacher_top1():
    g = groups()
    st = ExampleStats()
    assert [c.docid for c in choose_positives(g["q1"], {"d0": 1}, opts(), st)] == ["d0"]
    assert [c.docid for c in choose_positives(g["q2"], {}, opts(), st)] == ["d1"]  # teacher's top-1
    assert (st.positives_from_qrels, st.positives_from_teacher) == (1, 1)
    assert choose_positives(g["q2"], {}, opts(positives="qrels")) == []
    # a judged positive the teacher never scored cannot anchor teacher rows
    st = ExampleStats()
    assert [c.docid for c in choose_positives(g["q2"], {"d9": 1}, opts(), st)] == ["d1"]
    assert st.unscored_qrels_positives == 1
    # best grade first, then best teacher score; max_positives caps
    two = choose_positives(g["q1"], {"d3": 1, "d2": 2, "d0": 1}, opts(max_positives=2))
    assert [c.docid for c in two] == ["d2", "d0"]


def test_margin_mse_rows_carry_the_teacher_margin():
    cols, st = build_rows(dataset(), groups(), opts(losses=("margin-mse",), negatives=2, seed=1))
    assert list(cols) == ["query", "positive", "negative", "label"]
    assert st.rows == len(cols["query"]) == 4  # q1: 2 negatives; q2 (teacher top-1 d1): 2 negatives
    by_neg = {n: lab for q, n, lab in zip(cols["query"], cols["negative"], cols["label"]) if q == "query one"}
    scores = {f"passage {i}": s for i, s in enumerate([10.0, 9.8, 9.0, 7.0, 5.0, 3.0, 1.0])}
    for neg, lab in by_neg.items():
        assert lab == pytest.approx(10.0 - scores[neg])
        assert neg != "passage 1"  # filtered


def test_kl_rows_hold_n_passages_and_their_scores():
    data, st = build_examples(dataset(), groups(), opts(losses=("kl",), kl_passages=4, filter_margin=None))
    assert data.column_names == ["query", "passage_1", "passage_2", "passage_3", "passage_4", "label"]
    row = data[0]
    assert row["passage_1"] == "passage 0"
    score = {f"passage {i}": s for i, s in enumerate([10.0, 9.8, 9.0, 7.0, 5.0, 3.0, 1.0])}
    assert row["label"] == [score[row[f"passage_{i}"]] for i in range(1, 5)]
    assert st.layout == "kl" and st.rows == 2


def test_teacher_scale_multiplies_labels_but_not_the_filter():
    base, _ = build_rows(dataset(), groups(), opts(losses=("kl",), kl_passages=4))
    scaled, st = build_rows(dataset(), groups(), opts(losses=("kl",), kl_passages=4, teacher_scale=0.05))
    # same rows (the filter at margin 0.5 still sees raw scores: d1 at 9.8 stays dropped) ...
    assert scaled["passage_2"] == base["passage_2"] and "passage 1" not in scaled["passage_2"]
    # ... and every label scaled
    for a, b in zip(base["label"], scaled["label"]):
        assert b == pytest.approx([0.05 * x for x in a])
    mm, _ = build_rows(dataset(), groups(), opts(losses=("margin-mse",), negatives=2, seed=1, teacher_scale=2.0))
    raw, _ = build_rows(dataset(), groups(), opts(losses=("margin-mse",), negatives=2, seed=1))
    assert mm["label"] == pytest.approx([2.0 * x for x in raw["label"]])


def test_infonce_and_listwise_layouts():
    data, _ = build_examples(dataset(), groups(), opts(losses=("infonce",)))
    assert data.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3"]
    data, st = build_examples(dataset(), groups(), opts(losses=("kl", "infonce"), kl_passages=3))
    assert data.column_names == ["query", "positive", "negative_1", "negative_2", "label"]
    assert st.layout == "listwise" and len(data[0]["label"]) == 3


def test_too_few_negatives_skips_and_counts():
    _, st = build_rows(dataset(), groups(), opts(losses=("infonce",), negatives=5))
    # q2 has 4 candidates in ranks 2..50 besides its positive d1 -> skipped; q1 has 5 after the filter
    assert st.too_few_negatives == 1 and st.rows == 1


def test_short_lists_repeat_fills_rows_from_their_own_negatives():
    o = opts(losses=("kl", "infonce"), kl_passages=7, short_lists="repeat")  # 6 negatives needed
    data, st = build_rows(dataset(), groups(), o)
    # q1 keeps d2..d6 (5) after the filter, q2 has d2..d5 (4): both filled instead of skipped
    assert st.too_few_negatives == 0 and st.rows == 2 and st.repeated_negatives == (6 - 5) + (6 - 4)
    negs = [[data[f"negative_{i}"][r] for i in range(1, 7)] for r in range(2)]
    assert set(negs[0]) == {f"passage {i}" for i in range(2, 7)}  # every kept one, plus a repeat
    assert set(negs[1]) == {f"passage {i}" for i in range(2, 6)}
    assert "passage 1" not in negs[0]  # the filter still holds
    score = {f"passage {i}": v for i, v in enumerate([10.0, 9.8, 9.0, 7.0, 5.0, 3.0, 1.0])}
    assert data["label"][0] == [10.0, *[score[n] for n in negs[0]]]  # a repeat carries its score
    assert build_rows(dataset(), groups(), o)[1].fingerprint == st.fingerprint  # seeded
    dropped = build_rows(dataset(), groups(), opts(losses=("kl", "infonce"), kl_passages=7))[1]
    assert dropped.too_few_negatives == 2 and dropped.rows == 0 and dropped.repeated_negatives == 0
    cfg = TrainConfig(family="bi-encoder", init="x", scores=["s"], output="o", short_lists="repeat")
    assert ExampleOptions.from_config(cfg).short_lists == "repeat"


def test_sampling_is_seeded_and_stable():
    o = opts(losses=("infonce",), negatives=2, filter_margin=None)
    a = build_rows(dataset(), groups(), o)[1].fingerprint
    assert a == build_rows(dataset(), groups(), o)[1].fingerprint
    seeds = {build_rows(dataset(), groups(), opts(losses=("infonce",), negatives=2, filter_margin=None,
                                                  seed=s))[1].fingerprint for s in range(6)}
    assert len(seeds) > 1


def test_label_only_refuses_teacher_losses_and_duplicate_pairs_are_errors():
    with pytest.raises(RkdError, match="teacher scores"):
        build_rows(dataset(), groups(), opts(losses=("kl",), use_teacher=False))
    with pytest.raises(RkdError, match="scored twice"):
        groups([*ROWS, ("q1", "d0", 1.0, 1)])


def test_parse_losses_and_config_validation(tmp_path):
    assert [(t.name, t.weight) for t in parse_losses("kl+infonce:0.5")] == [("kl", 1.0), ("infonce", 0.5)]
    with pytest.raises(RkdError, match="NAME"):
        parse_losses("mse")
    cfg = TrainConfig(family="colbert", init="x", scores=[tmp_path], losses="kl:2,margin-mse")
    assert cfg.loss_names == ["kl", "margin-mse"] and cfg.losses[0].weight == 2.0
    (tmp_path / "c.yaml").write_text("family: splade\ninit: x\nscores: [s]\nlosses: [infonce]\nbogus: 1\n")
    with pytest.raises(RkdError, match="bogus"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(RkdError, match="label-only|infonce only"):
        load_config(family="splade", init="x", scores=["s"], teacher="none", losses="kl")
    cfg = load_config(family="splade", init="x", scores=["s"], teacher="none", losses="infonce", lr=None)
    assert cfg.label_only and cfg.lr == 2e-5
    with pytest.raises(RkdError, match="query_max_length"):
        load_config(family="bi-encoder", init="x", scores=["s"], query_max_length=16)


def test_positive_floor_raises_a_qrels_positive_the_teacher_ranks_below_a_negative():
    # q1's judged positive d0 scores 10.0; with d1 (9.8) and d2 (9.0) kept (no filter) the row's best
    # negative may beat it once the positive scores low: make it 8.0.
    low = [(q, d, 8.0 if (q, d) == ("q1", "d0") else s, r) for q, d, s, r in ROWS]
    o = dict(losses=("kl", "infonce"), kl_passages=4, filter_margin=None, rank_window=(2, 4))
    plain, st0 = build_rows(dataset(), groups(low), opts(**o))
    fixed, st = build_rows(dataset(), groups(low), opts(**o, positive_floor=1.0, teacher_scale=0.5))
    i = plain["query"].index("query one")
    assert plain["label"][i][0] == 8.0 and max(plain["label"][i][1:]) == 9.8  # the teacher's own order
    # corrected: positive = best negative + floor (raw units, then scaled); negatives untouched
    assert fixed["label"][i] == pytest.approx([0.5 * 10.8, *(0.5 * x for x in plain["label"][i][1:])])
    assert st.corrected_positives == 1 and st0.corrected_positives == 0
    # a positive already above best negative + floor, and a teacher-picked positive (q2), keep theirs
    j = plain["query"].index("query two")
    assert fixed["label"][j] == pytest.approx([0.5 * x for x in plain["label"][j]])
    ok, st2 = build_rows(dataset(), groups(), opts(**o, positive_floor=0.1))
    assert ok["label"] == build_rows(dataset(), groups(), opts(**o))[0]["label"] and st2.corrected_positives == 0
    mm, _ = build_rows(dataset(), groups(low), opts(losses=("margin-mse",), negatives=2, filter_margin=None,
                                                    rank_window=(2, 3), positive_floor=1.0))
    assert mm["label"] == pytest.approx([10.8 - 9.8, 10.8 - 9.0, 1.0, 2.0])  # q2 (teacher-picked) unchanged


def test_positive_floor_config_and_run_key_default():
    from retrieval_kd.train.stage import LATER_FIELDS

    cfg = TrainConfig(family="bi-encoder", init="x", scores=["s"], output="o", positive_floor=0.5)
    assert ExampleOptions.from_config(cfg).positive_floor == 0.5
    assert LATER_FIELDS["positive_floor"] is None  # runs recorded before the field keep their keys
