"""Pipeline sections: one object per section of a pipeline file holds everything about it.

A section (``retrieve``, ``students``, ...) is a :class:`Section` that knows its entries'
schema (``entry``, a pydantic type), their reference checks (``check``, the load part),
their expansion into stages (``stages``, the plan part) and, as eval systems, where their
runs are (``ref``, ``run_stage``, ``run_splits``). The adapters of its stage kinds live in
the same module, registered with :func:`retrieval_kd.pipeline.registry.register`.

The pipeline model (:func:`retrieval_kd.pipeline.schema.pipeline_model`), the loader's
checks and the planner iterate over the registered sections in registration order, which is
also the order of stages in a plan (file order among independent stages). The built-in
sections are registered by :mod:`retrieval_kd.pipeline.kinds`; a new one is a module plus::

    register_section(MySection())   # and @register("my-kind") on its adapter
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval_kd.pipeline.load import Checks, LoadedPipeline, Problem
    from retrieval_kd.pipeline.plan import Stage


class Section:
    """A pipeline section; subclasses set the class attributes and override what they need."""

    name: str = ""
    """The key in the pipeline file (``students``): a mapping of entry name -> entry."""
    entry: Any = None
    """The pydantic type of one entry (a model, or an annotated union of models)."""
    required: bool = False
    """A pipeline needs at least one entry."""
    stage: str = ""
    """The prefix of its stage ids (``student`` in ``student:NAME``)."""
    ref: str | None = None
    """The prefix by which an eval names an entry as a system (``retrieve:NAME``); None: not one."""

    def check(self, c: Checks) -> list[Problem]:
        """The entries' broken references, each ``(line, message)`` (``c.bad`` records them)."""
        return c.problems

    def stages(self, lp: LoadedPipeline) -> list[Stage]:
        """The entries' stages, in file order (not yet sorted or keyed)."""
        return []

    def link(self, stages: list[Stage], lp: LoadedPipeline) -> list[Stage]:
        """A last pass over every stage of the plan (e.g. to add inputs); default: none."""
        return stages

    def seeds(self, p: Any, name: str) -> list[int] | None:
        """The seeds entry ``name``'s stages come in (None: one stage, unseeded)."""
        return None

    def run_stage(self, name: str, split: str, seed: int | None) -> str:
        """The id of the stage holding entry ``name``'s run on ``split`` (an eval system)."""
        from retrieval_kd.pipeline.plan import sid

        return sid(self.stage, name, split, seed)

    def run_splits(self, entry: Any) -> list[str]:
        """The splits an entry has runs on."""
        return entry.splits

    def ref_problem(self, name: str, entry: Any) -> str | None:
        """Why an entry cannot be an eval system (None when it can)."""
        return None


_SECTIONS: dict[str, Section] = {}
_STATE = {"builtins": False, "version": 0}


def _builtins() -> None:
    if not _STATE["builtins"]:
        _STATE["builtins"] = True  # first: the built-in modules register through register_section
        try:
            import retrieval_kd.pipeline.kinds  # noqa: F401 - registers the built-in sections
        except BaseException:  # e.g. an ImportError: the next call starts afresh
            _STATE["builtins"] = False
            _SECTIONS.clear()
            raise


def register_section(section: Section) -> Section:
    """Add a section after those registered (the built-in ones come first)."""
    from retrieval_kd.pipeline.schema import PipelineHead

    _builtins()
    if not section.name or section.name in _SECTIONS or section.name in PipelineHead.model_fields:
        raise ValueError(f"section name '{section.name}' is empty or taken")
    _SECTIONS[section.name] = section
    _STATE["version"] += 1
    return section


def unregister_section(name: str) -> None:
    """Remove a section (tests registering their own)."""
    if _SECTIONS.pop(name, None) is not None:
        _STATE["version"] += 1


def sections() -> list[Section]:
    """The registered sections, in order."""
    _builtins()
    return list(_SECTIONS.values())


def version() -> int:
    """Changes whenever a section is registered or removed (to rebuild the pipeline model)."""
    _builtins()
    return _STATE["version"]


def section(name: str) -> Section:
    """The registered section ``name``."""
    _builtins()
    return _SECTIONS[name]


def ref_sections() -> dict[str, Section]:
    """Eval reference prefix -> its section (``index`` -> indexes)."""
    return {s.ref: s for s in sections() if s.ref}


def entry_seeds(p: Any, name_of_section: str, name: str) -> list[int] | None:
    """The seeds an entry's stages come in (None: one stage, unseeded)."""
    return section(name_of_section).seeds(p, name)
