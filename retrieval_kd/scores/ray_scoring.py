"""Teacher scoring spread over Ray workers (``rkd score --ray``): Ray schedules, the store commits.

:class:`RayTeacher` is a :class:`~retrieval_kd.teachers.base.Teacher` whose work runs in Ray
actors, one per worker, each building the real teacher once (from a picklable factory, e.g. the
spec's :func:`~retrieval_kd.teachers.spec.build_teacher`) and preparing it with the corpus (put in
Ray's object store once). :func:`~retrieval_kd.scores.store.score_into_store` hands it the
store's pending chunks through :meth:`RayTeacher.score_chunks`; Ray's :class:`~ray.util.ActorPool`
gives each chunk to a free actor, and each chunk's scores come back to the driver, which alone
writes the chunk's part, as a one-process run does. So the store, its id, its chunks and its
resume after a kill are those of a one-process run: only where the scores are computed differs.

Faults: a worker process that dies (kill -9, out of memory) is restarted by Ray and its chunk is
run again (``max_restarts`` / ``max_task_retries``, both ``retries``); its result reaches the
driver once, so it is written once. A driver that dies leaves the parts written so far, and a
rerun scores only the missing chunks (the store's own resume); a local Ray it started dies with
it (Ray's processes share the driver's fate).

Ray is an optional dependency (extra ``scale``): importing this module does not import it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from retrieval_kd.errors import RkdError
from retrieval_kd.teachers.base import Pair, Teacher

LOCAL = "local"
"""``--ray local``: start a Ray instance on this machine (stopped when scoring ends)."""
EXTRA = "scale"
"""The package extra that installs Ray."""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """One error line when a ``HOST:PORT`` (or ``ray://HOST:PORT``) address takes no connection:
    :func:`ray.init` would otherwise retry for minutes. ``auto`` and other forms go to Ray as given."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise RkdError(f"--ray {address}: no Ray head answers there ({e.strerror or e}); start one with "
                       "'ray start --head', or use --ray local") from None


