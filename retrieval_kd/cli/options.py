"""Typer options derived from a pydantic model: the model is the one declaration of a stage's
settings, and the command line is read off it (as Tevatron reads its arguments off dataclasses).

A command is written with only what cannot be derived::

    @model_options(TrainConfig, flags={"family": Flag("-f")}, panels={"scores": "Data"})
    def train(config: Annotated[Path | None, Opt("--config", "-c")] = None, *,
              given: dict[str, Any], restart: Annotated[bool, Opt("--restart")] = False) -> None:
        cfg = load_config(config, **given)

and gets one option per remaining field of the model:

* named ``--snake-case`` after the field (plus any names :class:`Flag` adds, e.g. ``-f``);
* typed as the field (``X | None`` as X, a ``Literal`` as text naming its choices, ``list[X]`` as a
  repeatable option, ``bool`` as ``--x/--no-x``);
* defaulting to None, "not given": the YAML config or the model's own default stands (shown as
  the default in the help);
* with the help of the field's description (its attribute docstring, ``use_attribute_docstrings``),
  first sentence, unless the :class:`Flag` gives its own.

The command receives the options given (those not None) as ``given``, keyed by field name. A
parameter of the function named like a field replaces that field's option (its own parsing, e.g.
``--rank-window LOW:HIGH``), as ``skip`` leaves a field off the command line; a field whose type
has no option is an error when the command is defined, so a new setting is never silently absent.

Old names of a field (its ``validation_alias`` choices, e.g. ``max_seq_length`` for ``max_length``)
stay accepted as hidden options; giving an old and the new name is one clear error.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from retrieval_kd.errors import RkdError
from retrieval_kd.families.lengths import old_names

SIMPLE = (bool, int, float, str, Path)


@dataclass(frozen=True)
class Flag:
    """What a command changes of one derived option: more names (a short flag), its own help or
    metavar."""

    names: tuple[str, ...] = ()
    help: str | None = None
    metavar: str | None = None

    def __init__(self, *names: str, help: str | None = None, metavar: str | None = None) -> None:
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "help", help)
        object.__setattr__(self, "metavar", metavar)


def int_pair(text: str | None, form: str, seps: str = "/") -> tuple[int, int] | None:
    """``text`` as two integers split at any of ``seps`` (None when not given); else an error that
    it must look like ``form`` (e.g. ``"--shard must look like i/n (e.g. 0/4)"``)."""
    if not text:
        return None
    try:
        a, b = (int(x) for x in re.split(f"[{re.escape(seps)}]", text))
    except ValueError:
        raise RkdError(f"{form}, got '{text}'") from None
    return a, b


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def first_sentence(text: str | None) -> str | None:
    """A description's first sentence as plain one-line help (``code`` marks dropped)."""
    if not text:
        return None
    para = " ".join(text.strip().split("\n\n")[0].split())
    m = re.search(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z(`])", para)
    return re.sub(r"``([^`]*)``", r"\1", para[:m.start() + 1] if m else para)


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    args = get_args(ann)
    if get_origin(ann) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else ann
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    return ann


def option_type(ann: Any) -> tuple[Any, str | None] | None:
    """The option's type (and metavar) for a field annotation; None: not derivable."""
    ann = _strip_optional(ann)
    if ann in SIMPLE:
        return ann, None
    if get_origin(ann) is Literal and all(isinstance(a, str) for a in get_args(ann)):
        return str, "|".join(get_args(ann))
    if get_origin(ann) is list and len(get_args(ann)) == 1:
        item = _strip_optional(get_args(ann)[0])
        if item in SIMPLE and item is not bool:
            return list[item], f"<{item.__name__.lower()}>"
    return None


def _default_text(info: FieldInfo) -> str | None:
    if info.is_required() or info.default_factory is not None:
        return None
    d = info.default
    if d is None or d == [] or d == ():
        return None
    if d == "":
        return None
    if isinstance(d, str) and not d.strip():
        return repr(d)
    if isinstance(d, (bool, int, float, str, Path)):
        return str(d).lower() if isinstance(d, bool) else str(d)
    if isinstance(d, (list, tuple)) and all(isinstance(x, (int, float, str)) for x in d):
        return ",".join(map(str, d))
    return None


