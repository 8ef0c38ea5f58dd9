"""The training stage: examples from score stores, a student, Sentence Transformers' trainer.

``train_stage(cfg)`` writes ``cfg.output``: a plain Sentence Transformers model folder (it loads
with ``SentenceTransformer`` / ``SparseEncoder`` / ``MultiVectorEncoder`` / ``CrossEncoder``)
plus ``manifest.json`` (score store ids, data fingerprints, parameters, init weights' sha256,
library versions, timings, examples/s, the loss log, and every saved file's size and sha256,
checked whenever the model is loaded).

While training, checkpoints go to ``.<output name>.work/checkpoints/checkpoint-<step>`` beside
the output, every ``save_steps`` steps (the trainer's own checkpointing). A killed run started
again with the same configuration resumes from the last complete checkpoint; a different
configuration is refused until that work folder is removed (``restart=True``). The finished
model is written to a temporary folder and renamed to ``cfg.output``; the work folder is then
removed.

Under ``torchrun`` / ``accelerate launch`` the processes train together (DDP,
:mod:`retrieval_kd.train.distributed`) and rank 0 alone writes all of the above
(:func:`_train_ranks`); ``batch_size`` is per process, and the manifest's ``distributed`` record
gives the world size and the global batch.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval_kd.artifacts import (
    MANIFEST,
    atomic_dir,
    manifest,
    read_json,
    read_manifest,
    sha256_file,
    sha256_json,
    write_json,
)
from retrieval_kd.data.types import Dataset
from retrieval_kd.digests import check_files, file_digests, recorded_files
from retrieval_kd.errors import IntegrityError, NotFoundError, RkdError
from retrieval_kd.families import get as get_family
from retrieval_kd.train.config import TrainConfig
from retrieval_kd.train.distributed import TRAIN_TIMEOUT, World
from retrieval_kd.train.examples import ExampleOptions, ExampleStats, Groups, build_rows, outside_fold
from retrieval_kd.workdirs import claim, clean_stale_temps, clear, only_names, release, require_replaceable

RUN_STATE = "run.json"
CHECKPOINTS = "checkpoints"

# Settings that do not change the trained weights: a resumed run may change them.
RUNTIME_KEYS = frozenset({"output", "save_total_limit", "logging_steps"})


@dataclass
class TrainInputs:
    """What a run trains on: the dataset split, the candidate groups and their provenance."""

    ds: Dataset
    groups: Groups
    stores: list[dict[str, Any]] = field(default_factory=list)
    candidates: dict[str, Any] | None = None
    translated: list[dict[str, Any]] = field(default_factory=list)
    """The protocols of the datasets whose queries replaced the scored ones (``translate``)."""


def work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.work"


# ---------------------------------------------------------------------------------------------
# Inputs


def load_inputs(cfg: TrainConfig) -> TrainInputs:
    """Load the split and the candidates (score stores, or a run for the label-only baseline).

    Every store must be complete and must match the split's current texts (``verify_store``).
    """
    import pyarrow as pa

    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.scores.store import ScoreStore
    from retrieval_kd.scores.verify import verify_store
    from retrieval_kd.train.examples import groups_from_run, groups_from_table

    stores = [ScoreStore(Path(p)) for p in cfg.scores]
    manifests = [s.manifest for s in stores]  # raises NotFoundError for a folder that is no store
    for s in stores:
        s.require_complete("training from it")
        s.check_files()  # a damaged part is named before its rows are read
    first = manifests[0]["inputs"] if manifests else {}
    name = cfg.dataset or first.get("dataset")
    split = cfg.split or first.get("split")
    if not name or not split:
        raise RkdError("give dataset and split (no score store to take them from)")
    ds = load_dataset(name, split)
    records = []
    for s, m in zip(stores, manifests):
        rep = verify_store(s, ds)
        if not rep.ok:
            raise IntegrityError(f"{s.path} does not match {ds.name}/{ds.split}: " + "; ".join(rep.lines(3)))
        records.append({"id": m["store_id"], "path": str(s.path.resolve()), "teacher": m.get("teacher"),
                        "inputs": {k: v for k, v in m["inputs"].items() if k != "dataset_protocol"},
                        "n_rows": m.get("n_rows")})
    if cfg.embed_on == "corpus":  # its rows are the corpus documents (make_examples)
        return TrainInputs(ds, {})
    if cfg.embed_on == "queries":  # its rows are the queries, each group the text of its target
        if not cfg.translate:
            return TrainInputs(ds, dict(ds.queries.texts))
        from retrieval_kd.xling.translate import translate_queries

        targets = [load_dataset(name, ds.split) for name in cfg.translate]
        joined, sources = translate_queries(ds, targets)
        return TrainInputs(joined, sources, [], None, [t.protocol() for t in targets])
    if stores:
        table = pa.concat_tables([s.table() for s in stores])
        return _translated(cfg, TrainInputs(ds, groups_from_table(table, with_scores=not cfg.label_only), records))
    from retrieval_kd.data.runfiles import locate_run
    from retrieval_kd.data.trec import load_trec_run

    run_file, run_manifest = locate_run(cfg.candidates)
    if not run_file.is_file():
        raise NotFoundError(f"{cfg.candidates}: no run file")
    cand = {"run_file": str(run_file.resolve()), "run_sha256": sha256_file(run_file),
            "top_k": cfg.candidates_top_k, "run_stage": (run_manifest or {}).get("params")}
    groups = groups_from_run(ds, load_trec_run(run_file), cfg.candidates_top_k)
    return _translated(cfg, TrainInputs(ds, groups, [], cand))


def _translated(cfg: TrainConfig, inputs: TrainInputs) -> TrainInputs:
    """With ``translate``: the scored queries in the listed datasets' languages (Translate-Distill)."""
    if not cfg.translate:
        return inputs
    from retrieval_kd.data.registry import load_dataset
    from retrieval_kd.xling.translate import translate_groups

    targets = [load_dataset(name, inputs.ds.split) for name in cfg.translate]
    ds, groups = translate_groups(inputs.ds, inputs.groups, targets)
    return TrainInputs(ds, groups, inputs.stores, inputs.candidates, [t.protocol() for t in targets])


