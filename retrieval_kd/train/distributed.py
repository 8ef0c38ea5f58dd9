"""Training in several processes (``torchrun`` / ``accelerate launch``): which process does what.

A launcher starts N copies of ``rkd train``; each finds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT``) in its environment. :func:`world` joins
them in one process group: NCCL when CUDA is there (each process on GPU ``LOCAL_RANK``), gloo on
CPU (or with ``ACCELERATE_USE_CPU``, which ``accelerate launch --cpu`` sets). The Hugging Face
trainer that Sentence Transformers runs then trains with DistributedDataParallel in that group.

Beside it a gloo group with a long timeout carries the stage's own hand-offs: rank 0 may spend a
long time building the rows (an embed teacher encoding a corpus) while the others wait, longer
than the training group's 30 minutes. A process that dies closes its connections, so the others
fail at once rather than wait that long.

Only rank 0 writes (:func:`retrieval_kd.train.stage.train_stage` says what); the others train and
exit. One process (no launcher, or ``WORLD_SIZE=1``) is a :class:`World` of one: nothing here
imports ``torch.distributed`` then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from retrieval_kd.errors import RkdError

TRAIN_TIMEOUT = timedelta(seconds=1800)
"""The training group's collective timeout (the Hugging Face trainer's ``ddp_timeout`` default)."""
WAIT_TIMEOUT = timedelta(hours=24)
"""How long the other ranks wait for rank 0 (its rows, its final save) in the stage's hand-offs."""

_world: World | None = None


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a world of one without a launcher)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """``gloo`` or ``nccl`` (the training group's); None for one process."""
    group: Any = None
    """The gloo group of the stage's hand-offs."""

    @property
    def active(self) -> bool:
        """Several processes train together."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj``, on every rank (every rank must call it)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order, on every rank (every rank must call it)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def record(self, batch_size: int) -> dict[str, Any]:
        """What the manifest keeps of how the run was spread: the global batch is per-device x N."""
        return {"world_size": self.size, "backend": self.backend, "per_device_batch_size": batch_size,
                "global_batch_size": batch_size * self.size}


def launched_size() -> int:
    """``$WORLD_SIZE`` (1 without a launcher)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1") or 1), 1)
    except ValueError:
        raise RkdError(f"$WORLD_SIZE must be a number of processes, got {os.environ['WORLD_SIZE']!r}") from None


def is_main_process() -> bool:
    """True unless a launcher started this process as a rank other than 0 (no process group needed)."""
    return launched_size() == 1 or os.environ.get("RANK", "0") in ("", "0")


def _use_cpu() -> bool:
    import torch

    forced = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "on")
    return forced or not torch.cuda.is_available()


def world() -> World:
    """This process's :class:`World`; under a launcher the process groups are set up on first use."""
    global _world
    size = launched_size()
    if size == 1:
        return World()
    if _world is not None and _world.size == size:
        import torch.distributed as dist

        if dist.is_initialized():
            return _world
    import torch
    import torch.distributed as dist

    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RkdError(f"WORLD_SIZE={size} but {', '.join('$' + k for k in missing)} not set: start the "
                       "processes with torchrun or accelerate launch")
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank) or rank)
    if not dist.is_initialized():
        backend = "gloo" if _use_cpu() else "nccl"
        if backend == "nccl":
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group(backend=backend, timeout=TRAIN_TIMEOUT)
    backend = str(dist.get_backend())
    group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    _world = World(rank=rank, size=size, local_rank=local, backend=backend, group=group)
    return _world


def close() -> None:
    """Leave the process groups (at the end of a command; :func:`world` sets them up again)."""
    global _world
    if _world is None:
        return
    import torch.distributed as dist

    _world = None
    if dist.is_initialized():
        dist.destroy_process_group()
