"""Training configuration: one pydantic model, read from YAML and/or command-line flags.

Example (``train.yaml``)::

    family: bi-encoder            # bi-encoder | splade | colbert | cross-encoder
    init: minilm-l6               # short name, Hugging Face id or path
    scores: [scores/3f9a0c2d1e7b4a55]
    dataset: scifact
    split: train
    losses: [{name: kl, weight: 1.0}, {name: infonce, weight: 0.5}]   # or "kl+infonce:0.5"
    temperature: 1.0
    kl_passages: 8
    negatives: 7
    rank_window: [3, 50]
    filter_margin: 0.0
    batch_size: 16
    epochs: 1
    lr: 2.0e-5
    output: models/scifact-minilm-kl
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrieval_kd.errors import DataError, RkdError
from retrieval_kd.families import Family, all_families, get

LossName = Literal["margin-mse", "kl", "infonce", "embed"]
LOSSES: tuple[str, ...] = ("margin-mse", "kl", "infonce", "embed")
SCORE_FREE: frozenset[str] = frozenset({"infonce", "embed"})
"""Losses that need no teacher scores (a label-only run may combine them)."""


class LossTerm(BaseModel):
    """One loss of the (weighted) objective."""

    model_config = ConfigDict(extra="forbid")
    name: LossName
    weight: float = Field(1.0, gt=0)


def parse_losses(text: str) -> list[LossTerm]:
    """``"kl"``, ``"kl+infonce"``, ``"kl:1.0+infonce:0.5"`` (``,`` also separates)."""
    terms = []
    for part in text.replace(",", "+").split("+"):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition(":")
        try:
            terms.append(LossTerm(name=name.strip(), weight=float(weight) if weight else 1.0))
        except (ValueError, ValidationError):
            raise RkdError(f"loss '{part}': expected NAME[:WEIGHT] with NAME one of "
                           f"{', '.join(LOSSES)} and a positive weight") from None
    if not terms:
        raise RkdError("no loss given")
    return terms


class TrainConfig(BaseModel):
    """Everything that defines a training run (all of it goes into the output's manifest)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)  # docstrings: --help

    family: Family
    """The student's model family."""
    init: str
    """Initial weights: registered short name, Hugging Face id or local folder."""
    output: Path | None = None
    """The model folder to write (required to train)."""

    # --- data -------------------------------------------------------------------------------
    scores: list[Path] = []
    """Score store folder(s); several stores are joined (they must not score the same pair twice)."""
    dataset: str | None = None
    """Registered name or folder; default: the dataset the (first) store scored."""
    split: str | None = None
    """Default: the split the (first) store scored."""
    teacher: Literal["store", "none"] = "store"
    """``none``: label-only baseline (InfoNCE on qrels, negatives from the candidates' ranks)."""
    candidates: Path | None = None
    """A run (folder or TREC file) for negatives when no store is given (label-only only)."""
    candidates_top_k: int = Field(100, gt=0)
    """Candidates per query read from ``candidates``."""
    query_folds: tuple[int, int] | None = None
    """``[j, k]``: train only on the queries outside fold j of k (fold: ``shard_of(qid, k)``, the
    stable crc32 hash the stores shard by), so fold j's queries can be scored out-of-fold by this
    model (cross-fitting)."""

    translate: list[str] = []
    """Translate-Distill: train on these datasets' queries (registered names or folders, the same
    split) in place of the scored dataset's, joined by query id, each scored query once per
    dataset listed; candidates, teacher scores, qrels and passages stay the scored dataset's
    (e.g. the teacher scored English questions, the student learns them in ten languages)."""

    embed_teacher: dict[str, Any] | None = None
    """A bi-encoder teacher spec (``{kind: bi-encoder, model: minilm-l6, max_length: 128}``) whose
    vectors of every row's texts the ``embed`` loss trains the student's towards
    (:mod:`retrieval_kd.train.embed`); needs the ``embed`` loss, and the ``embed`` loss needs it."""
    embed_on: Literal["rows", "corpus", "queries"] = "rows"
    """What the ``embed`` loss trains on: the training ``rows``' texts, or alone on the ``corpus``
    or the ``queries``.
    ``corpus``: the dataset's corpus documents, one text per row, with the ``embed`` loss alone (no
    query, no label, no candidates): the teacher's view of the unlabelled corpus, e.g. as a first
    stage before label training (``init: student:NAME`` in a pipeline).
    ``queries``: the dataset's queries (under ``translate``, the listed datasets' queries of the
    same ids), each towards the teacher's query vector of the dataset's own query, in the
    teacher's space (no rotation): a query encoder searched against the teacher's document vectors
    (a dense index's ``doc_model``), e.g. a ``static:`` multilingual student of an English
    teacher."""

    # --- examples -----------------------------------------------------------------------------
    losses: list[LossTerm] = [LossTerm(name="kl")]
    """The (weighted) objective: ``margin-mse``, ``kl``, ``infonce``, ``embed``, or a weighted sum
    such as ``kl+infonce:0.5``."""
    temperature: float = Field(1.0, gt=0)
    """KL temperature, applied inside the loss to student and teacher scores."""
    teacher_scale: float = Field(1.0, gt=0)
    """Multiply every teacher score by this in the labels (KL scores, Margin-MSE margins). It puts
    the teacher on the student's scale: e.g. 0.05 with ``temperature: 0.05`` makes a cosine
    student's logits 20 x cosine while the teacher's stay its raw scores. The filter compares raw
    teacher scores."""
    kl_passages: int = Field(8, ge=2)
    """Passages per KL row: the positive plus ``kl_passages - 1`` negatives."""
    negatives: int = Field(7, ge=1)
    """Hard negatives per positive (InfoNCE columns, Margin-MSE rows)."""
    rank_window: tuple[int, int] = (3, 50)
    """Candidate-run ranks (1-based, inclusive) that hard negatives are drawn from."""
    filter_margin: float | None = 0.0
    """Drop a negative whose teacher score is >= positive score - margin; ``null``: no filter."""
    positive_floor: float | None = None
    """Label correction: raise a qrels positive to at least its row's best negative + this.
    In the labels, a qrels positive the teacher scores below its row's best negative +
    ``positive_floor`` is raised to that score (raw teacher units; the negatives keep theirs), so
    the soft labels never rank a judged-irrelevant candidate at or above the judged positive while
    the teacher's order of the negatives stays. ``null``: the teacher's own scores."""
    short_lists: Literal["drop", "repeat"] = "drop"
    """A positive left with too few negatives: ``drop`` skips it, ``repeat`` fills its row.
    With fewer negatives than its row needs (after the window and the filter), ``drop`` skips the
    positive, ``repeat`` fills the row by drawing from its negatives again (seeded, with
    replacement, as Tevatron does), so no query is lost to the filter."""
    positives: Literal["qrels-then-teacher", "qrels", "teacher"] = "qrels-then-teacher"
    """Where the positive comes from: qrels (grade > 0), else the teacher's top-1."""
    max_positives: int = Field(1, ge=1)
    """Qrels positives used per query (one example group per positive)."""

    # --- student ------------------------------------------------------------------------------
    max_length: int = Field(256, gt=0)
    """Passage length (tokens); for the cross-encoder, the pair's length."""
    query_max_length: int | None = Field(None, gt=0)
    """Query length for ColBERT (other families share ``max_length``)."""
    colbert_dim: int = Field(128, gt=0)
    """ColBERT projection size when it is built around a plain transformer."""
    splade_query_weight: float = Field(5e-5, ge=0)
    """FLOPS regulariser weight on queries (SPLADE)."""
    splade_doc_weight: float = Field(3e-5, ge=0)
    """FLOPS regulariser weight on documents (SPLADE)."""
    infonce_scale: float | None = Field(None, gt=0)
    """InfoNCE logit scale (1/temperature); default: the library's per family."""

    # --- optimisation -------------------------------------------------------------------------
    batch_size: int = Field(16, gt=0)
    """Example groups (rows) per optimiser step and process: N processes (torchrun) step on N x this."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training rows (a fraction stops part-way)."""
    max_steps: int = -1
    """> 0 overrides ``epochs``."""
    lr: float = Field(2e-5, gt=0)
    """Peak learning rate (linear decay after the warm-up)."""
    lr_schedule: Literal["linear", "constant"] = "linear"
    """After the warm-up: ``linear`` decay to 0, or ``constant`` (the trainer's
    ``constant_with_warmup``)."""
    warmup: float = Field(0.1, ge=0)
    """Learning-rate warm-up: a fraction of the steps if < 1, else a number of steps."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    seed: int = 42
    """Random seed: the trainer's (new weights, data order) and the negatives' sampling."""
    save_steps: int = Field(500, gt=0)
    """Checkpoint every N optimiser steps (a killed run resumes from the last one)."""
    save_total_limit: int = Field(2, gt=0)
    """Checkpoints kept (the oldest are deleted)."""
    logging_steps: int = Field(10, gt=0)
    """Log the loss every N optimiser steps."""

    @field_validator("losses", mode="before")
    @classmethod
    def _losses_from_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_losses(v)
        if isinstance(v, list):
            return [parse_losses(x)[0] if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        names = [t.name for t in self.losses]
        if len(set(names)) != len(names):
            raise ValueError(f"a loss is listed twice: {names}")
        lo, hi = self.rank_window
        if not 1 <= lo <= hi:
            raise ValueError(f"rank_window {list(self.rank_window)}: need 1 <= low <= high")
        if ("embed" in names) != (self.embed_teacher is not None):
            raise ValueError("the embed loss and embed_teacher go together: give both or neither")
        fam = get(self.family)
        if "embed" in names and fam.token_embed and self.embed_on != "corpus":
            raise ValueError(f"a {fam.name} student's embed loss learns the teacher's token vectors of the "
                             "corpus: embed_on: corpus")
        if "embed" in names and not (fam.embed_once or fam.token_embed):
            own = ", ".join(f.name for f in all_families() if f.embed_once or f.token_embed)
            raise ValueError(f"the embed loss applies to {own} students")
        if self.embed_on in ("corpus", "queries"):
            if names != ["embed"] or self.scores or self.candidates is not None:
                raise ValueError(f"embed_on: {self.embed_on} trains with the embed loss alone, from no "
                                 "scores or candidates")
        elif self.teacher == "none":
            if "infonce" not in names or not set(names) <= SCORE_FREE:
                raise ValueError("teacher: none (label-only) trains with loss infonce "
                                 "(optionally + embed with an embed_teacher)")
            if self.positives == "teacher":
                raise ValueError("teacher: none takes positives from qrels (positives: qrels)")
            if not self.scores and self.candidates is None:
                raise ValueError("label-only training needs negatives: give a score store "
                                 "(its candidate ranks) or a candidates run")
        else:
            if not self.scores:
                raise ValueError("give at least one score store (scores), or teacher: none")
            if self.candidates is not None:
                raise ValueError("candidates is for teacher: none; a store carries its own candidates")
        if self.query_folds is not None:
            j, k = self.query_folds
            if k < 2 or not 0 <= j < k:
                raise ValueError(f"query_folds {list(self.query_folds)}: need [j, k] with k >= 2 and 0 <= j < k")
        if self.translate and (self.query_folds is not None or self.embed_on == "corpus"):
            raise ValueError("translate trains on the scored queries in other languages: not with "
                             "query_folds (a question's languages would fall in different folds) or "
                             "embed_on: corpus (no queries)")
        if len(set(self.translate)) != len(self.translate):
            raise ValueError(f"translate lists a dataset twice: {self.translate}")
        if self.query_max_length is not None and not get(self.family).separate_query_length:
            own = ", ".join(f.name for f in all_families() if f.separate_query_length)
            raise ValueError(f"query_max_length applies to {own} only (others use max_length)")
        return self

    @property
    def label_only(self) -> bool:
        return self.teacher == "none"

    @property
    def loss_names(self) -> list[str]:
        return [t.name for t in self.losses]

    @property
    def score_loss_names(self) -> list[str]:
        """The losses that read the rows' teacher scores or train on them (all but ``embed``)."""
        return [n for n in self.loss_names if n != "embed"]


# YAML keys named as the ``rkd train`` flags, mapped to the config's fields
FLAG_KEYS = {"loss": "losses"}


def _flag_keys(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Accept the flags' names in a YAML config: ``loss``, ``label_only``, ``no_filter``."""
    data = dict(data)
    for flag, field in FLAG_KEYS.items():
        if flag in data:
            if field in data:
                raise RkdError(f"{where}: give '{flag}' or '{field}', not both")
            data[field] = data.pop(flag)
    if data.pop("label_only", False):
        data["teacher"] = "none"
    if data.pop("no_filter", False):
        data["filter_margin"] = None
    return data


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Read a YAML config (optional; keys are TrainConfig fields or the ``rkd train`` flags'
    names) and apply ``overrides`` (``None`` values are ignored). A bad setting is an error
    naming the file and its line."""
    from retrieval_kd.yamlloc import load_yaml

    data: dict[str, Any] = {}
    node = None
    where = "command line"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "config file not found")
        data, node = load_yaml(path)
        data = data or {}
        if not isinstance(data, dict):
            raise DataError(path, "expected a mapping of settings")
        where = str(path)
        data = _flag_keys(data, where)
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    try:
        return TrainConfig(**data)
    except RkdError as e:  # parse_losses: the loss text
        raise DataError(where, str(e), None if "losses" in given else _key_line(node, ("losses",))) from None
    except ValidationError as e:
        errs = e.errors()
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'config'}: "
                             f"{err['msg'].removeprefix('Value error, ')}" for err in errs)
        loc = tuple(errs[0]["loc"]) if errs else ()
        line = None if loc and loc[0] in given else _key_line(node, loc)
        raise DataError(where, problems, line) from None


def _key_line(node: Any, loc: tuple) -> int | None:
    """The line of a config key (or the flag-named key standing for it), if the file has it."""
    from yaml.nodes import MappingNode

    from retrieval_kd.yamlloc import locate

    if not isinstance(node, MappingNode) or not loc:
        return None
    names = {str(loc[0]), *(f for f, field in FLAG_KEYS.items() if field == loc[0])}
    for k, _ in node.value:
        if getattr(k, "value", None) in names:
            return locate(node, [k.value, *loc[1:]])
    return None