def make_examples(cfg: TrainConfig, inputs: TrainInputs, width: int | None = None):
    """The training rows (a ``datasets.Dataset``) and the builder's stats. With ``query_folds``
    only the queries outside that fold. With ``embed_teacher`` the rows' labels end in their
    ``embed`` targets, ``width`` (the student's vector size) per text."""
    from datasets import Dataset as HFDataset

    groups = inputs.groups if cfg.query_folds is None else outside_fold(inputs.groups, cfg.query_folds)
    sources, token_rows = None, False
    if cfg.embed_on == "corpus":
        from retrieval_kd.train.embed import corpus_rows

        cols, stats = corpus_rows(inputs.ds)
    elif cfg.embed_on == "queries":
        from retrieval_kd.train.embed import query_rows

        cols, sources, stats = query_rows(inputs.ds, groups)
    else:
        cols, stats = build_rows(inputs.ds, groups, ExampleOptions.from_config(cfg))
    if cfg.query_folds is not None:
        j, k = cfg.query_folds
        stats.notes.append(f"query_folds [{j}, {k}]: {len(inputs.groups) - len(groups)} of "
                           f"{len(inputs.groups)} queries (fold {j}) left out")
    if not stats.rows:
        raise RkdError(f"no training examples from {inputs.ds.name}/{inputs.ds.split}: "
                       f"{stats.no_positive} queries without a positive, {stats.too_few_negatives} "
                       f"positives with too few negatives in ranks {list(cfg.rank_window)} "
                       f"({stats.filtered_by_teacher} dropped by the teacher filter)")
    if cfg.embed_teacher is not None:
        from retrieval_kd.train.embed import add_targets

        if width is None:
            raise RkdError("embed targets need the student's vector size")
        if sources is not None:
            from retrieval_kd.train.embed import add_query_targets

            stats.embed = add_query_targets(cols, sources, cfg.embed_teacher, width)
        elif get_family(cfg.family).token_embed:
            from retrieval_kd.train.token_embed import add_token_targets

            stats.embed = add_token_targets(cols, cfg.embed_teacher, width, cfg.max_length)
            token_rows = True
        else:
            stats.embed = add_targets(cols, cfg.embed_teacher, width, queries_first=cfg.embed_on == "rows")
        stats.fingerprint = sha256_json({"rows": stats.fingerprint, "embed": stats.embed})
    data = HFDataset.from_dict(cols)
    if token_rows:  # rows of ~16k targets each: read as tensors and stacked, not as Python lists
        data = data.with_format("torch", columns=["label"], output_all_columns=True)
    return data, stats


