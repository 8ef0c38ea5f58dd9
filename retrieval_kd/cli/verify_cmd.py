"""``rkd verify``: check artifacts against the file sizes and sha256 their records hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from retrieval_kd.progress import console

LABEL = {"ok": "ok", "damaged": "DAMAGED", "unrecorded": "no-digests"}


def verify(
    path: Annotated[Path, typer.Argument(help="An index, score store, trained model, run or stage "
                                              "folder, a fetched model, or a whole run root.")],
    quick: Annotated[bool, typer.Option(
        "--quick", help="Trust hashes already verified for files whose size, mtime, ctime and inode "
                        "are unchanged (sizes are always compared). Default: hash every file.")] = False,
) -> None:
    """Check every artifact under PATH: one line each (ok / DAMAGED / no-digests); exit 1 when
    any file is missing, truncated or changed."""
    from retrieval_kd.integrity import verify_path

    verdicts = verify_path(path, quick=quick)
    for v in verdicts:
        typer.echo(f"{LABEL[v.status]:<10}  {v.path}  [{v.kind}] {v.detail}")
    counts = {s: sum(v.status == s for v in verdicts) for s in LABEL}
    noun = "artifact" if len(verdicts) == 1 else "artifacts"
    console.print(escape(f"{len(verdicts)} {noun}: {counts['ok']} ok, {counts['damaged']} damaged, "
                         f"{counts['unrecorded']} without recorded digests"), highlight=False)
    if counts["damaged"]:
        raise typer.Exit(1)
