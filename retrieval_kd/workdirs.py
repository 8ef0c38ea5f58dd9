"""Work folders the tool owns, and only those: created with a marker, never taken from a user.

A stage that keeps resumable work (encoded chunks, checkpoints, generations) claims its work
folder with :func:`claim`: a new folder is created with a marker file (``.rkd-work``) naming
what it is for; an existing one is reused only if it carries that marker, or if it holds
nothing but what this tool writes there (a work folder from before markers: ``legacy``), and
otherwise is refused with one error line. :func:`release` removes a work folder only if it is
marked; a folder that existed empty before the tool claimed it is emptied, not removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from retrieval_kd.artifacts import now_iso, read_json, write_json
from retrieval_kd.errors import RkdError

MARKER = ".rkd-work"


class ForeignFolderError(RkdError):
    """A folder at a work path that this tool did not create."""


def owned(path: Path) -> bool:
    """True when ``path`` carries the work-folder marker."""
    return (path / MARKER).is_file()


def _mark(path: Path, purpose: str, created: bool) -> None:
    write_json(path / MARKER, {"tool": "retrieval-kd", "purpose": purpose, "created": created,
                               "by_pid": os.getpid(), "time": now_iso()})


def claim(path: str | Path, purpose: str, *, legacy: Callable[[Path], bool] | None = None,
          option: str | None = None) -> Path:
    """Create the work folder ``path`` (marked), or confirm an existing one is this tool's.

    ``purpose``: what the folder holds (recorded in the marker); ``legacy``: recognises an
    unmarked folder written by an earlier version (then it is marked and reused); ``option``:
    the command-line option that chooses this path, named in the error.
    """
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True)
        _mark(path, purpose, created=True)
        return path
    if not path.is_dir():
        raise ForeignFolderError(f"{path}: a file sits where the {purpose} work folder goes; move it away"
                                 + (f" or choose another {option}" if option else ""))
    if owned(path):
        return path
    created = _drop_marker_temps(path)  # a marker half written when a process was killed
    entries = [p for p in path.iterdir() if p.name != MARKER]
    if not entries:  # an empty folder someone made: used, kept at the end (unless it was ours)
        _mark(path, purpose, created=created)
        return path
    if legacy is not None and legacy(path):
        _mark(path, purpose, created=True)
        return path
    raise ForeignFolderError(
        f"{path}: exists and was not created by rkd (no {MARKER} marker); it is left untouched: move it "
        f"away" + (f" or choose another {option}" if option else "") + f" for the {purpose} work folder")


def _drop_marker_temps(path: Path) -> bool:
    """Remove the temporary files of a marker write cut short by a kill (``..rkd-work.tmp-*``: by
    their name, only this tool writes them); True when one of them says rkd created the folder."""
    created = False
    for p in path.glob(f".{MARKER}.tmp-*"):
        try:
            rec = read_json(p)
            created = created or (isinstance(rec, dict) and rec.get("created") is True)
        except (OSError, ValueError):
            pass
        p.unlink(missing_ok=True)
    return created


def clear(path: Path) -> None:
    """Empty an owned work folder (its marker stays)."""
    if not owned(path):
        raise ForeignFolderError(f"{path}: not an rkd work folder (no {MARKER} marker); not clearing it")
    for p in path.iterdir():
        if p.name == MARKER:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def release(path: str | Path) -> None:
    """Remove a finished work folder if this tool owns it (a folder that was there before, empty,
    is emptied and kept); an unmarked folder is never touched."""
    path = Path(path)
    if not path.is_dir() or not owned(path):
        return
    try:
        created = bool(read_json(path / MARKER).get("created", True))
    except (OSError, ValueError, AttributeError):
        created = True
    if created:  # the marker goes last: a kill part-way leaves a folder still marked as this tool's
        for p in path.iterdir():
            if p.name == MARKER:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
        (path / MARKER).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.rmdir()
    else:
        clear(path)
        (path / MARKER).unlink(missing_ok=True)


def only_names(path: Path, allowed: Callable[[str], bool]) -> bool:
    """True when every entry of ``path`` has a name ``allowed`` accepts (legacy recognisers)."""
    return all(allowed(p.name) for p in path.iterdir())


def link_copy(src: Path, dst: Path) -> None:
    """Copy the tree ``src`` to ``dst`` by hard links where the file system allows (no extra space;
    the files are never rewritten in place), leaving out hidden names such as the marker."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, ignore=lambda _d, names: [n for n in names if n.startswith(".")])


def require_replaceable(out: Path, what: str, kinds: tuple[str, ...], option: str = "--out") -> None:
    """Refuse to replace an existing ``out`` unless it is empty or an artifact of one of ``kinds``
    (its ``manifest.json`` says so): a folder that happens to sit there is never deleted."""
    from retrieval_kd.artifacts import read_manifest

    if not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    try:
        kind = (read_manifest(out) or {}).get("kind", "") if out.is_dir() else ""
    except (OSError, ValueError, AttributeError):
        kind = ""
    if not any(kind == k or kind.startswith(k + ".") for k in kinds):
        found = f"a '{kind}' artifact" if kind else "not one (no rkd manifest.json)"
        raise ForeignFolderError(f"{out}: exists and is {found}; {what} would replace it, so it is left "
                                 f"untouched: choose another {option} or move it away")


def clean_stale_temps(final: Path) -> None:
    """Remove what a killed writer of ``final`` left beside it (``atomic_dir``'s ``.NAME.tmp-*`` and
    ``.NAME.old-*``). Call it only while holding ``final``'s lock, so no live writer owns them."""
    for p in final.parent.glob(f".{final.name}.*"):
        if p.name.startswith((f".{final.name}.tmp-", f".{final.name}.old-")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