# ---------------------------------------------------------------------------------------------
# Trainer


def training_args(cfg: TrainConfig, out_dir: Path, world: World | None = None):
    """The family's ``*TrainingArguments``: checkpoints every ``save_steps``, no external reporting.

    Under a launcher (``world``): DistributedDataParallel on the world's backend (gloo on CPU),
    ``batch_size`` per process, and the last incomplete global batch of an epoch dropped (as
    Sentence Transformers does under DDP, so every process takes the same number of steps)."""
    import sentence_transformers as st
    import torch
    from sentence_transformers.base.sampler import BatchSamplers

    family = get_family(cfg.family)
    cls = getattr(st, family.training_args_class)
    ddp: dict[str, Any] = {}
    if world is not None and world.active:
        ddp = {"ddp_backend": world.backend, "use_cpu": world.backend == "gloo", "dataloader_drop_last": True,
               "ddp_timeout": int(TRAIN_TIMEOUT.total_seconds())}
        if family.every_parameter_used:
            ddp["ddp_find_unused_parameters"] = False
    return cls(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type="linear" if cfg.lr_schedule == "linear" else "constant_with_warmup",
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        batch_sampler=(BatchSamplers.NO_DUPLICATES if "infonce" in cfg.loss_names
                       else BatchSamplers.BATCH_SAMPLER),
        **family.training_kwargs(cfg),
        **ddp,
    )


def gather_in_batch(loss) -> list[str]:
    """Make the in-batch InfoNCE losses inside ``loss`` compare each query with the candidates of
    every process's rows (``gather_across_devices``), as one process with the global batch does;
    returns the classes changed. The cross-encoder's InfoNCE has no such option: its in-batch
    negatives stay the process's own rows."""
    changed = []
    for m in loss.modules():
        if getattr(m, "gather_across_devices", None) is False:
            m.gather_across_devices = True
            changed.append(type(m).__name__)
    return changed


def make_trainer(cfg: TrainConfig, model, train_dataset, out_dir: Path, callbacks: Sequence = (),
                 world: World | None = None):
    """The family's Sentence Transformers trainer with the configured loss (no custom loop)."""
    import sentence_transformers as st
    from transformers.trainer_callback import PrinterCallback

    from retrieval_kd.train.losses import build_loss

    cls = getattr(st, get_family(cfg.family).trainer_class)
    loss = build_loss(cfg.family, model, cfg)
    if world is not None and world.active:
        gather_in_batch(loss)
    args = training_args(cfg, out_dir, world)
    sparse = sparse_optimizer(model, cfg, world)
    if sparse is not None:
        args.max_grad_norm = 0.0  # no clipping: the norm of sparse gradients is not taken
    trainer = cls(model=model, args=args, train_dataset=train_dataset, loss=loss, callbacks=list(callbacks),
                  **({"optimizers": (sparse, None)} if sparse is not None else {}))
    trainer.remove_callback(PrinterCallback)  # logs go to the manifest and the progress bar
    if sparse is not None:  # transformers 5 logs the gradient norm through clip_grad_norm_, dense only
        trainer._get_grad_norm = lambda model, grad_norm=None: sparse_grad_norm(model)
    if world is not None and world.active:
        _writer_saves_model(trainer)
    return trainer


def sparse_optimizer(model, cfg: TrainConfig, world: World | None = None):
    """For a student made of ``StaticEmbedding`` tables alone (a ``static:`` init): sparse
    gradients and ``torch.optim.SparseAdam``, so a step moves only the rows of the batch's tokens
    instead of every row of a 262k-token table (Adam's dense update of EmbeddingGemma's table takes
    ~3 s a step on 2 cores). None for any other student (the trainer's own AdamW)."""
    import torch
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    tables = [m for m in model.modules() if isinstance(m, StaticEmbedding)]
    if not tables:
        return None
    trainable = [p for p in model.parameters() if p.requires_grad]
    if sum(p.numel() for m in tables for p in m.parameters()) != sum(p.numel() for p in trainable):
        raise RkdError("a student with a StaticEmbedding trains it alone (sparse gradients): "
                       "its other modules must have no trainable parameters")
    if world is not None and world.active:
        raise RkdError("a StaticEmbedding student trains in one process (sparse gradients are not all-reduced)")
    for m in tables:
        m.embedding.sparse = True
    return torch.optim.SparseAdam(trainable, lr=cfg.lr)


