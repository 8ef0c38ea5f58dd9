"""Command-line options derived from a params model (retrieval_kd/cli/options.py), and the
commands built with them: ``rkd train`` from TrainConfig, the encoder (and dense FAISS) options of
``rkd index`` and ``rkd retrieve dense`` from their params."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import typer
from pydantic import ConfigDict, Field
from typer.testing import CliRunner

from retrieval_kd.cli import train_cmd
from retrieval_kd.cli.main import app
from retrieval_kd.cli.options import first_sentence, int_pair, model_options
from retrieval_kd.errors import RkdError
from retrieval_kd.families.lengths import OneName, renamed
from retrieval_kd.train.config import TrainConfig


class Toy(OneName):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    size: int = Field(3, gt=0)
    """How many. Details the help leaves out."""
    kind: Literal["a", "b"] = "a"
    """Which one."""
    paths: list[Path] = []
    on: bool = False
    max_length: int | None = renamed("max_length", "old_length")
    """Tokens."""
    pair: tuple[int, int] = (1, 2)
    """Parsed by the command."""


def toy_app(seen: dict):
    cli = typer.Typer()

    @cli.command()
    @model_options(Toy, skip=("pair",))
    def run(name: Annotated[str, typer.Option("--name", "-n")] = "x", *, given: dict[str, Any]) -> None:
        seen.update(given, name=name)

    return cli


def invoke(cli, *args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_options_come_from_the_fields_and_only_given_ones_are_passed():
    seen: dict = {}
    r = invoke(toy_app(seen), "--size", "5", "--kind", "b", "--paths", "p", "--paths", "q", "--on", "-n", "y")
    assert r.exit_code == 0, r.output
    assert seen == {"size": 5, "kind": "b", "paths": [Path("p"), Path("q")], "on": True, "name": "y"}
    seen.clear()
    assert invoke(toy_app(seen)).exit_code == 0 and seen == {"name": "x"}  # nothing given: model defaults stand


def test_help_shows_docstrings_types_and_defaults_but_not_old_names():
    r = invoke(toy_app({}), "--help")
    out = " ".join(r.output.split())
    assert "How many." in out and "Details the help leaves out" not in out
    assert "a|b" in out and "--no-on" in out and "[default: 3]" in out
    assert "--max-length" in out and "--old-length" not in out and "--pair" not in out


def test_an_old_name_is_read_and_both_names_are_one_error():
    seen: dict = {}
    assert invoke(toy_app(seen), "--old-length", "7").exit_code == 0 and seen["max_length"] == 7
    with pytest.raises(RkdError, match="give --max-length or --old-length \\(its old name\\), not both"):
        invoke(toy_app({}), "--old-length", "7", "--max-length", "8")


def test_a_field_without_an_option_type_must_be_handled():
    with pytest.raises(TypeError, match="Toy.pair"):
        model_options(Toy)(lambda *, given: None)
    with pytest.raises(TypeError, match="no field"):
        model_options(Toy, skip=("nope",))


def test_first_sentence():
    assert first_sentence("Drop ``x``; e.g. 0.5 or more. Then more.") == "Drop x; e.g. 0.5 or more."
    assert first_sentence("``corpus``: one. ``rows``: two.") == "corpus: one."


# -- rkd train -------------------------------------------------------------------------------------
OWN = {"losses", "teacher", "query_folds", "rank_window", "embed_teacher"}
"""TrainConfig fields whose flags the command parses itself."""


def test_train_has_an_option_for_every_config_field():
    assert set(train_cmd.train.derived_fields) | OWN == set(TrainConfig.model_fields)
    assert all(TrainConfig.model_fields[f].description for f in train_cmd.train.derived_fields)
    out = " ".join(invoke(app, "train", "--help").output.split())
    for flag in ("--max-positives", "--candidates-top-k", "--weight-decay", "--label-only", "--no-filter",
                 "--loss", "-l", "--rank-window", "--query-folds", "--embed-teacher", "--restart",
                 "--dump-examples", "--max-length", "--query-max-length", "--save-total-limit"):
        assert flag in out, flag


def test_train_flags_reach_the_config(monkeypatch):
    seen: dict = {}

    def fake_load(path, **overrides):
        seen.update(overrides, path=path)
        raise RkdError("stop")

    monkeypatch.setattr(train_cmd, "load_config", fake_load)
    with pytest.raises(RkdError, match="stop"):
        invoke(app, "train", "-c", "t.yaml", "-f", "bi-encoder", "-m", "m", "--scores", "a", "--scores", "b",
               "--label-only", "--rank-window", "2:9", "--query-folds", "0/4", "--embed-teacher", "t",
               "--lr", "0.1", "--max-positives", "2", "--short-lists", "repeat", "-o", "out")
    assert seen == {"path": Path("t.yaml"), "family": "bi-encoder", "init": "m", "scores": [Path("a"), Path("b")],
                    "losses": "infonce", "teacher": "none", "rank_window": (2, 9), "query_folds": (0, 4),
                    "embed_teacher": {"kind": "bi-encoder", "model": "t"}, "lr": 0.1, "max_positives": 2,
                    "short_lists": "repeat", "output": Path("out")}
    seen.clear()
    with pytest.raises(RkdError, match="stop"):
        invoke(app, "train", "--teacher", "-l", "kl")
    assert seen == {"path": None, "teacher": "store", "losses": "kl", "query_folds": None, "rank_window": None,
                    "embed_teacher": None}


def test_train_bad_values_are_one_line_errors(tmp_path):
    from retrieval_kd.train.config import load_config

    with pytest.raises(RkdError, match="command line: .*max_positives: Input should be greater than or equal to 1"):
        invoke(app, "train", "-f", "bi-encoder", "-m", "m", "--scores", str(tmp_path), "--max-positives", "0")
    with pytest.raises(RkdError, match="short_lists: Input should be 'drop' or 'repeat'"):
        load_config(family="bi-encoder", init="m", scores=["s"], short_lists="sometimes")
    r = CliRunner().invoke(app, ["train", "--kl-passages", "many"])
    assert r.exit_code == 2 and "Invalid value for '--kl-passages'" in r.output


# -- rkd index / rkd retrieve dense ----------------------------------------------------------------
@pytest.mark.parametrize("cmd, new, old", [
    (["index", "dense"], "--max-length", "--max-seq-length"),
    (["index", "splade"], "--max-length", "--max-seq-length"),
    (["index", "colbert", "-m", "x"], "--max-length", "--document-length"),
    (["index", "colbert", "-m", "x"], "--query-max-length", "--query-length"),
    (["retrieve", "dense"], "--max-length", "--max-seq-length"),
])
def test_length_flags_old_names_hidden_and_exclusive(cmd, new, old):
    out = " ".join(invoke(app, *cmd[:2], "--help").output.split())
    assert new in out and old not in out
    with pytest.raises(RkdError, match=f"give {new} or {old} \\(its old name\\), not both"):
        invoke(app, *cmd, "-d", "nope", new, "8", old, "8")


def test_index_dense_options_build_the_params(monkeypatch):
    from retrieval_kd.index import build

    seen: dict = {}

    def fake_build(family, dataset, out, model, **kw):
        seen.update(kw)

    monkeypatch.setattr(build, "build_index", fake_build)
    r = invoke(app, "index", "dense", "-d", "ds", "-o", "o", "--index", "hnsw", "--hnsw-m", "8",
               "--max-seq-length", "128", "--batch-size", "4", "--faiss-device", "cpu", "--backend", "torch")
    assert r.exit_code == 0, r.output
    enc, fp = seen["encoder_params"], seen["faiss_params"]
    assert enc.max_length == 128 and enc.batch_size == 4 and enc.model_dump()["max_seq_length"] == 128
    assert (fp.index, fp.hnsw_m, fp.device, fp.ef_search) == ("hnsw", 8, "cpu", 128)
    r = invoke(app, "index", "splade", "-d", "ds", "-o", "o", "--max-length", "64", "--backend", "torch")
    assert r.exit_code == 0 and seen["encoder_params"].batch_size == 32  # the command's own default
    assert seen["encoder_params"].max_length == 64
    r = invoke(app, "index", "colbert", "-d", "ds", "-m", "m", "-o", "o", "--query-length", "16",
               "--max-length", "64", "--backend", "torch")
    assert r.exit_code == 0 and seen["encoder_params"].model_dump()["query_length"] == 16
    assert seen["encoder_params"].max_length == 64 and seen["faiss_params"].ef_search == 64


def test_index_build_options_reach_build_index(monkeypatch, tmp_path):
    from retrieval_kd.index import build

    seen: dict = {}
    monkeypatch.setattr(build, "build_index", lambda family, dataset, out, model, **kw: seen.update(kw, out=out))
    r = invoke(app, "index", "splade", "-d", "ds", "--chunk-size", "7", "--keep-work", "--work-dir", "w",
               "--embedding-cache", "c", "--backend", "torch")
    assert r.exit_code == 0, r.output
    assert (seen["chunk_size"], seen["keep_work"], seen["keep_embeddings"]) == (7, True, False)
    assert (seen["work_dir"], seen["embedding_cache"], seen["split"]) == (Path("w"), Path("c"), "test")
    assert seen["out"] == Path("indexes/ds-splade-tiny-splade")
    seen.clear()
    r = invoke(app, "index", "colbert", "-d", "ds", "-m", "m", "-o", "o", "--keep-embeddings", "--backend", "torch")
    assert r.exit_code == 0 and seen["keep_embeddings"] and seen["chunk_size"] == 8192
    assert "embedding_cache" not in seen and "--embedding-cache" not in invoke(app, "index", "colbert", "--help").output


def test_int_pair_parses_two_integers_or_says_the_form():
    assert int_pair("3-50", "x", seps=":-") == (3, 50) and int_pair("0/4", "x") == (0, 4)
    assert int_pair(None, "x") is None and int_pair("", "x") is None
    for bad in ("1/2/3", "a/b", "3:4"):
        with pytest.raises(RkdError, match=f"^--w must look like A/B, got '{bad}'$"):
            int_pair(bad, "--w must look like A/B")
