"""Task-aware prompt templates of the LLM teachers, and the task of a dataset.

A *task* names what relevance means for a dataset: ``qa`` (the passage answers a question),
``claim`` (the passage supports or refutes a scientific claim: SciFact, FEVER, Climate-FEVER),
``argument`` (the passage argues about the query's topic or argument: ArguAna, Touché) and
``duplicate`` (the passage asks the same question: Quora, CQADupStack). Each task has a
pointwise yes/no template (fields ``{query}``, ``{passage}``) and a listwise (RankGPT) one
(fields ``{query}``, ``{passages}``, ``{n}``). The template text used is part of the teacher
identity; a spec's ``template`` overrides the task's, its ``task`` overrides the dataset's.

A dataset's task: the ``task`` field of its registry entry (``data/datasets.yaml``), else ``qa``.
"""

from __future__ import annotations

import string

from retrieval_kd.data.registry import TASKS
from retrieval_kd.errors import DataError

POINTWISE: dict[str, str] = {
    "qa": ("Query: {query}\nPassage: {passage}\n"
           "Does the passage answer the query? Answer yes or no.\nAnswer:"),
    "claim": ("Claim: {query}\nPassage: {passage}\n"
              "Does the passage contain evidence that supports or refutes the claim? "
              "Answer yes or no.\nAnswer:"),
    "argument": ("Argument: {query}\nPassage: {passage}\n"
                 "Is the passage an argument about the same topic, for or against it? "
                 "Answer yes or no.\nAnswer:"),
    "duplicate": ("Question: {query}\nOther question: {passage}\n"
                  "Do the two ask the same thing? Answer yes or no.\nAnswer:"),
}

_LISTWISE_WHAT = {  # (what the query is, what to rank by)
    "qa": ("query", "relevance to the query"),
    "claim": ("claim", "how much evidence they give to support or refute the claim"),
    "argument": ("argument", "relevance as arguments about the same topic, for or against"),
    "duplicate": ("question", "whether they ask the same thing as the question"),
}


def _listwise(noun: str, criterion: str) -> str:
    return (f"I will provide you with {{n}} passages, each indicated by a numerical identifier []. "
            f"Rank the passages by their {criterion}.\n\n{noun.capitalize()}: {{query}}\n\n{{passages}}\n\n"
            f"{noun.capitalize()}: {{query}}\n"
            f"Rank the {{n}} passages above by their {criterion}. List all the passages by their "
            f"identifiers, most relevant first. The output format should be [] > [], e.g., "
            f"[2] > [1]. Only respond with the ranking, do not explain.")


LISTWISE: dict[str, str] = {t: _listwise(*w) for t, w in _LISTWISE_WHAT.items()}
LISTWISE_SYSTEM = ("You are RankGPT, an intelligent assistant that can rank passages based on "
                   "their relevance to a query.")

def listwise_max_new_tokens(window: int) -> int:
    """Default answer length of a listwise window: about 6 tokens per "[k] > " and a margin."""
    return 6 * window + 16


def check_task(task: str) -> str:
    if task not in TASKS:
        raise DataError("<teacher spec>", f"unknown task '{task}' (known: {', '.join(TASKS)})")
    return task


def check_fields(template: str, fields: set[str], what: str = "<template>") -> str:
    """Return ``template`` if its format fields are exactly ``fields``."""
    try:
        found = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise DataError(what, f"not a format string: {e}") from None
    if found != fields:
        want = " and ".join("{" + f + "}" for f in sorted(fields))
        raise DataError(what, f"fields must be {want}, got {sorted(found)}")
    return template


def pointwise_template(task: str | None) -> str:
    return POINTWISE[check_task(task or "qa")]


def listwise_template(task: str | None) -> str:
    return LISTWISE[check_task(task or "qa")]


def task_of(dataset: str) -> str:
    """The task of a dataset: its registry entry's ``task`` (registry name or ``name:variant``);
    ``qa`` for a folder path or a name the registry does not hold."""
    from retrieval_kd.data.registry import registry

    entry = registry().get(dataset.split(":")[0])
    return entry.task if entry is not None else "qa"


LLM_KINDS = ("llm", "llm-listwise")


def bind_task(spec, task: str):
    """``spec`` with ``task`` filled in where an LLM spec (or ensemble member) names neither a
    task nor a template; other specs unchanged."""
    kind = getattr(spec, "kind", None)
    if kind in LLM_KINDS:
        if spec.task is None and spec.template is None:
            return spec.model_copy(update={"task": task})
        return spec
    if kind == "ensemble":
        members = [m.model_copy(update={"teacher": bind_task(m.teacher, task)}) for m in spec.members]
        return spec.model_copy(update={"members": members})
    return spec


def bind_teacher(teacher, task: str):
    """Tell a built teacher (and an ensemble's members) the dataset's task; returns it."""
    use = getattr(teacher, "use_task", None)
    if use is not None:
        use(task)
    for member in getattr(teacher, "members", None) or ():
        bind_teacher(member[0] if isinstance(member, tuple) else member, task)
    return teacher


class TaskPrompt:
    """The prompt of an LLM teacher: the spec's ``template``, else its ``task``'s, else the
    dataset's (:meth:`use_task`, called by the score stage before scoring)."""

    FIELDS: frozenset[str] = frozenset({"query", "passage"})
    LISTWISE = False

    def _set_prompt(self, template: str | None, task: str | None) -> None:
        self._fixed = template is not None or task is not None
        self.task = check_task(task) if task else ("qa" if template is None else None)
        self.template = (check_fields(template, set(self.FIELDS)) if template is not None
                         else (listwise_template if self.LISTWISE else pointwise_template)(self.task))

    def use_task(self, task: str) -> None:
        """Take the dataset's task unless the spec fixed a template or a task."""
        if not self._fixed:
            self.task = check_task(task)
            self.template = (listwise_template if self.LISTWISE else pointwise_template)(task)