def sparse_grad_norm(model) -> float:
    """The L2 norm of every gradient, sparse ones included (what the trainer logs)."""
    total = 0.0
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
            total += float(g.float().pow(2).sum())
    return total ** 0.5


def _writer_saves_model(trainer) -> None:
    """Only the writing rank saves a checkpoint's model. transformers 5 calls ``_save`` on every
    rank (it checks ``should_save`` inside), but Sentence Transformers' override still assumes only
    rank 0 gets there, so every rank would write the same model files into the checkpoint, and a
    rank killed part-way could leave a torn model in a checkpoint rank 0 has completed."""
    save = trainer._save

    def _save(output_dir=None, state_dict=None):
        if trainer.args.should_save:
            save(output_dir, state_dict=state_dict)

    trainer._save = _save


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint whose ``trainer_state.json`` (written last) is complete.

    Newer, incomplete ones (a kill during a save) are removed.
    """
    if not ckpt_dir.is_dir():
        return None
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for p in found:
        try:
            state = read_json(p / "trainer_state.json")
            if isinstance(state, dict) and "global_step" in state:
                _drop_torn_rng(p)
                return p
        except (OSError, ValueError):
            pass
        shutil.rmtree(p, ignore_errors=True)
    return None


def _drop_torn_rng(ckpt: Path) -> None:
    """Remove a random-state file a killed process left half written. Under DDP each rank saves its
    own ``rng_state_<rank>.pth``, the others after rank 0's ``trainer_state.json`` possibly; the
    trainer resumes without a missing one (that rank's random state starts afresh) but fails on a
    torn one."""
    import zipfile

    for f in ckpt.glob("rng_state*.pth"):
        try:
            with zipfile.ZipFile(f) as z:
                bad = z.testzip() is not None
        except (OSError, zipfile.BadZipFile, EOFError):
            bad = True
        if bad:
            f.unlink(missing_ok=True)


def _progress_callback(prog, task_id):
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """Steps on a rich progress bar, the last logged loss in its description."""

        def on_train_begin(self, args, state, control, **kw):
            prog.update(task_id, total=state.max_steps)
            prog.reset(task_id, total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kw):
            prog.update(task_id, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                prog.update(task_id, description=f"training (loss {logs['loss']:.4f})")

    return RichProgress()


# ---------------------------------------------------------------------------------------------
# Stage


LATER_FIELDS = {"teacher_scale": 1.0, "short_lists": "drop", "positive_floor": None, "query_folds": None,
                "embed_teacher": None, "embed_on": "rows", "lr_schedule": "linear"}
"""Config fields added after runs were first recorded: left out of the key while at this
default, so a run made before the field existed keeps its key (and is not retrained)."""


def run_key(cfg: TrainConfig, stats: ExampleStats, init_sha: str | None, world_size: int = 1) -> str:
    """Identity of a run's trained weights: everything but runtime settings. The number of
    processes is part of it when over one (N processes step on N x ``batch_size`` rows), so a run
    resumes only with the world size it was started with; one process keeps the key it always had."""
    params = {k: v for k, v in cfg.model_dump(mode="json").items()
              if k not in RUNTIME_KEYS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    if world_size != 1:
        params["world_size"] = world_size
    return sha256_json({"params": params, "examples": stats.fingerprint, "init": init_sha})[:16]


def _loss_log(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trainer's logged training losses (with per-loss components, lr, step)."""
    keep = []
    for e in history:
        if "loss" in e and "train_runtime" not in e:
            keep.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items()})
    return keep