def _derived(model: type[BaseModel], name: str, info: FieldInfo, flag: Flag, panel: str | None,
             ) -> inspect.Parameter:
    derived = option_type(info.annotation)
    if derived is None:
        raise TypeError(f"{model.__name__}.{name} ({info.annotation}): no command-line option derives "
                        "from its type: give the command a parameter of that name, or skip it")
    typ, metavar = derived
    decls = (f"{flag_name(name)}/--no-{name.replace('_', '-')}",) if typ is bool else (flag_name(name),)
    text = escape(flag.help or first_sentence(info.description) or "")
    default = _default_text(info)
    if default is not None:  # the model's default, shown as typer shows its own (the option's is None)
        text += f" [dim]\\[default: {escape(default)}][/dim]"
    opt = typer.Option(*decls, *flag.names, help=text, metavar=flag.metavar or metavar,
                       rich_help_panel=panel, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[typ | None, opt])


def _old_option(old: str, new: inspect.Parameter) -> inspect.Parameter:
    """A hidden option under a field's old name, of the new option's type."""
    typ = get_args(new.annotation)[0]
    opt = typer.Option(flag_name(old), hidden=True, help=f"Old name of {flag_name(new.name)}.")
    return inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[typ, opt])


def _with_panel(p: inspect.Parameter, panel: str | None) -> inspect.Parameter:
    """``p`` in ``panel`` unless its own option names a panel."""
    if panel is None or get_origin(p.annotation) is not Annotated:
        return p
    typ, *meta = get_args(p.annotation)
    out = []
    for m in meta:
        if isinstance(m, typer.models.OptionInfo) and m.rich_help_panel is None:
            m = copy(m)
            m.rich_help_panel = panel
        out.append(m)
    return p.replace(annotation=Annotated[(typ, *out)])


def model_options(model: type[BaseModel], *, flags: dict[str, Flag] | None = None, skip: tuple[str, ...] = (),
                  panels: dict[str, str] | None = None, given: str = "given"):
    """Decorate a command so that ``model``'s fields are its options (see the module docstring).

    ``flags``: per-field changes (:class:`Flag`); ``skip``: fields without an option; ``panels``:
    field -> help panel that field's option and the following fields' start (in field order).
    Parameters of the function before ``given`` come first in the help, those after it last.
    """
    flags, panels = flags or {}, panels or {}
    unknown = (set(flags) | set(skip) | set(panels)) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no field(s) {sorted(unknown)}")

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = dict(sig.parameters)
        if given not in own:
            raise TypeError(f"{fn.__name__} needs a keyword parameter '{given}'")
        names = list(own)
        replaced = {n for n in model.model_fields if n in own and n not in skip}  # placed as fields
        before = [own[n] for n in names[:names.index(given)] if n not in replaced]
        after = [own[n] for n in names[names.index(given) + 1:] if n not in replaced]
        fields, aliases, middle, panel = [], {}, [], None
        for name, info in model.model_fields.items():
            panel = panels.get(name, panel)
            if name in skip:
                continue
            if name in own:  # the command parses this one itself
                middle.append(_with_panel(own[name], panel))
                continue
            middle.append(opt := _derived(model, name, info, flags.get(name, Flag()), panel))
            fields.append(name)
            for old in old_names(name, info):
                if old in own or old in model.model_fields:
                    raise TypeError(f"{fn.__name__}: old name '{old}' of {name} is taken")
                aliases[old] = name
                middle.append(_old_option(old, opt))
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in (*before, *middle, *after)]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values: dict[str, Any] = {}
            for f in fields:
                v = kwargs.pop(f)
                if v is not None and not (isinstance(v, (list, tuple)) and not v):
                    values[f] = list(v) if isinstance(v, tuple) else v
            for old, new in aliases.items():
                v = kwargs.pop(old)
                if v is None:
                    continue
                if new in values:
                    raise RkdError(f"give {flag_name(new)} or {flag_name(old)} (its old name), not both")
                values[new] = v
            return fn(**kwargs, **{given: values})

        command.__signature__ = inspect.Signature(params, return_annotation=sig.return_annotation)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer reads the signature above, not the function's
        command.derived_fields = tuple(fields)
        return command

    return decorate


def option_group(into: str, options: dict[str, tuple[Any, Any]], *, skip: tuple[str, ...] = ()):
    """Decorate a command with options several commands share: ``options`` maps each parameter name
    to its (``Annotated`` type, default); they stand in the signature where the keyword parameter
    ``into`` does (``skip``: those this command lacks), and the command receives their values as
    the dict ``into``."""
    group = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
             for name, (ann, default) in options.items() if name not in skip]

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        params = list(sig.parameters.values())
        at = [p.name for p in params].index(into)
        params[at:at + 1] = group

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {p.name: kwargs.pop(p.name) for p in group}
            return fn(**kwargs, **{into: values})

        command.__signature__ = sig.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer reads the signature above, not the function's
        return command

    return decorate
