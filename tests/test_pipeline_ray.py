"""A pipeline teacher with ``ray: {address, workers, gpus}`` scores on Ray workers (the code of
``rkd score --ray``): the options are validated like every pipeline key, they stay out of the
stage's key, and the store's rows equal a one-process run's."""

from __future__ import annotations

import pytest

from retrieval_kd.pipeline.load import load_pipeline
from retrieval_kd.pipeline.plan import plan
from retrieval_kd.scores.store import ScoreStore
from tests.test_pipeline import BASE, base_dir, line_of, problems, write  # noqa: F401 - the fixture
from tests.test_score_ray import assert_same_rows, needs_ray

TEACHER = "    teacher: {kind: bm25, k1: 1.5}\n"


def with_ray(options: str) -> str:
    return BASE.replace(TEACHER, TEACHER + f"    ray: {options}\n")


def teacher_stage(path):
    return next(s for s in plan(load_pipeline(path)) if s.id == "teacher:bm25t@test")


@needs_ray  # the file's ray key is checked against an installed Ray
def test_ray_options_stay_out_of_the_stage_key(base_dir):  # noqa: F811
    plain = teacher_stage(write(base_dir, BASE, "plain.yaml"))
    ray = teacher_stage(write(base_dir, with_ray("{address: local, workers: 2, gpus: 0.5}"), "ray.yaml"))
    assert ray.config["ray"] == {"address": "local", "workers": 2, "gpus": 0.5}
    assert "ray" not in plain.config
    assert ray.key == plain.key
    cluster = teacher_stage(write(base_dir, with_ray("{address: 'ray://10.0.0.1:10001'}"), "c.yaml"))
    assert cluster.config["ray"] == {"address": "ray://10.0.0.1:10001", "workers": None, "gpus": 0.0}
    assert cluster.key == plain.key


@pytest.mark.parametrize("options, needle", [
    ("{address: 'my cluster'}", "teachers.bm25t.ray.address"),
    ("{workers: 0}", "teachers.bm25t.ray.workers"),
    ("{gpus: -1}", "teachers.bm25t.ray.gpus"),
    ("{adress: local}", "unknown key 'adress'"),
    ("local", "teachers.bm25t.ray"),
])
def test_bad_ray_options_name_their_line(base_dir, options, needle):  # noqa: F811
    text = with_ray(options)
    found = problems(write(base_dir, text))
    assert any(needle in msg and line == line_of(text, "ray:") for line, msg in found), found


def test_ray_not_installed_is_a_problem_of_the_file(base_dir, monkeypatch):  # noqa: F811
    from retrieval_kd.pipeline.kinds import scores

    monkeypatch.setattr(scores, "_has_ray", lambda: False)
    text = with_ray("{workers: 2}")
    (line, msg), = problems(write(base_dir, text))
    assert line == line_of(text, "ray:") and "retrieval-kd[scale]" in msg


def store_of(root) -> ScoreStore:
    stage, = (root / "stages").glob("teacher-bm25t@test-*")
    store, = (stage / "stores").iterdir()
    return ScoreStore(store)


@needs_ray
@pytest.mark.slow
def test_pipeline_on_ray_gives_the_one_process_rows(base_dir, monkeypatch):  # noqa: F811
    from retrieval_kd.pipeline.runner import run_stages
    from retrieval_kd.scores import ray_scoring

    started = []
    real = ray_scoring.RayTeacher

    class Counted(real):
        def __init__(self, *a, **kw):
            started.append((a[1:], kw))
            super().__init__(*a, **kw)

    monkeypatch.setattr(ray_scoring, "RayTeacher", Counted)
    text = with_ray("{address: local, workers: 2}").replace("top_k: 5", "top_k: 5\n    chunk_size: 10")
    run_stages(load_pipeline(write(base_dir, text, "ray.yaml")), base_dir / "ray", echo=lambda _m: None)
    assert started == [(("local", 2), {"gpus_per_worker": 0.0})]
    run_stages(load_pipeline(write(base_dir, BASE, "plain.yaml")), base_dir / "one", echo=lambda _m: None)
    assert len(started) == 1  # the one-process run did not use Ray
    a, b = store_of(base_dir / "ray"), store_of(base_dir / "one")
    assert a.path.parents[1].name == b.path.parents[1].name  # the same stage key
    assert a.complete and b.complete and a.id == b.id
    assert len(a.parts()) > 1  # several chunks, spread over the workers
    assert_same_rows(a, b)