def train_stage(cfg: TrainConfig, *, progress: bool = True, restart: bool = False,
                callbacks: Sequence = ()) -> Path:
    """Train the student ``cfg`` describes and return its output folder (see the module doc).

    ``restart``: discard the checkpoints of an earlier, different or unwanted run.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (tests, monitoring).

    One process trains into an output at a time (:mod:`retrieval_kd.locks`); the work folder
    is used only if rkd made it, an existing output replaced (``restart``) only if it is a
    trained model. A full disk is one error line; the checkpoints stay for the rerun.

    Under ``torchrun`` / ``accelerate launch`` (:mod:`retrieval_kd.train.distributed`) every
    process trains its share of each global batch and rank 0 alone writes: see :func:`_train_ranks`.
    """
    from retrieval_kd.locks import output_lock
    from retrieval_kd.train.distributed import world as this_world

    if cfg.output is None:
        raise RkdError("no output folder given")
    output = Path(cfg.output)
    world = this_world()
    if world.active:
        return _train_ranks(cfg, output, world, progress=progress, restart=restart, callbacks=callbacks)
    with output_lock(output, f"{output}: another process is training into this output"):
        require_replaceable(output, "training", ("train",), option="--output")  # never a user's folder
        clean_stale_temps(output)  # a killed save's half-written model; nobody else owns it
        run = _prepare(cfg, output, world)
        if _open(run, restart):
            return output
        trainer, result, train_s = _fit(run, progress, callbacks)
        return _finish(run, trainer, result, train_s)


def _legacy_work(path: Path) -> bool:
    """A checkpoint folder written before work folders were marked: run.json and checkpoints only."""
    return (path / RUN_STATE).is_file() and only_names(
        path, lambda n: n in (RUN_STATE, CHECKPOINTS) or n.startswith(f".{RUN_STATE}.tmp-"))


def _checkpoint_bytes(work: Path, model_only: bool = False) -> int | None:
    """Size of the newest complete checkpoint (``model_only``: without the optimizer's state)."""
    from retrieval_kd.storage import dir_bytes

    ckpt = last_checkpoint(work / CHECKPOINTS) if work.is_dir() else None
    if ckpt is None:
        return None
    skip = sum(p.stat().st_size for p in ckpt.glob("*.pt") if model_only)
    return dir_bytes(ckpt) - skip


@dataclass
class _Run:
    """One training run as the stage goes: its inputs, rows and key, then its checkpoint state."""

    cfg: TrainConfig
    output: Path
    world: World
    inputs: TrainInputs
    init_ref: Any
    model: Any
    train_data: Any
    stats: ExampleStats
    key: str
    timer: Any
    state: dict[str, Any] = field(default_factory=dict)
    ckpt: Path | None = None

    @property
    def work(self) -> Path:
        return work_dir(self.output)

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.state.setdefault("sessions", [])


def _prepare(cfg: TrainConfig, output: Path, world: World) -> _Run:
    """Read the inputs and build the rows (and the student when the rows need its width)."""
    from retrieval_kd.models.resolve import resolve_model
    from retrieval_kd.progress import Timer

    timer = Timer()
    with timer("load_inputs"):
        inputs = load_inputs(cfg)
    init_ref = resolve_model(cfg.init)
    model, width = None, None
    if cfg.embed_teacher is not None:  # the targets are cut to the student's vector size
        from retrieval_kd.train.embed import student_width

        with timer("build_model"):
            model = _build(cfg, init_ref)
        width = student_width(model)
    with timer("examples"):
        train_data, stats = make_examples(cfg, inputs, width)
    return _Run(cfg, output, world, inputs, init_ref, model, train_data, stats,
                run_key(cfg, stats, init_ref.sha256, world.size), timer)


def _open(run: _Run, restart: bool) -> bool:
    """Writer only: True when the output already holds this exact run (nothing to train); else
    claim the work folder, pick the checkpoint to resume from and record the new session."""
    from retrieval_kd.progress import console

    output, work, key = run.output, run.work, run.key
    done = read_manifest(output) if output.exists() else None
    if done and done.get("kind") == "train" and done.get("run_key") == key:
        check_files(output, recorded_files(done), "trained model", hint="remove it and train again")
        release(work)  # left by a run killed between putting the model in place and removing it
        return True  # this exact run already finished (and its files are intact)
    if output.exists() and not restart:
        raise RkdError(f"{output} already exists (from another run); choose another output or remove it")

    claim(work, "training checkpoint", legacy=_legacy_work)  # never a folder someone else made
    if restart:
        clear(work)
    state_file = work / RUN_STATE
    state = read_json(state_file) if state_file.is_file() else None
    if state and state.get("run_key") != key:
        raise RkdError(f"{work} holds checkpoints of a different run (its configuration, examples, init "
                       "weights or number of processes differ); remove it or pass --restart")
    run.ckpt = last_checkpoint(work / CHECKPOINTS)
    start_step = int(read_json(run.ckpt / "trainer_state.json")["global_step"]) if run.ckpt else 0
    run.state = state or {"run_key": key}
    run.sessions.append({"start_step": start_step, "resumed_from": run.ckpt.name if run.ckpt else None,
                         "world_size": run.world.size})
    write_json(state_file, run.state)
    if run.ckpt:
        console.log(f"resuming from {run.ckpt.name} (step {start_step})"
                    + (f" in {run.world.size} processes" if run.world.active else ""))
    return False


