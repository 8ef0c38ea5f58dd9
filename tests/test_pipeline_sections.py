"""A pipeline section is one object: a toy ``echos`` section, defined and registered here, runs
through the real loader, planner and runner like a built-in one (retrieval_kd/pipeline/sections.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retrieval_kd.pipeline.load import Checks, LoadedPipeline, PipelineError, Problem, load_pipeline
from retrieval_kd.pipeline.plan import Stage, plan, sid
from retrieval_kd.pipeline.registry import STAGES, register, unregister
from retrieval_kd.pipeline.runner import run_stages
from retrieval_kd.pipeline.schema import Name, _Strict, pipeline_model
from retrieval_kd.pipeline.sections import Section, register_section, sections, unregister_section
from tests.test_pipeline import write_corpus

# ---------------------------------------------------------------- the toy section: one module's worth


class EchoEntry(_Strict):
    dataset: str
    text: str
    after: Name | None = None
    """Another echos entry, written first (its stage is an input)."""


class Echos(Section):
    name, entry, stage = "echos", EchoEntry, "echo"

    def check(self, c: Checks) -> list[Problem]:
        for name, e in c.p.echos.items():
            c.dataset(("echos", name), e.dataset, [])
            if e.after is not None and e.after not in c.p.echos:
                c.bad(("echos", name, "after"), f"no echo entry '{e.after}' (echos: {', '.join(c.p.echos)})")
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        return [Stage(sid("echo", name), "echo", {"name": name, "text": e.text},
                      {"after": sid("echo", e.after)} if e.after else {}, lp.datasets[e.dataset], ("echos", name))
                for name, e in lp.pipeline.echos.items()]


def echo(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    before = (inputs["after"] / "echo.txt").read_text() if "after" in inputs else ""
    out.mkdir(parents=True)
    (out / "echo.txt").write_text(before + config["text"] + "\n")
    return {"echo": "echo.txt"}


@pytest.fixture
def echos():
    """The toy section and its stage kind, registered for one test and removed after it."""
    register_section(Echos())
    register("echo")(echo)
    yield
    unregister_section("echos")
    unregister("echo")


# ---------------------------------------------------------------- tests

PIPE = """\
name: toy
datasets:
  tiny: {source: tiny}
echos:
  hello: {dataset: tiny, text: hello}
  world: {dataset: tiny, text: world, after: hello}
"""


def pipeline_file(tmp_path: Path, text: str = PIPE) -> Path:
    if not (tmp_path / "tiny").exists():
        write_corpus(tmp_path / "tiny", n_docs=5, n_queries=4)
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def line_of(p: Path, text: str) -> int:
    return next(i for i, t in enumerate(p.read_text().splitlines(), 1) if text in t)


def test_a_toy_section_runs_and_is_cached(tmp_path, echos):
    p, root = pipeline_file(tmp_path), tmp_path / "runs"
    assert [s.id for s in plan(load_pipeline(p))] == ["echo:hello", "echo:world"]
    rec = run_stages(load_pipeline(p), root, echo=lambda _m: None)
    assert {s["id"]: s["status"] for s in rec["stages"]} == {"echo:hello": "ran", "echo:world": "ran"}
    world = next(s for s in rec["stages"] if s["id"] == "echo:world")
    assert (root / world["dir"] / "echo.txt").read_text() == "hello\nworld\n"
    assert world["result"] == {"echo": "echo.txt"}
    again = run_stages(load_pipeline(p), root, echo=lambda _m: None)
    assert {s["id"]: s["status"] for s in again["stages"]} == {"echo:hello": "cached", "echo:world": "cached"}
    # a changed entry reruns it and what depends on it, and only that
    changed = run_stages(load_pipeline(pipeline_file(tmp_path, PIPE.replace("text: world", "text: all"))),
                         root, echo=lambda _m: None)
    assert {s["id"]: s["status"] for s in changed["stages"]} == {"echo:hello": "cached", "echo:world": "ran"}


@pytest.mark.parametrize(("bad", "where", "message"), [
    ("after: hello", "after: nope", "echos.world.after: no echo entry 'nope' (echos: hello, world)"),
    ("after: hello", "colour: red", "echos.world.colour: unknown key 'colour' (allowed: dataset, text, after)"),
    ("dataset: tiny, text: world", "dataset: nowhere, text: world",
     "echos.world.dataset: no dataset 'nowhere' (datasets: tiny)"),
])
def test_a_bad_toy_entry_names_its_file_and_line(tmp_path, echos, bad, where, message):
    p = pipeline_file(tmp_path, PIPE.replace(bad, where))
    with pytest.raises(PipelineError) as e:
        load_pipeline(p)
    assert str(e.value) == f"{p}:{line_of(p, where)}: {message}"


def test_the_toy_section_leaves_no_trace(tmp_path, echos):
    assert [s.name for s in sections()][-1] == "echos" and "echos" in pipeline_model().model_fields
    unregister_section("echos")
    unregister("echo")
    assert "echos" not in [s.name for s in sections()] and "echo" not in STAGES
    assert "echos" not in pipeline_model().model_fields
    p = pipeline_file(tmp_path)
    with pytest.raises(PipelineError, match=rf"{p}:4: echos: unknown key 'echos' \(allowed: name, description"):
        load_pipeline(p)