def require_ray():
    """The ``ray`` module, or one clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise RkdError(f"--ray needs Ray, which is not installed ({e}): "
                       f"pip install 'retrieval-kd[{EXTRA}]' (or pip install 'ray[default]')") from None
    return ray


class _Worker:
    """One Ray actor: builds the teacher on first use (again after a restart: a new process) and
    scores chunks. Built in a method, not the constructor, so a teacher that cannot load fails
    that call with its own error instead of killing the actor. ``corpus``: ``[ObjectRef]`` (nested,
    so Ray does not fetch it for every call) or ``[]``; the teacher is prepared with it once."""

    def __init__(self, factory: Callable[[], Teacher]) -> None:
        self.factory, self.teacher, self.prepared = factory, None, False

    def _loaded(self, corpus: list) -> Teacher:
        if self.teacher is None:
            self.teacher = self.factory()
        if corpus and not self.prepared:
            import ray

            self.teacher.prepare(ray.get(corpus[0]))
            self.prepared = True
        return self.teacher

    def ready(self, corpus: list) -> int:
        self._loaded(corpus)
        return os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def identity(self, corpus: list) -> dict[str, Any]:
        return self._loaded(corpus).identity()

    def score(self, key: Hashable, pairs: list[Pair], corpus: list) -> tuple[Hashable, np.ndarray]:
        return key, np.asarray(self._loaded(corpus).score(pairs), dtype=np.float64)

    def close(self) -> None:
        if self.teacher is not None:
            self.teacher.close()


class RayTeacher(Teacher):
    """A teacher whose copies run in ``workers`` Ray actors (see the module doc).

    ``address``: :data:`LOCAL` starts a local Ray with ``workers`` CPUs (default: this machine's
    cores); any other value is passed to :func:`ray.init` (``auto``, ``HOST:PORT``,
    ``ray://HOST:10001``), and ``workers`` defaults to the cluster's CPUs. Ray already initialised
    in this process (by the caller) is used as it is. Each actor takes ``cpus_per_worker`` CPUs
    and ``gpus_per_worker`` GPUs of Ray's resources.
    """

    def __init__(self, factory: Callable[[], Teacher], address: str = LOCAL, workers: int | None = None,
                 *, retries: int = 3, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        if workers is not None and workers < 1:
            raise RkdError(f"--ray-workers {workers}: need at least 1")
        self.ray = require_ray()
        self.factory, self.retries = factory, retries
        self.cpus, self.gpus = cpus_per_worker, gpus_per_worker
        self._started = False
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False, **(init_kwargs or {})}
            if address == LOCAL:
                kwargs.setdefault("num_cpus", math.ceil((workers or os.cpu_count() or 1) * cpus_per_worker))
            else:
                check_reachable(address)
                kwargs["address"] = address
            try:
                self.ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RkdError(f"--ray {address}: cannot start or reach Ray: {str(e).splitlines()[0]}") from None
            self._started = True
        self.workers = workers or max(int(self.ray.cluster_resources().get("CPU", 1) // cpus_per_worker), 1)
        self.actors: list = []
        self._corpus_ref = None

    def _start(self, corpus: Any) -> None:
        """Start the actors, each building the teacher and preparing it with ``corpus``; wait until
        all have (a teacher that cannot load is one error, here, before anything is scored)."""
        ray = self.ray
        self._corpus_ref = ray.put(corpus) if corpus is not None else None
        actor = ray.remote(_Worker).options(max_restarts=self.retries, max_task_retries=self.retries,
                                            num_cpus=self.cpus, num_gpus=self.gpus)
        self.actors = [actor.remote(self.factory) for _ in range(self.workers)]
        self._get([a.ready.remote(self._corpus) for a in self.actors])

    def _get(self, refs):
        with worker_errors(self.ray):
            return self.ray.get(refs)

    @property
    def _corpus(self) -> list:
        """The corpus for the workers: its reference, nested (each worker fetches it once, when it
        builds its teacher; this driver holds the reference, so a restarted worker finds it too)."""
        return [self._corpus_ref] if self._corpus_ref is not None else []

    def worker_pids(self) -> list[int]:
        """The process id of each actor (a restarted actor has a new one)."""
        return self._get([a.pid.remote() for a in self.actors])

    def prepare(self, corpus) -> None:
        self._start(corpus)

    def identity(self) -> dict[str, Any]:
        if not self.actors:
            self._start(None)
        return self._get(self.actors[0].identity.remote(self._corpus))

    def score(self, pairs: list[Pair]) -> np.ndarray:
        return next(iter(self.score_chunks([(0, pairs)])))[1]

    def score_chunks(self, chunks: Iterable[tuple[Hashable, list[Pair]]]
                     ) -> Iterator[tuple[Hashable, np.ndarray]]:
        """Each chunk to a free actor (Ray's ActorPool); ``(key, scores)`` as each finishes."""
        from ray.util import ActorPool

        if not self.actors:
            self._start(None)
        pool = ActorPool(self.actors)
        for key, pairs in chunks:  # queued here; the pool sends each to the next free actor
            pool.submit(lambda a, kp: a.score.remote(*kp, self._corpus), (key, pairs))
        while pool.has_next():
            with worker_errors(self.ray):
                done = pool.get_next_unordered()
            yield done

    def close(self) -> None:
        ray = self.ray
        try:  # let each teacher release what it holds (a server, threads), then stop the actors
            ray.get([a.close.remote() for a in self.actors], timeout=60)
        except Exception:  # noqa: BLE001 - a worker already gone has nothing left to release
            pass
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors, self._corpus_ref = [], None
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


@contextmanager
def worker_errors(ray):
    """A failure inside a worker raised as the error the worker raised when it is an
    :class:`RkdError` (a teacher that cannot load), else as one line naming it."""
    try:
        yield
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, RkdError):
            raise cause.with_traceback(None) from None
        raise RkdError(f"a Ray worker failed: {_first_line(cause or e)}") from None
    except ray.exceptions.RayError as e:  # an actor dead for good (restarts used up), a lost node
        raise RkdError(f"a Ray worker was lost: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