def _fit(run: _Run, progress: bool, callbacks: Sequence):
    """Train (every rank): the trainer, its result and the seconds it took."""
    from retrieval_kd.progress import make_progress
    from retrieval_kd.storage import writing

    cfg, work = run.cfg, run.work
    if run.model is None:
        with run.timer("build_model"):
            run.model = _build(cfg, run.init_ref)
    extra = list(callbacks)
    prog = make_progress(rate_unit="steps") if progress else None
    if prog:
        extra.append(_progress_callback(prog, prog.add_task("training", total=None)))
    trainer = make_trainer(cfg, run.model, run.train_data, work / CHECKPOINTS, extra, run.world)
    # only the writer sizes a failed save (sizing picks the last checkpoint, which tidies)
    saving = (writing(work / CHECKPOINTS, need=lambda: _checkpoint_bytes(work)) if run.world.main
              else contextlib.nullcontext())
    t0 = time.perf_counter()
    with saving, prog or contextlib.nullcontext():
        result = trainer.train(resume_from_checkpoint=str(run.ckpt) if run.ckpt else None)
    train_s = time.perf_counter() - t0
    run.timer.timings["train"] = train_s
    return trainer, result, train_s


def _finish(run: _Run, trainer, result, train_s: float) -> Path:
    """Writer only: close the session's record, write the model and its manifest in place of the
    output (atomically) and remove the work folder."""
    from retrieval_kd.storage import writing

    cfg, output, work, world = run.cfg, run.output, run.work, run.world
    end_step = int(trainer.state.global_step)
    session = run.sessions[-1]
    examples_seen = (end_step - session["start_step"]) * cfg.batch_size * world.size
    session.update(end_step=end_step, seconds=round(train_s, 3),
                   examples_per_s=round(examples_seen / train_s, 2) if train_s > 0 else None)
    write_json(work / RUN_STATE, run.state)

    with writing(output, need=lambda: _checkpoint_bytes(work, model_only=True)), atomic_dir(output) as tmp:
        with run.timer("save"):
            trainer.model.save(str(tmp))
        record = manifest(
            "train",
            inputs={"dataset": run.inputs.ds.protocol(), "score_stores": run.inputs.stores,
                    "candidates": run.inputs.candidates,
                    **({"translated_queries": run.inputs.translated} if run.inputs.translated else {})},
            params=cfg.model_dump(mode="json"),
            timings=run.timer.timings,
            outputs={"family": cfg.family, "class": get_family(cfg.family).student_class,
                     "global_step": end_step, "epochs": round(float(trainer.state.epoch or 0), 4),
                     "train_loss": round(float(result.training_loss), 6),
                     "examples_per_s": session["examples_per_s"],
                     "trainer_metrics": {k: v for k, v in result.metrics.items()
                                         if isinstance(v, (int, float))}},
            run_key=run.key,
            init=run.init_ref.provenance(),
            examples=run.stats.as_dict(),
            distributed=world.record(cfg.batch_size),
            sessions=run.sessions,
            loss_log=_loss_log(trainer.state.log_history),
            files=file_digests(tmp),
        )
        write_json(tmp / MANIFEST, record)
    release(work)
    return output


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, RkdError) else f"{type(e).__name__}: {e}"


class RankStopped(RkdError):
    """A rank stops because another one failed (its own error line says why)."""


def _train_ranks(cfg: TrainConfig, output: Path, world: World, *, progress: bool, restart: bool,
                 callbacks: Sequence) -> Path:
    """Training in several processes; rank 0 alone writes anything.

    1. Rank 0 takes the output's lock (held to the end), reads the inputs, builds the rows, checks
       the output and claims the work folder, picks the checkpoint to resume from (tidying torn
       ones) and records the session; the others wait (a long-timeout gloo group).
    2. It tells them what it found (this run is already done / train from checkpoint-K / an
       error line). Then the others build their rows (from the caches rank 0 filled) and all
       ranks check they agree on the run key before any trains.
    3. All train (DDP); the trainer saves checkpoints from rank 0 (each rank adds its own
       ``rng_state_<rank>.pth``).
    4. Rank 0 writes the model and its manifest and removes the work folder while the others wait
       for its word; they then return the output (or fail with rank 0's error line).
    """
    from retrieval_kd.locks import output_lock

    with contextlib.ExitStack() as held:
        run = None
        if world.main:
            try:
                held.enter_context(output_lock(output, f"{output}: another process is training into this output"))
                require_replaceable(output, "training", ("train",), option="--output")
                clean_stale_temps(output)
                run = _prepare(cfg, output, world)
                word = ("done" if _open(run, restart) else "train", run.key, run.ckpt and run.ckpt.name)
            except Exception as e:
                world.broadcast(("error", _why(e), None))
                raise
            world.broadcast(word)
        else:
            word = world.broadcast()
        status, key, ckpt_name = word
        if status == "error":
            raise RankStopped(f"rank {world.rank}: stopped, rank 0 failed: {key}")
        if status == "done":
            return output

        problem, failure = None, None
        if not world.main:
            try:
                run = _prepare(cfg, output, world)
                run.ckpt = work_dir(output) / CHECKPOINTS / ckpt_name if ckpt_name else None
                if run.key != key:
                    problem = (f"rank {world.rank} built other training rows or init weights than rank 0 "
                               f"(run key {run.key}, rank 0's {key}): give every process the same inputs")
            except Exception as e:
                failure, problem = e, f"rank {world.rank}: {_why(e)}"
        problems = [p for p in world.gather(problem) if p]
        if failure is not None:
            raise failure
        if problems:
            raise RankStopped(problems[0])

        trainer, result, train_s = _fit(run, progress and world.main, callbacks)

        if world.main:
            try:
                out = _finish(run, trainer, result, train_s)
            except Exception as e:
                world.broadcast(("error", _why(e)))
                raise
            world.broadcast(("ok", None))
            return out
        status, why = world.broadcast()
        if status == "error":
            raise RankStopped(f"rank {world.rank}: rank 0 failed to write the model: {why}")
        return output


def _build(cfg: TrainConfig, init_ref):
    """The student to train, from its init weights."""
    from retrieval_kd.train.students import build_student

    model, _ = build_student(cfg.family, init_ref, max_length=cfg.max_length,
                             colbert_dim=cfg.colbert_dim, seed=cfg.seed)
    return model


def describe(output: Path) -> str:
    """One line about a finished run (for the CLI)."""
    m = read_manifest(output) or {}
    out = m.get("outputs", {})
    ex = m.get("examples", {})
    resumed = [s for s in m.get("sessions", []) if s.get("resumed_from")]
    line = (f"{out.get('class')} trained {out.get('global_step')} steps on {ex.get('rows'):,} "
            f"{ex.get('layout')} rows ({ex.get('queries'):,} queries), final loss {out.get('train_loss')}, "
            f"{out.get('examples_per_s')} examples/s")
    if resumed:
        line += f", resumed from step {resumed[-1]['start_step']}"
    return line


def dump_examples(cfg: TrainConfig, path: Path, limit: int | None = None) -> ExampleStats:
    """Write the rows a config would train on as JSON lines (inspection, other tools)."""
    from retrieval_kd.artifacts import atomic_write_text

    width = None
    if cfg.embed_teacher is not None:
        from retrieval_kd.models.resolve import resolve_model
        from retrieval_kd.train.embed import student_width

        width = student_width(_build(cfg, resolve_model(cfg.init)))
    data, stats = make_examples(cfg, load_inputs(cfg), width)
    rows = data if limit is None else data.select(range(min(limit, len(data))))
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return stats
